"""The pip font packages (`fontpkg-<name>`) the offline Glyphs benchmark renders: the one list.

Pure data, no imports: fonts.py imports it, and setup.py reads it by path (runpy), since setup.py runs before the
package's dependencies are installed. Printed faces are the source domain, handwriting faces (drawn as outlines)
the target domain.
"""

PRINTED_PACKAGES = (
    "roboto",
    "roboto-slab",
    "roboto-condensed",
    "roboto-mono",
    "open-sans",
    "lato",
    "merriweather",
    "merriweather-sans",
    "noto-sans",
    "noto-serif",
    "pt-sans",
    "pt-serif",
    "source-sans-3",
    "source-serif-4",
    "source-code-pro",
    "ibm-plex-sans",
    "ibm-plex-serif",
    "ibm-plex-mono",
    "libre-baskerville",
    "libre-franklin",
)
HANDWRITING_PACKAGES = (
    "caveat",
    "dancing-script",
    "delius",
    "great-vibes",
    "indie-flower",
    "kalam",
    "permanent-marker",
    "satisfy",
    "shadows-into-light",
    "yellowtail",
    "zeyada",
)
