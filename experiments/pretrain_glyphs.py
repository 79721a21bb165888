r"""Rebuilds the shipped checkpoint ftcal_jax/assets/glyphs_vit8_pretrained.npz.

Pre-trains ViT-glyphs/8 on the Glyphs source domain (printed fonts, all 47 classes) with configs/glyphs_pretrain.py,
then copies the result into the package's assets (the demo loads it from there and never pre-trains):

  python experiments/pretrain_glyphs.py --workdir /tmp/ftcal_pretrain [--no_install]

The shipped file is this script's output with the committed config (6 epochs, 1,128 steps of 128): 89.43% top-1 on
held-out printed font families (source_test) and 37.49% on the noisy-outline target (target_test), in 95 s on 2 CPU
cores. Two rebuilds on the project's machine were equal to the bit; the script prints whether yours equals the
shipped file.
"""

import argparse
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET = os.path.join(REPO, "ftcal_jax", "assets", "glyphs_vit8_pretrained.npz")


def compare(new: str, shipped: str) -> str:
  """One line: whether the rebuilt checkpoint equals the shipped one, array by array."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not os.path.exists(shipped):
    return f"No shipped checkpoint at {shipped} to compare with."
  with np.load(new) as a, np.load(shipped) as b:
    if set(a.files) != set(b.files):
      return f"Rebuilt and shipped checkpoints hold different arrays: {sorted(set(a.files) ^ set(b.files))[:5]}"
    diffs = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a.files}
  worst = max(diffs, key=diffs.get)
  if diffs[worst] == 0:
    return f"The rebuilt checkpoint equals the shipped one bit for bit ({len(diffs)} arrays)."
  changed = sum(d > 0 for d in diffs.values())
  return (f"The rebuilt checkpoint differs from the shipped one in {changed} of {len(diffs)} arrays (largest: "
          f"{worst}, max |diff| {diffs[worst]:.3g}).")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  parser.add_argument("--workdir", required=True, help="Where the pre-training job checkpoints and writes.")
  parser.add_argument("--num_epochs", type=float, default=None,
                      help="Passes over source_train; default: the committed config's (6, the shipped file's).")
  parser.add_argument("--no_install", action="store_true", help="Do not copy the result into ftcal_jax/assets.")
  args = parser.parse_args()
  cmd = [
      sys.executable, "-m", "ftcal_jax.main", f"--config={os.path.join(REPO, 'configs', 'glyphs_pretrain.py')}",
      f"--workdir={args.workdir}"
  ] + ([f"--config.num_epochs={args.num_epochs}"] if args.num_epochs is not None else [])
  print(" ".join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)
  out = os.path.join(args.workdir, "glyphs_vit8_pretrained.npz")
  print(compare(out, ASSET), flush=True)
  if not args.no_install:
    shutil.copyfile(out, ASSET)
    print(f"Installed {out} -> {ASSET}")


if __name__ == "__main__":
  main()
