"""The figures and Markdown of the analyses sections (analyses.py), drawn from the report dict alone.

plots.write_figures calls `write_figures`, report_markdown.render_markdown calls `markdown`; each section is drawn
only when the report has it. Same conventions as plots.py: matplotlib's object API on the Agg canvas.
"""

import os
from typing import Any, Dict, List, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from ftcal_jax.methods import DISPLAY_NAMES

_MAX_PANELS = 4  # Runs drawn side by side (FT first); the rest are in report.json.
_MAX_ROWS = 50  # Per-class rows in report.md; the full list is in report.json.


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _fmt(v: Any, digits: int = 2) -> str:
  return "–" if v is None else f"{v:.{digits}f}"


def _nan(values: Sequence[Any]) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def _ordered(runs: Mapping[str, Any]) -> List[str]:
  return sorted(runs, key=lambda k: (k != "finetune", list(DISPLAY_NAMES).index(k) if k in DISPLAY_NAMES else 99))


def head_cosine_figure(section: Mapping[str, Any], path: str) -> str:
  """Heatmaps of the head-update cosine matrix (S then U) of up to _MAX_PANELS runs."""
  names = [n for n in _ordered(section["runs"]) if section["runs"][n]["matrix"] is not None][:_MAX_PANELS]
  if not names:
    return ""  # Only block means (more than head_geometry.MAX_MATRIX_CLASSES classes): nothing to draw.
  fig = _new_figure(4.6 * len(names) + 1.8, 4.8)
  axes = np.atleast_1d(fig.subplots(1, len(names)))
  k, num_seen = len(section["classes"]), section["num_seen"]
  for ax, name in zip(axes, names):
    run = section["runs"][name]
    image = ax.imshow(np.asarray([_nan(r) for r in run["matrix"]]), cmap="RdBu_r", vmin=-1, vmax=1,
                      interpolation="nearest")
    for x in (num_seen - 0.5,):  # The S | U boundary.
      ax.axhline(x, color="black", lw=1.2)
      ax.axvline(x, color="black", lw=1.2)
    ax.set_xticks([num_seen / 2 - 0.5, (num_seen + k) / 2 - 0.5], ["S", "U"])
    ax.set_yticks([num_seen / 2 - 0.5, (num_seen + k) / 2 - 0.5], ["S", "U"])
    ax.set_title(
        f"{DISPLAY_NAMES.get(name, name)}\nmean cos: S {_fmt(run['within_seen'])}, U "
        f"{_fmt(run['within_absent'])}, S×U {_fmt(run['across'])}", fontsize=9)
  fig.colorbar(image, ax=list(axes), shrink=0.8, label="cos(Δw_c, Δw_c')")
  fig.suptitle("Cosines of the head-weight changes Δw_c = w_c(after) − w_c(before)", fontsize=10)
  fig.savefig(path)
  return path


def logit_dynamics_figure(report: Mapping[str, Any], path: str) -> str:
  """The three mean logits of held-out U samples over training, one panel per run (FT first)."""
  names = _ordered(report["logit_dynamics"])[:_MAX_PANELS]
  fig = _new_figure(5.0 * len(names), 4.0)
  axes = np.atleast_1d(fig.subplots(1, len(names), squeeze=False)[0])
  curves = (("u_logit_gt", "ground-truth logit", "tab:green"), ("u_logit_max_other_u", "largest other-U logit",
                                                                "tab:orange"), ("u_logit_max_s", "largest S logit",
                                                                                "tab:blue"))
  for ax, name in zip(axes, names):
    hist = report["history"][name]
    for key, label, color in curves:
      ax.plot(hist["step"], _nan(hist[key]), color=color, label=label, marker=".")
    n = report["logit_dynamics"][name]["num_samples"]
    ax.set_title(f"{DISPLAY_NAMES.get(name, name)}: {n} held-out U samples", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("mean logit")
  axes[0].legend(fontsize=8)
  fig.suptitle("Logits of absent-class samples during training")
  fig.savefig(path)
  return path


def _tsne_panel(ax, coords: Sequence[Sequence[float]], labels: np.ndarray, seen: set, absent: set, title: str):
  xy = np.asarray(coords, np.float64)
  for group, color, name in ((seen, "tab:blue", "S"), (absent, "tab:red", "U")):
    keep = np.isin(labels, sorted(group))
    ax.scatter(xy[keep, 0], xy[keep, 1], s=4, c=color, alpha=0.6, label=f"{name} ({int(keep.sum())})", lw=0)
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(fontsize=8, markerscale=3)


def feature_movement_figure(report: Mapping[str, Any], path: str) -> str:
  """t-SNE of the pre-trained and FT test features (when computed) and the histogram of the movement cosines."""
  sec, split = report["feature_movement"], report["class_split"]
  tsne = sec.get("tsne")
  fig = _new_figure(15.0 if tsne else 5.5, 4.6)
  axes = np.atleast_1d(fig.subplots(1, 3 if tsne else 1))
  if tsne:
    labels = np.asarray(tsne["labels"])
    seen, absent = set(split["seen"]), set(split["absent"])
    _tsne_panel(axes[0], tsne["pretrained"], labels, seen, absent, "t-SNE, pre-trained test features")
    _tsne_panel(axes[1], tsne["finetune"], labels, seen, absent, "t-SNE, fine-tuned (FT) test features")
  ax = axes[-1]
  bins = np.linspace(-1, 1, 21)
  ax.hist(
      _nan(sec["cos_nearest"])[np.isfinite(_nan(sec["cos_nearest"]))], bins=bins, color="tab:red", alpha=0.7,
      label=f"with its nearest S class (mean {_fmt(sec['mean_cos_nearest'])})")
  ax.hist(
      _nan(sec["cos_all_seen"])[np.isfinite(_nan(sec["cos_all_seen"]))], bins=bins, histtype="step", lw=2,
      color="black", label=f"mean over all S classes (mean {_fmt(sec['mean_cos_all_seen'])})")
  ax.set_xlabel("cosine of a U class's feature movement")
  ax.set_ylabel("U classes")
  ax.set_title("Feature movement under FT: U vs S classes", fontsize=9)
  ax.legend(fontsize=8, loc="upper left")
  fig.savefig(path)
  return path


def write_figures(report: Mapping[str, Any], fig_dir: str) -> Dict[str, str]:
  """Draws every analysis figure the report has a section for; returns {figure name: PNG path}."""
  out = {}
  if report.get("head_update_cosine"):
    path = head_cosine_figure(report["head_update_cosine"], os.path.join(fig_dir, "head_update_cosine.png"))
    if path:
      out["head_update_cosine"] = path
  if report.get("logit_dynamics"):
    out["logit_dynamics"] = logit_dynamics_figure(report, os.path.join(fig_dir, "logit_dynamics.png"))
  if report.get("feature_movement"):
    out["feature_movement"] = feature_movement_figure(report, os.path.join(fig_dir, "feature_movement.png"))
  return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def _head_cosine_md(section: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  rows = [[DISPLAY_NAMES.get(k, k),
           _fmt(r["within_seen"], 3),
           _fmt(r["within_absent"], 3),
           _fmt(r["across"], 3)] for k, r in section["runs"].items()]
  out = [
      "## Cosine similarity of the head-weight changes", "",
      "Δw_c = w_c(after) − w_c(before) for every class of S and U; means over the off-diagonal pairs of each "
      "block (the whole matrix is in report.json" +
      (")." if all(r["matrix"] is not None
                   for r in section["runs"].values()) else "; with this many classes only the means are kept)."), ""
  ]
  out += _table(["model", "mean cos within S", "mean cos within U", "mean cos across S×U"], rows)
  if "head_update_cosine" in figures:
    out += [f"![head update cosine]({figures['head_update_cosine']})", ""]
  return out


def _logit_dynamics_md(section: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  arrow = lambda d: f"{_fmt(d['first'])} → {_fmt(d['last'])}"
  rows = [[
      DISPLAY_NAMES.get(k, k), r["num_samples"], f"{r['first_step']}–{r['last_step']}",
      arrow(r["u_logit_gt"]),
      arrow(r["u_logit_max_other_u"]),
      arrow(r["u_logit_max_s"]),
      _fmt(r["last_gt_minus_max_s"])
  ] for k, r in section.items()]
  out = [
      "## Logit dynamics of held-out absent-class samples", "",
      "Mean over U samples of the fine-tuning split (never trained on by these S-only runs), first → last "
      "record.", ""
  ]
  out += _table(
      ["model", "samples", "steps", "GT logit", "largest other-U logit", "largest S logit", "GT − largest S (last)"],
      rows)
  if "logit_dynamics" in figures:
    out += [f"![logit dynamics]({figures['logit_dynamics']})", ""]
  return out


def _feature_movement_md(sec: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  out = [
      "## Feature movement under fine-tuning", "",
      "m_c = mean FT test feature − mean pre-trained test feature of class c (the same network's pre-logits "
      "before and after FT, one D-dimensional space). For each U class: cos(m_u, m_s) with its nearest S class s "
      "(cosine of the pre-trained class means), and the mean of cos(m_u, m_s) over all S classes as a baseline.", "",
      f"Mean over U classes: **{_fmt(sec['mean_cos_nearest'], 3)}** with the nearest S class, "
      f"{_fmt(sec['mean_cos_all_seen'], 3)} over all S classes; with the mean S movement (the shared shift) taken "
      f"out: **{_fmt(sec.get('mean_cos_nearest_centred'), 3)}** and {_fmt(sec.get('mean_cos_all_seen_centred'), 3)}" +
      (f" (t-SNE of {len(sec['tsne']['labels'])} test samples)." if "tsne" in sec else "."), ""
  ]
  rows = list(zip(sec["absent"], sec["nearest_seen"], map(_fmt, sec["cos_nearest"]), map(_fmt, sec["cos_all_seen"])))
  out += _table(["U class", "nearest S class", "cos with nearest S", "mean cos over S"], rows[:_MAX_ROWS])
  if len(rows) > _MAX_ROWS:
    out += [f"({len(rows) - _MAX_ROWS} more U classes in report.json.)", ""]
  if "feature_movement" in figures:
    out += [f"![feature movement]({figures['feature_movement']})", ""]
  return out


def markdown(report: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  """The Markdown lines of the analyses sections the report has."""
  out = []
  if report.get("head_update_cosine"):
    out += _head_cosine_md(report["head_update_cosine"], figures)
  if report.get("logit_dynamics"):
    out += _logit_dynamics_md(report["logit_dynamics"], figures)
  if report.get("feature_movement"):
    out += _feature_movement_md(report["feature_movement"], figures)
  return out
