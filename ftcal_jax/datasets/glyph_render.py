"""Renders one character of one font face to a 32x32 grey image.

A glyph is first drawn large ("master" mask, white ink on black), once per
(face, character). Each sample then draws its own augmentation from a seeded
generator: thickening, rotation, scale and shift, all applied to the master
before it is reduced to 32x32. The target domain is drawn as outlines
("sketch": a 3x3 dilation minus a 3x3 erosion of the small image).

Faces come in two kinds: TrueType/OpenType files (static, or a variable font
pinned at given axis values) and Hershey stroke fonts, which are polylines.
"""

import dataclasses
import functools
import io
import zlib

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter
from PIL import ImageFont

IMAGE_SIZE = 32
# Master glyphs are drawn about this tall (pixels), ~2x the final size, so
# rotation and thickening happen before the anti-aliased reduction.
_MASTER_EM = 64
_HERSHEY_PX_PER_UNIT = 2.4
STYLES = ("filled", "outline")


@dataclasses.dataclass(frozen=True)
class Face:
  """One renderable font face.

  Attributes:
    face_id: stable, machine-independent name "<family>/<face>", e.g.
      "roboto/Roboto[wdth,wght]@wght=700" or "hershey-times/timesr".
    family: the unit that train/test font splits keep apart, e.g. "roboto".
    origin: "fontpkg", "matplotlib" or "hershey".
    path: the font file (TrueType faces only).
    axes: variable-font axis settings, ((tag, value), ...); () for static.
    hershey_name: the built-in Hershey font name (Hershey faces only).
  """
  face_id: str
  family: str
  origin: str
  path: str | None = None
  axes: tuple[tuple[str, float], ...] = ()
  hershey_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Ranges of the random per-sample augmentation.

  Attributes:
    scale: range of the longer ink side, as a fraction of the image side.
    max_rotation_deg: rotation is uniform in [-max, +max] degrees.
    max_shift: the ink box moves up to this many pixels off centre per axis.
    thicken: master-resolution max-filter sizes to choose from (1 = none).
  """
  scale: tuple[float, float] = (0.62, 0.88)
  max_rotation_deg: float = 12.0
  max_shift: int = 3
  thicken: tuple[int, ...] = (1, 1, 3, 5)


def _ink_crop(img: Image.Image) -> Image.Image:
  box = img.getbbox()
  if box is None:
    raise ValueError("The glyph rendered empty (no ink).")
  return img.crop(box)


@functools.lru_cache(maxsize=64)
def _truetype(path: str, axes: tuple[tuple[str, float], ...]):
  font = ImageFont.truetype(path, size=_MASTER_EM)
  if axes:
    # Pillow wants every axis, in the font's (fvar) order.
    values = dict(axes)
    defaults = [a["default"] for a in font.get_variation_axes()]
    font.set_variation_by_axes([values.get(tag, d) for tag, d in zip(_axis_tags(path), defaults)])
  return font


@functools.lru_cache(maxsize=64)
def _axis_tags(path: str) -> list[str]:
  from fontTools import ttLib  # pylint: disable=g-import-not-at-top
  return [a.axisTag for a in ttLib.TTFont(path, lazy=True)["fvar"].axes]


@functools.lru_cache(maxsize=32)
def _hershey_glyphs(name: str) -> dict:
  from HersheyFonts import HersheyFonts  # pylint: disable=g-import-not-at-top
  font = HersheyFonts()
  font.load_default_font(name)
  return font.all_glyphs


def hershey_has(name: str, char: str) -> bool:
  """Whether built-in Hershey font `name` draws `char` with at least one stroke."""
  glyph = _hershey_glyphs(name).get(char)
  return glyph is not None and bool(glyph.strokes)


def _master_truetype(face: Face, char: str) -> Image.Image:
  font = _truetype(face.path, face.axes)
  left, top, right, bottom = font.getbbox(char)
  pad = 4
  img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
  ImageDraw.Draw(img).text((pad - left, pad - top), char, fill=255, font=font)
  return _ink_crop(img)


def _master_hershey(face: Face, char: str) -> Image.Image:
  glyph = _hershey_glyphs(face.hershey_name).get(char)
  if glyph is None or not glyph.strokes:
    raise ValueError(f"Hershey font {face.hershey_name!r} has no glyph for {char!r}.")
  (xmin, ymin), (xmax, ymax) = glyph.draw_box
  s, pad = _HERSHEY_PX_PER_UNIT, 6
  size = (int((xmax - xmin) * s) + 2 * pad, int((ymax - ymin) * s) + 2 * pad)
  img = Image.new("L", size, 0)
  draw = ImageDraw.Draw(img)
  width = 3  # A thin pen; per-sample thickening widens it.
  for stroke in glyph.strokes:
    pts = [((x - xmin) * s + pad, (y - ymin) * s + pad) for x, y in stroke]
    draw.line(pts, fill=255, width=width, joint="curve")
    for x, y in (pts[0], pts[-1]):  # Round caps, as a pen would leave.
      r = width / 2
      draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
  return _ink_crop(img)


# Big enough for every (face, class) of the default config (~9k masks, ~30 MB),
# so the masks that the font checks draw are reused for rendering.
@functools.lru_cache(maxsize=16384)
def master_glyph(face: Face, char: str) -> np.ndarray:
  """The large, un-augmented ink mask of `char`: uint8 (H, W), cropped to ink."""
  if face.hershey_name is not None:
    img = _master_hershey(face, char)
  else:
    img = _master_truetype(face, char)
  out = np.asarray(img, dtype=np.uint8)
  out.setflags(write=False)
  return out


def sketch(image: np.ndarray) -> np.ndarray:
  """Outline of a (32, 32) uint8 image: 3x3 grey dilation minus 3x3 erosion."""
  img = Image.fromarray(image)
  dil = np.asarray(img.filter(ImageFilter.MaxFilter(3)), np.int16)
  ero = np.asarray(img.filter(ImageFilter.MinFilter(3)), np.int16)
  return (dil - ero).astype(np.uint8)


def augment(master: np.ndarray, rng: np.random.Generator, aug: Augmentation = Augmentation()) -> np.ndarray:
  """Thickens, rotates, scales and places a master mask on a 32x32 canvas.

  Args:
    master: uint8 (H, W) ink mask from `master_glyph`.
    rng: the sample's generator; the same state gives the same image.
    aug: augmentation ranges.

  Returns:
    uint8 (32, 32) image, white ink on black.
  """
  # Draw every random number first, in a fixed order, so a change in one
  # step's code path cannot shift the others.
  thicken = int(aug.thicken[rng.integers(len(aug.thicken))])
  angle = float(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
  scale = float(rng.uniform(*aug.scale))
  shift = rng.integers(-aug.max_shift, aug.max_shift + 1, size=2)

  img = Image.fromarray(master)
  if thicken > 1:
    pad = thicken // 2
    img = Image.fromarray(np.pad(master, pad)).filter(ImageFilter.MaxFilter(thicken))
  img = _ink_crop(img.rotate(angle, resample=Image.BICUBIC, expand=True))
  w, h = img.size
  longest = max(1, round(scale * IMAGE_SIZE))
  factor = longest / max(w, h)
  new_w = min(IMAGE_SIZE, max(1, round(w * factor)))
  new_h = min(IMAGE_SIZE, max(1, round(h * factor)))
  small = np.asarray(img.resize((new_w, new_h), Image.LANCZOS), np.uint8)

  canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  x0 = int(np.clip((IMAGE_SIZE - new_w) // 2 + shift[0], 0, IMAGE_SIZE - new_w))
  y0 = int(np.clip((IMAGE_SIZE - new_h) // 2 + shift[1], 0, IMAGE_SIZE - new_h))
  canvas[y0:y0 + new_h, x0:x0 + new_w] = small
  return canvas


def sample_rng(seed: int, face_id: str, char: str) -> np.random.Generator:
  """The generator of one (face, character) cell; independent of run order."""
  key = [seed, zlib.crc32(face_id.encode()), ord(char)]
  return np.random.default_rng(np.random.SeedSequence(key))


def add_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
  """`image` plus i.i.d. Gaussian pixel noise of `std` grey levels, clipped to [0, 255]: a shift every class shares."""
  noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
  return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def render_samples(face: Face, char: str, count: int, style: str, seed: int, aug: Augmentation = Augmentation(),
                   noise_std: float = 0.0) -> np.ndarray:
  """`count` augmented images of `char` in `face`.

  Args:
    face: the font face.
    char: a single character.
    count: number of samples.
    style: "filled" (source domain) or "outline" (target domain).
    seed: global seed; with (face, char) it fixes every sample.
    aug: augmentation ranges.
    noise_std: if > 0, Gaussian pixel noise of this std (grey levels) is added
      last (`add_noise`), drawn from a generator of its own so that the
      glyphs themselves are those of the noise-free rendering.

  Returns:
    uint8 (count, 32, 32); the same arguments give the same bytes.
  """
  if style not in STYLES:
    raise ValueError(f"style must be one of {STYLES}, got {style!r}.")
  rng = sample_rng(seed, face.face_id, char)
  master = master_glyph(face, char)
  noise_rng = sample_rng(seed + 1, face.face_id, char)
  out = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  for i in range(count):
    img = augment(master, rng, aug)
    img = sketch(img) if style == "outline" else img
    out[i] = add_noise(img, noise_std, noise_rng) if noise_std > 0 else img
  return out


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 (32, 32) grey image (deterministic)."""
  buf = io.BytesIO()
  Image.fromarray(image, mode="L").save(buf, format="PNG")
  return buf.getvalue()
