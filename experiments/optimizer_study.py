r"""The optimiser study: AUSUC of FT for six optimisers over a learning-rate x weight-decay grid, one heatmap each.

Each grid point is experiments/ablation_optimizer.py:OPT,base=B,lr=LR,wd=WD[,epochs=E] run by train.py in
WORKDIR/OPT/lr=LR,wd=WD (a rerun reuses finished points). The learning rates are the arm's ARM_LR times each of
--lr_factors, so every optimiser is searched around its own usual rate. Writes WORKDIR/optimizer_study.json (the
AUSUC grid, the pre-trained AUSUC, seconds per point) and WORKDIR/optimizer_study.png (the heatmaps).

  python experiments/optimizer_study.py --workdir workdirs/optimizer_study                      # ImageNet-R
  python experiments/optimizer_study.py --workdir workdirs/optimizer_glyphs --base glyphs --epochs 2 \
      --lr_factors 0.1,1,10 --wds 0,5e-4                                                         # Glyphs-sized
  python experiments/optimizer_study.py --workdir /tmp/os --config configs/testing.py --optimizers sgd \
      --lr_factors 1 --wds 0                                                                      # a smoke run
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, Sequence

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
  sys.path.insert(0, _REPO)  # Run as a script: import this checkout's ftcal_jax, not an installed one.

from ftcal_jax import recipes  # pylint: disable=g-import-not-at-top,wrong-import-position

ABLATION = recipes.load_file(os.path.join(_REPO, "experiments", "ablation_optimizer.py"))


def point_config(optimizer: str, lr: float, wd: float, *, base: str, epochs: float, config_path: str = ""):
  """One grid point's config: ablation_optimizer.py's arm, or with config_path that config's FT with the arm."""
  arg = f"{optimizer},base={base},lr={lr!r},wd={wd!r}" + (f",epochs={epochs!r}" if epochs else "")
  config = ABLATION.get_config(arg)
  if config_path:  # e.g. configs/testing.py: its data and model, this arm's optimiser fields.
    other = recipes.load_file(os.path.join(_REPO, config_path)).get_config()
    other.unlock()
    other.optimizer = config.optimizer
    other.methods = ("finetune",)
    other.pcv.enabled = False
    other.lock()
    config = other
  return config


def run_grid(workdir: str, optimizers: Sequence[str], lr_factors: Sequence[float], wds: Sequence[float], *,
             base: str = "glyphs", epochs: float = 0.0, config_path: str = "", overrides=None) -> Dict[str, Any]:
  """Runs every (optimiser, lr, wd) point; returns {'grid': {opt: {'lrs', 'wds', 'ausuc' [lr][wd], 'seconds'}}}."""
  from ftcal_jax import train  # pylint: disable=g-import-not-at-top  (JAX loads only when run)
  out: Dict[str, Any] = {"base": config_path or base, "epochs": epochs, "grid": {}, "pretrained_ausuc": None}
  for opt in optimizers:
    lrs = [f * ABLATION.ARM_LR["imagenet_r" if base == "imagenet_r" else "glyphs"][opt] for f in lr_factors]
    cell = {"lrs": lrs, "wds": list(wds), "ausuc": [], "seconds": []}
    for lr in lrs:
      row, secs = [], []
      for wd in wds:
        config = point_config(opt, lr, wd, base=base, epochs=epochs, config_path=config_path)
        # The study draws its own figure; the per-point reports stay numbers. Dotted keys, e.g. 'dataset.data_dir'.
        recipes.override(config, {"write_figures": False, **(overrides or {})})
        t0 = time.time()
        try:
          rep = train.train_and_evaluate(config, os.path.join(workdir, opt, f"lr={lr:g},wd={wd:g}"))
          row.append(rep["ausuc"]["finetune"])
          out["pretrained_ausuc"] = rep["ausuc"]["pretrained"]
        except FloatingPointError as e:  # A diverged point is a blank cell, not the end of the study.
          print(f"{opt} lr={lr:g} wd={wd:g} diverged: {e}", flush=True)
          row.append(None)
        secs.append(time.time() - t0)
      cell["ausuc"].append(row)
      cell["seconds"].append(secs)
      out["grid"][opt] = cell
      _save(out, workdir)  # After every row: a partial study can be drawn (--draw_only).
  return out


def _save(study: Dict[str, Any], workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "optimizer_study.json"), "w") as f:
    json.dump(study, f, indent=1)


def draw(study: Dict[str, Any], path: str) -> None:
  """One AUSUC heatmap per optimiser (rows: learning rate, columns: weight decay), annotated, to `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  grid = study["grid"]
  values = [v for c in grid.values() for r in c["ausuc"] for v in r if v is not None] or [0.0, 1.0]
  fig, axes = plt.subplots(1, len(grid), figsize=(3.2 * len(grid) + 1, 3.0), squeeze=False, gridspec_kw={"wspace": 0.6})
  for ax, (opt, c) in zip(axes[0], grid.items()):
    a = np.asarray([[np.nan if v is None else v for v in r] for r in c["ausuc"]], float)  # NaN: diverged.
    im = ax.imshow(a, vmin=min(values), vmax=max(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(c["wds"])), [f"{w:g}" for w in c["wds"]])
    ax.set_yticks(range(len(c["lrs"])), [f"{x:g}" for x in c["lrs"]])
    ax.set_xlabel("weight decay")
    ax.set_title(opt)
    for (i, j), v in np.ndenumerate(a):
      ax.text(j, i, "NaN" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", color="w", fontsize=8)
  axes[0][0].set_ylabel("learning rate")
  pre = study.get("pretrained_ausuc")
  fig.suptitle(
      f"AUSUC of FT ({study['base']}" +
      (f", {study['epochs']:g} epoch{'' if study['epochs'] == 1 else 's'}" if study["epochs"] else "") +
      (f"; pre-trained {pre:.3f})" if pre is not None else ")"), y=1.04)
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)


def _floats(s: str):
  return [float(x) for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--base", default="glyphs", choices=ABLATION.BASES)
  parser.add_argument("--config", default="", help="Another config's data and model (e.g. configs/testing.py).")
  parser.add_argument("--optimizers", default=",".join(ABLATION.OPTIMIZERS))
  parser.add_argument("--lr_factors", default="0.1,1,10", help="Multiples of each arm's ARM_LR.")
  parser.add_argument("--wds", default="0,5e-4", help="Weight decays.")
  parser.add_argument("--epochs", type=float, default=0.0, help="0 = the base config's epochs.")
  parser.add_argument("--draw_only", action="store_true", help="Redraw WORKDIR/optimizer_study.json.")
  args = parser.parse_args(argv)
  t0 = time.time()
  if args.draw_only:
    with open(os.path.join(args.workdir, "optimizer_study.json")) as f:
      study = json.load(f)
  else:
    study = run_grid(args.workdir, [o for o in args.optimizers.split(",") if o], _floats(args.lr_factors),
                     _floats(args.wds), base=args.base, epochs=args.epochs, config_path=args.config)
    study["wall_seconds"] = time.time() - t0
    _save(study, args.workdir)
  draw(study, os.path.join(args.workdir, "optimizer_study.png"))
  print(json.dumps({k: v["ausuc"] for k, v in study["grid"].items()}), f"in {study.get('wall_seconds', 0):.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
