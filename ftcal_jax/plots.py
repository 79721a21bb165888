"""The report's figures, drawn from the report dict alone (so a saved report.json can be re-plotted).

Uses matplotlib's object API with the Agg canvas: no pyplot state, no display needed. The models' labels are
methods.DISPLAY_NAMES, the names the report's tables use.
"""

import os
from typing import Any, Dict, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ftcal_jax.methods import DISPLAY_NAMES

_COLORS = {
    "pretrained": "tab:gray", "finetune": "tab:blue", "oracle": "tab:green", "linear_probe": "tab:olive",
    "frozen_classifier": "tab:brown", "ldifs": "tab:purple", "holistic_transfer": "tab:pink"
}
# Points marked on the FT curve: method key -> (legend label, marker, colour).
_FT_POINTS = {
    "finetune": ("FT (γ = 0)", "o", "tab:blue"), "finetune+ALG": ("FT + ALG", "s", "tab:orange"),
    "finetune+PCV": ("FT + PCV", "D", "tab:red"), "finetune+gamma*": ("FT + γ*", "*", "gold")
}


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def seen_unseen_figure(report: Mapping[str, Any], path: str) -> str:
  """Acc_u/y against Acc_s/y along γ for each model, with the ALG/PCV/γ* points on the FT curve."""
  fig = _new_figure(8.5, 5.0)
  ax = fig.add_subplot()
  for key, curve in report["curves"].items():
    label = f"{DISPLAY_NAMES.get(key, key)} (AUSUC {curve['ausuc']:.3f})"
    ax.plot(curve["acc_seen"], curve["acc_unseen"], color=_COLORS.get(key), label=label,
            lw=2.2 if key == "finetune" else 1.4)
  pre = report["methods"]["pretrained"]["top1"]
  ax.plot(pre["acc_s/y"], pre["acc_u/y"], "^", color="tab:gray", ms=9, mec="black", label="Pre-trained (γ = 0)",
          ls="none")
  for key, (label, marker, color) in _FT_POINTS.items():
    row = report["methods"].get(key)
    if row is None:
      continue
    gamma = row["gamma"]
    text = label if gamma is None else f"{label}, γ = {gamma:.2f}"
    # gamma* is often the same point as ALG/PCV: draw its star larger and underneath so both stay visible.
    star = marker == "*"
    ax.plot(row["top1"]["acc_s/y"], row["top1"]["acc_u/y"], marker, color=color, ms=20 if star else 8, mec="black",
            ls="none", label=text, zorder=4 if star else 5)
  ax.set_xlabel("Acc_s/y (%): seen-class samples, argmax over all classes")
  ax.set_ylabel("Acc_u/y (%): absent-class samples, argmax over all classes")
  ax.set_xlim(-2, 102)
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.set_title("Seen-unseen accuracy curves (sweeping γ on absent-class logits)")
  # Outside the axes: calibrated points sit in the upper right, where an inside legend would hide them.
  fig.legend(fontsize=8, loc="outside right center")
  fig.savefig(path)
  return path


def nn_vs_ncm_figure(report: Mapping[str, Any], path: str) -> str:
  """Accuracies of the linear head (NN) and NCM before/after fine-tuning, and their gains."""
  ncm, methods = report["ncm"], report["methods"]
  keys = ("acc_s/y", "acc_u/y")
  values = {("NN", "pretrained"): methods["pretrained"]["top1"], ("NN", "finetune"): methods["finetune"]["top1"],
            ("NCM", "pretrained"): ncm["pretrained"], ("NCM", "finetune"): ncm["finetune"]}
  fig = _new_figure(10.0, 4.2)
  left, right = fig.subplots(1, 2)
  width = 0.2
  styles = {("NN", "pretrained"): ("tab:gray", ""), ("NN", "finetune"): ("tab:blue", ""),
            ("NCM", "pretrained"): ("tab:gray", "//"), ("NCM", "finetune"): ("tab:blue", "//")}
  for i, (k, (color, hatch)) in enumerate(styles.items()):
    xs = [j + (i - 1.5) * width for j in range(len(keys))]
    bars = left.bar(xs, [values[k][a] for a in keys], width, color=color, hatch=hatch, edgecolor="black",
                    label=f"{k[0]}, {DISPLAY_NAMES[k[1]]}")
    left.bar_label(bars, fmt="%.1f", fontsize=7)
  left.set_xticks(range(len(keys)), [a.replace("acc_", "Acc_") for a in keys])
  left.set_ylabel("accuracy (%)")
  left.set_ylim(0, 105)
  left.set_title("Accuracy before and after fine-tuning")
  left.legend(fontsize=8, loc="upper right")

  gains = ncm["gains"]
  for i, (clf, color) in enumerate((("nn", "tab:blue"), ("ncm", "tab:orange"))):
    xs = [j + (i - 0.5) * 0.35 for j in range(len(keys))]
    bars = right.bar(xs, [gains[clf][a] for a in keys], 0.35, color=color, edgecolor="black",
                     label="NN (linear head)" if clf == "nn" else "NCM (diagnostic)")
    right.bar_label(bars, fmt="%+.1f", fontsize=8)
  right.axhline(0, color="black", lw=0.8)
  right.set_xticks(range(len(keys)), [a.replace("acc_", "Acc_") for a in keys])
  right.set_ylabel("FT − pre-trained (points)")
  right.set_title("NN vs NCM gains from fine-tuning")
  right.legend(fontsize=8)
  right.margins(y=0.15)
  fig.savefig(path)
  return path


def head_norms_figure(report: Mapping[str, Any], path: str) -> str:
  """Head weight norms over S and U during training, and the cosine between U-class head updates."""
  fig = _new_figure(10.0, 4.2)
  left, right = fig.subplots(1, 2)
  drew_cos = False
  for key, hist in report["history"].items():
    steps = hist.get("step", [])
    color = _COLORS.get(key)
    name = DISPLAY_NAMES.get(key, key)
    if hist.get("head_norm_seen"):
      left.plot(steps, hist["head_norm_seen"], color=color, ls="-", label=f"{name}: ‖W_S‖")
    if hist.get("head_norm_absent"):
      left.plot(steps, hist["head_norm_absent"], color=color, ls="--", label=f"{name}: ‖W_U‖")
    cos = hist.get("absent_update_cos")
    if cos:
      drew_cos = True
      right.plot(steps[:len(cos)], [float("nan") if c is None else c for c in cos], color=color, label=name)
  left.set_xlabel("step")
  left.set_ylabel("L2 norm of head weights")
  left.set_title("Head weight norms: seen (S) vs absent (U)")
  left.legend(fontsize=7.5)
  left.grid(alpha=0.3)
  right.set_xlabel("step")
  right.set_ylabel("mean pairwise cosine")
  right.set_title("Cosine similarity of U-class head updates")
  right.set_ylim(-1.05, 1.05)
  right.axhline(0, color="black", lw=0.8)
  right.grid(alpha=0.3)
  if drew_cos:
    right.legend(fontsize=8)
  else:
    right.text(0.5, 0.5, "no U-update cosine recorded", ha="center", transform=right.transAxes)
  fig.savefig(path)
  return path


def write_figures(report: Mapping[str, Any], fig_dir: str) -> Dict[str, str]:
  """Writes every figure the report has data for; returns {figure name: PNG path}."""
  os.makedirs(fig_dir, exist_ok=True)
  out = {"seen_unseen": seen_unseen_figure(report, os.path.join(fig_dir, "seen_unseen.png"))}
  if "ncm" in report:
    out["nn_vs_ncm"] = nn_vs_ncm_figure(report, os.path.join(fig_dir, "nn_vs_ncm.png"))
  if report.get("history"):
    out["head_norms"] = head_norms_figure(report, os.path.join(fig_dir, "head_norms.png"))
  return out
