r"""Rebuilds the shipped checkpoint ftcal_jax/assets/glyphs_vit8_pretrained.npz.

Pre-trains ViT-glyphs/8 on the Glyphs source domain (printed fonts, all 47 classes) with configs/glyphs_pretrain.py,
then copies the result into the package's assets (the demo loads it from there and never pre-trains):

  python experiments/pretrain_glyphs.py --workdir /tmp/ftcal_pretrain [--num_epochs 6] [--no_install]

The shipped file was made with 6 epochs (1,128 steps of 128): 89.9% top-1 on held-out printed font families
(source_test) and 38.8% on the outline-handwriting target (target_test), in about 5 minutes on 2 busy CPU cores.
"""

import argparse
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET = os.path.join(REPO, "ftcal_jax", "assets", "glyphs_vit8_pretrained.npz")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
  parser.add_argument("--workdir", required=True, help="Where the pre-training job checkpoints and writes.")
  parser.add_argument("--num_epochs", type=float, default=6.0, help="Passes over source_train.")
  parser.add_argument("--no_install", action="store_true", help="Do not copy the result into ftcal_jax/assets.")
  args = parser.parse_args()
  cmd = [
      sys.executable, "-m", "ftcal_jax.main", f"--config={os.path.join(REPO, 'configs', 'glyphs_pretrain.py')}",
      f"--workdir={args.workdir}", f"--config.num_epochs={args.num_epochs}"
  ]
  print(" ".join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)
  out = os.path.join(args.workdir, "glyphs_vit8_pretrained.npz")
  if not args.no_install:
    shutil.copyfile(out, ASSET)
    print(f"Installed {out} -> {ASSET}")


if __name__ == "__main__":
  main()
