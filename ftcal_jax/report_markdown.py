"""The report's files: report.json, and report.md with its PNG figures (plots.py), from a report.build_report dict.

Rendering only: every number comes from the report dict, so a saved report.json can be rendered again. The
models' display names are methods.DISPLAY_NAMES.
"""

import json
import os
from typing import Any, Dict, List, Mapping, Sequence

from ftcal_jax import plots
from ftcal_jax.methods import DISPLAY_NAMES
from ftcal_jax.report import ACC_KEYS
from ftcal_jax.report import to_jsonable

_NN_KEYS = ("acc_y/y", "acc_s/y", "acc_u/y")


def _fmt(v: Any, digits: int = 2) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.{digits}f}"
  return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  cell = lambda c: _fmt(c).replace("|", "\\|")  # p(U|x) must not split a column
  lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def _methods_table(report: Mapping[str, Any], k: str) -> str:
  rows = [[m["name"], _fmt(m["gamma"], 3)] + [m[k][a] for a in ACC_KEYS] for m in report["methods"].values()]
  return _table(["method", "γ"] + [a.replace("acc_", "Acc_") for a in ACC_KEYS], rows)


def _header(report: Mapping[str, Any]) -> List[str]:
  split, heads = report["class_split"], report["head_classes"]
  out = ["# ftcal_jax report", ""]
  cfg = report.get("config") or {}
  brief = {k: cfg[k] for k in ("method", "model", "seed") if k in cfg}
  if isinstance(cfg.get("dataset"), Mapping) and "name" in cfg["dataset"]:
    brief["dataset"] = cfg["dataset"]["name"]
  if brief:
    out += ["Run: " + ", ".join(f"{k} = `{v}`" for k, v in brief.items()) + " (full config in report.json).", ""]
  n = report["test_samples"]
  return out + [
      f"Classes: |S| = {len(split['seen'])} seen, |U| = {len(split['absent'])} absent, "
      f"{len(split['remaining'])} unused; split provenance: `{json.dumps(split['provenance'])}`.",
      f"Head classes: policy **{heads['policy']}**, {heads['num_scored_classes']} of "
      f"{heads['num_head_classes']} scored. {heads['note']}",
      f"Test samples: {n['all']} ({n['seen']} of S, {n['absent']} of U). Accuracies in %.", ""
  ]


def _methods(report: Mapping[str, Any]) -> List[str]:
  out = ["## Methods (top-1)", "", _methods_table(report, "top1"), ""]
  first = next(iter(report["methods"].values()))
  if "top5" in first:
    out += ["## Methods (top-5)", "", _methods_table(report, "top5"), ""]
  return out


def _gammas(report: Mapping[str, Any]) -> List[str]:
  g = report["gammas"]
  rows = [
      [f"ALG ({k})", v, "mean non-GT S logit − mean U logit on its S-only training data"] for k, v in g["alg"].items()
  ]
  if "pcv" in g:
    p = g["pcv"]
    per = ", ".join(f"{_fmt(x, 3)}{'' if f else ' (not found)'}" for x, f in zip(p["per_split"], p["found"]))
    taus = ", ".join(_fmt(t) for t in p["taus"])
    rows.append(["PCV (finetune)", p["gamma"], f"mean over found splits; per split: {per}; τ (%): {taus}"])
  rows += [[f"γ* ({k})", v["gamma"], f"oracle on test data, Acc_y/y {v['acc_y/y']:.2f} (an upper bound)"]
           for k, v in g["oracle"].items()]
  return ["## Calibration γ", "", _table(["γ", "value", "how"], [[r[0], _fmt(r[1], 4), r[2]] for r in rows]), ""]


def _curves(report: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  rows = [[DISPLAY_NAMES.get(k, k), _fmt(v, 4), report["curves"][k]["num_points"]] for k, v in report["ausuc"].items()]
  out = ["## Seen-unseen curves", "", _table(["model", "AUSUC", "curve points"], rows), ""]
  if "seen_unseen" in figures:
    out += [f"![seen-unseen curves]({figures['seen_unseen']})", ""]
  return out


def _ncm(report: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  ncm = report["ncm"]
  out = ["## NN vs NCM", "", f"*{ncm['diagnostic']}*", ""]
  rows = []
  for clf, src in (("NN (linear head)", report["methods"]), ("NCM", ncm)):
    get = (lambda k: src[k]["top1"]) if clf.startswith("NN") else (lambda k: src[k])
    for key in ("pretrained", "finetune"):
      rows.append([clf, DISPLAY_NAMES[key]] + [get(key)[a] for a in _NN_KEYS])
    gains = ncm["gains"]["nn" if clf.startswith("NN") else "ncm"]
    rows.append([clf, "gain (FT − pre-trained)"] + [f"{gains[a]:+.2f}" for a in _NN_KEYS])
  out += [_table(["classifier", "features", "Acc_y/y", "Acc_s/y", "Acc_u/y"], rows), ""]
  if "nn_vs_ncm" in figures:
    out += [f"![NN vs NCM gains]({figures['nn_vs_ncm']})", ""]
  return out


def _softmax(report: Mapping[str, Any]) -> List[str]:
  rows = [[DISPLAY_NAMES.get(k, k), _fmt(v["mean_p_absent_on_absent"], 4), v["acc_u/u"]]
          for k, v in report["softmax_decomposition"].items()]
  return [
      "## Softmax decomposition on absent-class samples", "",
      "p(c|x) = p(U|x)·p(c|x, U) for c ∈ U: a low mean p(U|x) means U samples are sent to S; a low Acc_u/u "
      "means U classes are confused among themselves.", "",
      _table(["model", "mean p(U|x) on U samples", "Acc_u/u"], rows), ""
  ]


def _head_norms(report: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
  rows = []
  for k, h in report["head_norms"].items():
    s, u = h.get("head_norm_seen", {}), h.get("head_norm_absent", {})
    rows.append([
        DISPLAY_NAMES.get(k, k),
        h.get("last_step"),
        _fmt(s.get("first"), 3),
        _fmt(s.get("last"), 3),
        _fmt(u.get("first"), 3),
        _fmt(u.get("last"), 3),
        _fmt(h.get("absent_update_cos", {}).get("mean"), 3)
    ])
  out = [
      "## Head weight norms during training", "",
      _table(["model", "steps", "‖W_S‖ first", "‖W_S‖ last", "‖W_U‖ first", "‖W_U‖ last", "mean cos of U updates"],
             rows), ""
  ]
  if "head_norms" in figures:
    out += [f"![head weight norms]({figures['head_norms']})", ""]
  return out


def _findings(report: Mapping[str, Any]) -> List[str]:
  out = ["## Findings (the paper's claims, checked on this run)", ""]
  for f in report["findings"]:
    verdict = {True: "**holds**", False: "**does not hold**", None: "*not checked*"}[f["holds"]]
    out.append(f"- {f['claim']}: {verdict} ({f['evidence']}).")
  return out


def render_markdown(report: Mapping[str, Any], figures: Mapping[str, str]) -> str:
  """The report as Markdown; `figures` maps figure name -> path relative to the report."""
  out = _header(report) + _methods(report) + _gammas(report) + _curves(report, figures)
  if "ncm" in report:
    out += _ncm(report, figures)
  out += _softmax(report)
  if "head_norms" in report:
    out += _head_norms(report, figures)
  out += _findings(report)
  return "\n".join(out) + "\n"


def write_report(report: Mapping[str, Any], workdir: str, *, figures: bool = True) -> Dict[str, str]:
  """Writes `workdir`/report.json and, with `figures`, report.md and figures/*.png; returns {name: path}.

  Args:
    report: a report.build_report dict.
    workdir: the output directory (created if missing).
    figures: also render the Markdown and draw the figures (config.write_figures); False writes the JSON only.
  """
  os.makedirs(workdir, exist_ok=True)
  drawn = plots.write_figures(report, os.path.join(workdir, "figures")) if figures else {}
  paths = {"json": os.path.join(workdir, "report.json")}
  with open(paths["json"], "w") as f:
    json.dump(to_jsonable(report), f, indent=1, allow_nan=False)
  if figures:
    rel = {k: os.path.relpath(p, workdir) for k, p in drawn.items()}
    paths["markdown"] = os.path.join(workdir, "report.md")
    with open(paths["markdown"], "w") as f:
      f.write(render_markdown(report, rel))
  return {**paths, **drawn}
