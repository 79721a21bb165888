"""Finds the font faces of the Glyphs benchmark in installed pip packages.

Printed faces (source domain) come from the `fontpkg-*` wheels and
matplotlib's bundled TTFs; handwriting faces (target domain) from the
handwriting `fontpkg-*` wheels and the `hershey-fonts` stroke fonts. Variable
fonts give several faces, one per chosen axis setting.

Every face must pass three checks before it is used:
  * coverage: its cmap maps all 47 classes (fontTools);
  * distinct, non-empty glyphs: placeholder fonts such as LastResort map every
    code point to the same box;
  * no small capitals: a lower case that is a shrunken upper case would make
    "a" and "A" one class.
"""

import importlib
import pathlib

import numpy as np
from PIL import Image

from ftcal_jax.datasets import font_packages
from ftcal_jax.datasets import glyph_render

# EMNIST-balanced: lower-case letters that look like their capitals are merged
# into them, leaving these 47 classes in this order.
CLASSES = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")

# The `fontpkg-*` wheels, printed (source domain) and handwriting (target domain); setup.py requires the same list.
PRINTED_PACKAGES = font_packages.PRINTED_PACKAGES
HANDWRITING_PACKAGES = font_packages.HANDWRITING_PACKAGES
# matplotlib's text faces, as families. Left out on purpose: the STIX size and
# NonUni files and DejaVu Display (no Latin glyphs), cmex10/cmsy10/cmmi10 (their
# ASCII code points hold math symbols or old-style digits) and LastResort
# (one placeholder box for every character).
MATPLOTLIB_FAMILIES = {
    "dejavu-sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"),
    "dejavu-sans-mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
                         "DejaVuSansMono-BoldOblique.ttf"),
    "dejavu-serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf"),
    "stix": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
    "computer-modern": ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf"),
}
# The 18 built-in Hershey fonts that draw all 47 classes, grouped into families
# of near-identical designs so that font-disjoint splits keep a design apart.
HERSHEY_FAMILIES = {
    "hershey-futura": ("futural", "futuram"),
    "hershey-roman": ("rowmans", "rowmand", "rowmant"),
    "hershey-times": ("timesr", "timesrb", "timesi", "timesib"),
    "hershey-script": ("scripts", "scriptc"),
    "hershey-cursive": ("cursive",),
    "hershey-gothic-english": ("gothiceng", "gothgbt"),
    "hershey-gothic-german": ("gothicger", "gothgrt"),
    "hershey-gothic-italian": ("gothicita", "gothitt"),
}
HERSHEY_NAMES = tuple(n for names in HERSHEY_FAMILIES.values() for n in names)

# Faces of static weight below this are hairlines at 32 px; variable fonts are
# pinned at these weights (clipped to the font's range) plus one narrow width.
MIN_STATIC_WEIGHT = 300
VARIABLE_WEIGHTS = (300, 400, 700)
NARROW_WIDTH = 75.0


class MissingFontError(RuntimeError):
  """A font package that the benchmark needs is not installed."""


def _pip_name(package: str) -> str:
  return f"fontpkg-{package}"


def package_font_files(package: str) -> list[pathlib.Path]:
  """The .ttf/.otf files shipped by pip package `fontpkg-<package>`.

  Raises:
    MissingFontError: the package is not installed or ships no font file.
  """
  module_name = "fontpkg_" + package.replace("-", "_")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise MissingFontError(f"Font package {_pip_name(package)!r} is not installed (no module "
                           f"{module_name!r}). Install it with `pip install "
                           f"{_pip_name(package)}`; ftcal_jax's setup.py lists every font "
                           "package the Glyphs benchmark needs.") from e
  root = pathlib.Path(getattr(module, "ROOT", pathlib.Path(module.__file__).parent))
  files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
  if not files:
    raise MissingFontError(f"{_pip_name(package)!r} is installed at {root} but ships no .ttf/.otf "
                           f"file; reinstall it with `pip install --force-reinstall "
                           f"{_pip_name(package)}`.")
  return files


def matplotlib_font_files(family: str) -> list[pathlib.Path]:
  """The files of one family in `MATPLOTLIB_FAMILIES` (matplotlib's TTF dir)."""
  if family not in MATPLOTLIB_FAMILIES:
    raise ValueError(f"Unknown matplotlib family {family!r}; valid: "
                     f"{sorted(MATPLOTLIB_FAMILIES)}.")
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MissingFontError("matplotlib is not installed; `pip install "
                           "matplotlib` (its bundled TTFs are source faces).") from e
  root = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
  files = [root / name for name in MATPLOTLIB_FAMILIES[family]]
  missing = [str(p) for p in files if not p.exists()]
  if missing:
    raise MissingFontError(f"matplotlib ships no {missing}; reinstall it with "
                           "`pip install --force-reinstall matplotlib`.")
  return files


def _open(path: pathlib.Path):
  from fontTools import ttLib  # pylint: disable=g-import-not-at-top
  return ttLib.TTFont(str(path), lazy=True)


def covers_classes(path: pathlib.Path, classes=CLASSES) -> bool:
  """Whether the font's Unicode cmap maps every character in `classes`."""
  cmap = _open(path).getBestCmap() or {}
  return all(ord(c) in cmap for c in classes)


def truetype_faces(path: pathlib.Path, family: str, origin: str) -> list[glyph_render.Face]:
  """Faces of one font file: one if static, several if variable.

  Static files lighter than `MIN_STATIC_WEIGHT` give none. Variable files give
  one face per weight in `VARIABLE_WEIGHTS` (clipped to the font's range),
  plus a narrow face at weight 400 when the font has a width axis.
  """
  font = _open(path)
  stem = f"{family}/{path.stem}"
  if "fvar" not in font:
    if font["OS/2"].usWeightClass < MIN_STATIC_WEIGHT:
      return []
    return [glyph_render.Face(stem, family, origin, str(path))]
  axes = {a.axisTag: a for a in font["fvar"].axes}
  settings = []
  wght = axes.get("wght")
  for w in VARIABLE_WEIGHTS if wght else ():
    w = float(np.clip(w, wght.minValue, wght.maxValue))
    if (("wght", w),) not in settings:
      settings.append((("wght", w),))
  if not settings:
    settings.append(())
  wdth = axes.get("wdth")
  if wdth is not None and wdth.minValue < 100:
    narrow = max(wdth.minValue, NARROW_WIDTH)
    wght_400 = float(np.clip(400, wght.minValue, wght.maxValue)) if wght else None
    settings.append(((("wght", wght_400),) if wght else ()) + (("wdth", narrow),))
  faces = []
  for s in settings:
    tag = ",".join(f"{k}={v:g}" for k, v in s)
    faces.append(glyph_render.Face(f"{stem}@{tag}" if tag else stem, family, origin, str(path), s))
  return faces


def looks_like_small_caps(upper: np.ndarray, lower: np.ndarray, threshold: float = 0.9) -> bool:
  """Whether a lower-case mask is a shrunken copy of the upper-case one.

  Both masks are scaled to the same 24x24 box and compared by correlation; a
  true lower case ("a" vs "A") differs in shape, a small capital only in size.

  Args:
    upper: uint8 (H, W) ink mask of the capital, e.g. "A".
    lower: uint8 (H', W') ink mask of the lower case, e.g. "a".
    threshold: correlation above which the two count as the same shape.
  """

  def norm(m):
    v = np.asarray(Image.fromarray(m).resize((24, 24), Image.BILINEAR), np.float64)
    v = v - v.mean()
    return v / (np.linalg.norm(v) + 1e-9)

  return float(np.sum(norm(upper) * norm(lower))) > threshold


def check_face(face: glyph_render.Face, classes=CLASSES) -> str | None:
  """Why `face` is unusable (a sentence), or None if it passes the checks."""
  if face.path is not None and not covers_classes(pathlib.Path(face.path), classes):
    return "its cmap lacks some of the 47 classes"
  if face.hershey_name is not None and not all(glyph_render.hershey_has(face.hershey_name, c) for c in classes):
    return "it lacks strokes for some of the 47 classes"
  try:
    masks = {c: glyph_render.master_glyph(face, c) for c in classes}
  except ValueError as e:
    return f"a glyph rendered empty ({e})"
  keys = {(m.shape, m.tobytes()) for m in masks.values()}
  if len(keys) < len(classes):
    return "some classes render to identical images (placeholder glyphs)"
  pairs = [("A", "a"), ("B", "b"), ("E", "e"), ("R", "r")]
  if all(looks_like_small_caps(masks[u], masks[l]) for u, l in pairs if u in masks and l in masks):
    return "its lower case is small capitals"
  return None


def _keep_usable(faces, classes, dropped):
  kept = []
  for face in faces:
    reason = check_face(face, classes)
    if reason is None:
      kept.append(face)
    elif dropped is not None:
      dropped[face.face_id] = reason
  return kept


def printed_faces(packages=PRINTED_PACKAGES, matplotlib_families=tuple(MATPLOTLIB_FAMILIES), classes=CLASSES,
                  dropped: dict | None = None) -> list[glyph_render.Face]:
  """Usable printed faces of the given packages and matplotlib families.

  Args:
    packages: `fontpkg-*` names without the prefix, e.g. "roboto".
    matplotlib_families: keys of `MATPLOTLIB_FAMILIES`.
    classes: characters every face must draw.
    dropped: if given, filled with {face_id: reason} for rejected faces.

  Raises:
    MissingFontError: a requested package is not installed.
  """
  faces = []
  for package in packages:
    for path in package_font_files(package):
      faces += truetype_faces(path, package, "fontpkg")
  for family in matplotlib_families:
    for path in matplotlib_font_files(family):
      faces += truetype_faces(path, family, "matplotlib")
  return _keep_usable(faces, classes, dropped)


def hershey_faces(names) -> list[glyph_render.Face]:
  """Faces of built-in Hershey fonts, e.g. ("timesr", "scripts")."""
  try:
    from HersheyFonts import HersheyFonts  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise MissingFontError("The Hershey stroke fonts are not installed; "
                           "`pip install hershey-fonts`.") from e
  available = set(HersheyFonts().default_font_names)
  family_of = {n: f for f, ns in HERSHEY_FAMILIES.items() for n in ns}
  faces = []
  for name in names:
    if name not in available:
      raise MissingFontError(f"hershey-fonts has no built-in font {name!r}; "
                             f"it has {sorted(available)}.")
    family = family_of.get(name, f"hershey-{name}")
    faces.append(glyph_render.Face(f"{family}/{name}", family, "hershey", hershey_name=name))
  return faces


def handwriting_faces(packages=HANDWRITING_PACKAGES, hershey_names=HERSHEY_NAMES, classes=CLASSES,
                      dropped: dict | None = None) -> list[glyph_render.Face]:
  """Usable handwriting faces: `fontpkg-*` handwriting wheels plus Hershey fonts.

  Args:
    packages: handwriting `fontpkg-*` names without the prefix.
    hershey_names: built-in Hershey font names.
    classes: characters every face must draw.
    dropped: if given, filled with {face_id: reason} for rejected faces.

  Raises:
    MissingFontError: a requested package or Hershey font is missing.
  """
  faces = []
  for package in packages:
    for path in package_font_files(package):
      faces += truetype_faces(path, package, "fontpkg")
  faces += hershey_faces(hershey_names)
  return _keep_usable(faces, classes, dropped)
