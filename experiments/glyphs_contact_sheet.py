r"""Writes a contact sheet of Glyphs samples: printed source vs outlined target.

One column per class (the 47 EMNIST-balanced characters); the top rows are
source_train images (printed faces, filled), the bottom rows target_train
images (every face drawn as outlines under pixel noise). Builds the dataset if needed.

  python experiments/glyphs_contact_sheet.py \
      --config=default --out=docs/glyphs_contact_sheet.png
"""

import pathlib

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from ftcal_jax.datasets import fonts
from ftcal_jax.datasets import glyphs

_CONFIG = flags.DEFINE_string("config", "default", "Glyphs builder config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's).")
_OUT = flags.DEFINE_string("out", "docs/glyphs_contact_sheet.png", "PNG to write.")
_ROWS = flags.DEFINE_integer("rows", 4, "Samples per class and domain.")
_SEED = flags.DEFINE_integer("seed", 0, "Which samples to show.")

_CELL = 32
_GAP = 2
_LEFT = 86  # Room for the row labels.
_TOP = 16  # Room for the class labels.


def _pick(images, labels, rows, rng):
  """uint8 (rows, 47, 32, 32): `rows` random images of every class."""
  out = np.zeros((rows, len(fonts.CLASSES), _CELL, _CELL), np.uint8)
  for c in range(len(fonts.CLASSES)):
    idx = rng.choice(np.flatnonzero(labels == c), size=rows, replace=False)
    out[:, c] = images[idx, ..., 0]
  return out


def contact_sheet(source: np.ndarray, target: np.ndarray) -> Image.Image:
  """Lays out (rows, 47, 32, 32) source and target grids with labels."""
  rows, n_cls = source.shape[:2]
  step = _CELL + _GAP
  band = rows * step
  sep = 10
  width = _LEFT + n_cls * step
  height = _TOP + 2 * band + sep
  sheet = Image.new("L", (width, height), 255)
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.truetype(str(fonts.matplotlib_font_files("dejavu-sans")[0]), 11)
  for c, char in enumerate(fonts.CLASSES):
    draw.text((_LEFT + c * step + _CELL // 2, _TOP // 2), char, fill=0, font=font, anchor="mm")
  for b, (grid, name) in enumerate(((source, "source\nprinted"), (target, "target\nnoisy\noutlines"))):
    y0 = _TOP + b * (band + sep)
    draw.multiline_text((4, y0 + band // 2), name, fill=0, font=font, anchor="lm")
    for r in range(rows):
      for c in range(n_cls):
        # White ink on black, as the model sees it.
        sheet.paste(Image.fromarray(grid[r, c]), (_LEFT + c * step, y0 + r * step))
  return sheet


def main(argv):
  del argv
  rng = np.random.default_rng(_SEED.value)
  grids = []
  for split in ("source_train", "target_train"):
    images, labels = glyphs.load_glyphs_arrays(split, _CONFIG.value, _DATA_DIR.value)
    grids.append(_pick(images, labels, _ROWS.value, rng))
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  contact_sheet(*grids).save(out, optimize=True)
  print(f"Wrote {out} ({out.stat().st_size / 1024:.0f} KiB).")


if __name__ == "__main__":
  app.run(main)
