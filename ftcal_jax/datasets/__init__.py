"""Datasets of ftcal_jax: the interface (base.py), its two sources and the benchmarks' builders.

  base.py          the `Dataset` protocol every source implements, and the split-name convention
  array_source.py  `ArrayDataset`: uint8 arrays in memory (Glyphs, tests)
  tfds_source.py   `TfdsDataset`: the paper's benchmarks through tf.data
  registry.py      `get_dataset(config.dataset)`: a dataset by name
  glyphs.py, glyph_render.py, fonts.py, font_packages.py   the offline Glyphs benchmark
  imagenet_variants.py, office_home.py                     ImageNet-R/-Sketch label maps, the Office-Home builder

Importing the package loads neither TFDS nor the fonts. Importing `ftcal_jax.datasets.glyphs` (which building a
Glyphs dataset does) registers the "glyphs" TFDS builder; `ftcal_jax.datasets.Glyphs` and its siblings below still
resolve, on first use.
"""

_GLYPHS_NAMES = ("Glyphs", "GlyphsConfig", "load_glyphs_arrays")


def __getattr__(name: str):
  if name in _GLYPHS_NAMES:
    from ftcal_jax.datasets import glyphs  # pylint: disable=g-import-not-at-top  (imports TFDS)
    return getattr(glyphs, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
