"""The run's report: every number of the paper's evaluation, from cached predictions, as JSON and Markdown.

`build_report` turns `evaluation.Predictions` (pre-trained, fine-tuned and baseline models on the target test
split, plus the training-split passes that ALG and NCM need) into one JSON-able dict:

  methods     Acc_y/y, s/y, u/y, s/s, u/u (top-1, and top-5 when C >= 10) for the pre-trained model, FT,
              FT+ALG, FT+PCV, FT+gamma*, the Oracle and any other baselines (with their ALG versions);
  gammas      ALG (per model, from its own S-only training data), PCV (mean and per split), gamma* (per model);
  ausuc       the exact AUSUC per model, and the seen-unseen curves the figure draws;
  ncm         nearest-class-mean accuracies before/after fine-tuning and the "NN vs NCM gains" (a diagnostic: the
              class means use absent-class training data);
  softmax_decomposition, head_norms, class_split, head_classes, findings.

`write_report` writes report.json, report.md and the PNG figures (plots.py). All accuracies are in %.
"""

import json
import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ftcal_jax import calibration
from ftcal_jax import metrics
from ftcal_jax import plots
from ftcal_jax.evaluation import Predictions

# Models the report knows, in table order, with their display names.
MODEL_NAMES = {
    "pretrained": "Pre-trained",
    "finetune": "FT",
    "oracle": "Oracle (S ∪ U)",
    "linear_probe": "Linear probe",
    "frozen_classifier": "Frozen classifier",
    "ldifs": "LDIFS",
    "holistic_transfer": "Holistic Transfer (variant)",
}
ACC_KEYS = ("acc_y/y", "acc_s/y", "acc_u/y", "acc_s/s", "acc_u/u")
# Models that are never calibrated: the starting point and the upper bound trained on U itself.
_UNCALIBRATED = ("pretrained", "oracle")
# "ALG/PCV recover most of gamma*'s gain" holds when they recover more than this fraction of it.
RECOVERY_THRESHOLD = 0.5
# The seen-unseen curve stored for the figure is thinned to at most this many points (AUSUC uses all of them).
MAX_CURVE_POINTS = 1001


def _floats(d: Mapping[str, Any], keys: Sequence[str]) -> Dict[str, float]:
  return {k: float(d[k]) for k in keys}


def _accuracies(logits: np.ndarray, labels: np.ndarray, absent: np.ndarray, top5: bool) -> Dict[str, Any]:
  row = {"top1": _floats(metrics.accuracies(logits, labels, absent, k=1), ACC_KEYS)}
  if top5:
    row["top5"] = _floats(metrics.accuracies(logits, labels, absent, k=5), ACC_KEYS)
  return row


def _curve(preds: Predictions, absent: np.ndarray) -> Dict[str, Any]:
  """The exact seen-unseen curve (in %), thinned for plotting, and its exact AUSUC (in [0, 1])."""
  curve = calibration.seen_unseen_curve(preds.logits, preds.labels, absent)
  area = float(calibration.ausuc(curve))
  valid = np.asarray(curve.valid, bool)
  seen = 100.0 * np.asarray(curve.acc_seen, np.float64)[valid]
  unseen = 100.0 * np.asarray(curve.acc_unseen, np.float64)[valid]
  gammas = np.asarray(curve.gammas, np.float64)[valid]
  num_points = int(seen.size)
  if num_points > MAX_CURVE_POINTS:
    # Keep both end points; the figure cannot show more points than this anyway.
    idx = np.unique(np.linspace(0, num_points - 1, MAX_CURVE_POINTS).round().astype(int))
    seen, unseen, gammas = seen[idx], unseen[idx], gammas[idx]
  return {
      "ausuc": area, "num_points": num_points, "thinned": num_points > MAX_CURVE_POINTS, "acc_seen": seen.tolist(),
      "acc_unseen": unseen.tolist(), "gammas": gammas.tolist()
  }


def _check_s_only(name: str, preds: Predictions, absent: np.ndarray):
  # ALG is defined on the S-only fine-tuning data; U samples here would mean test data leaked in.
  if absent[preds.labels].any():
    raise ValueError(f"alg_train[{name!r}] holds samples of absent classes: ALG must be estimated on the S-only "
                     "fine-tuning training data, never on test data.")


def _history_summary(hist: Mapping[str, Sequence[float]]) -> Dict[str, Any]:
  """First/last values of the head-norm history, and the mean U-update cosine."""
  out: Dict[str, Any] = {"num_records": len(hist.get("step", []))}
  if hist.get("step"):
    out["first_step"], out["last_step"] = int(hist["step"][0]), int(hist["step"][-1])
  for key in ("head_norm_seen", "head_norm_absent", "loss"):
    vals = np.asarray(hist.get(key, []), np.float64)
    if vals.size:
      out[key] = {"first": float(vals[0]), "last": float(vals[-1])}
  cos = np.asarray(hist.get("absent_update_cos", []), np.float64)
  cos = cos[np.isfinite(cos)]
  if cos.size:
    out["absent_update_cos"] = {"mean": float(cos.mean()), "last": float(cos[-1])}
  if "head_norm_seen" in out and "head_norm_absent" in out and out["head_norm_absent"]["last"] > 0:
    out["last_norm_ratio_seen_over_absent"] = out["head_norm_seen"]["last"] / out["head_norm_absent"]["last"]
  return out


def _ncm_section(test: Mapping[str, Predictions], ncm_train: Mapping[str, Predictions], methods: Mapping[str, Any],
                 absent: np.ndarray, num_classes: int) -> Dict[str, Any]:
  """NCM accuracies of the pre-trained and fine-tuned features, and the "NN vs NCM gains" (FT - pre-trained)."""
  ncm: Dict[str, Any] = {
      "diagnostic": "Diagnostic only: the NCM class means use the target training data of ALL "
                    "classes, absent classes included. It probes feature quality; it is not a "
                    "deployable method."
  }
  for key in ("pretrained", "finetune"):
    tr = ncm_train[key]
    means = metrics.ncm_class_means(tr.features, tr.labels, num_classes)
    logits = np.asarray(metrics.ncm_logits(test[key].features, means))
    ncm[key] = _floats(metrics.accuracies(logits, test[key].labels, absent, k=1), ACC_KEYS)
  # "NN" is the model's own linear head.
  nn = {k: methods[k]["top1"] for k in ("pretrained", "finetune")}
  ncm["gains"] = {
      clf: {a: src["finetune"][a] - src["pretrained"][a] for a in ("acc_y/y", "acc_s/y", "acc_u/y")}
      for clf, src in (("nn", nn), ("ncm", ncm))
  }
  return ncm


def _finding(claim: str, holds: Optional[bool], evidence: str) -> Dict[str, Any]:
  return {"claim": claim, "holds": holds, "evidence": evidence}


def _findings(report: Dict[str, Any]) -> list:
  """Checks the paper's claims against this run's numbers; each is computed, never assumed."""
  rows = report["methods"]
  top1 = {k: v["top1"] for k, v in rows.items()}
  out = []
  pre_u, ft_u = top1["pretrained"]["acc_u/y"], top1["finetune"]["acc_u/y"]
  out.append(
      _finding("FT lowers Acc_u/y below the pre-trained model", ft_u < pre_u,
               f"Acc_u/y: pre-trained {pre_u:.2f}, FT {ft_u:.2f}"))
  ncm = report.get("ncm")
  if ncm:
    a, b = ncm["pretrained"]["acc_u/y"], ncm["finetune"]["acc_u/y"]
    out.append(
        _finding("NCM Acc_u/y rises after FT (features improve for absent classes)", b > a,
                 f"NCM Acc_u/y: pre-trained {a:.2f}, FT {b:.2f}"))
  else:
    out.append(
        _finding("NCM Acc_u/y rises after FT (features improve for absent classes)", None,
                 "not evaluated: no ncm_train predictions"))
  a, b = report["ausuc"]["pretrained"], report["ausuc"]["finetune"]
  out.append(_finding("AUSUC(FT) is above AUSUC(pre-trained)", b > a, f"AUSUC: pre-trained {a:.4f}, FT {b:.4f}"))
  star = top1["finetune+gamma*"]["acc_u/y"]
  out.append(
      _finding("FT+γ* beats the pre-trained model on Acc_u/y", star > pre_u,
               f"Acc_u/y: pre-trained {pre_u:.2f}, FT+γ* {star:.2f}"))
  ft_y, star_y = top1["finetune"]["acc_y/y"], top1["finetune+gamma*"]["acc_y/y"]
  recovery = report["gammas"].get("recovery", {})
  for key, label in (("finetune+ALG", "ALG"), ("finetune+PCV", "PCV")):
    claim = f"{label} recovers most (> {RECOVERY_THRESHOLD:.0%}) of γ*'s Acc_y/y gain over FT"
    frac = recovery.get(label.lower())
    if key == "finetune+PCV" and "pcv" in report["gammas"] and key not in top1:
      out.append(_finding(claim, None, "not evaluated: no PCV pseudo-split had a curve point meeting its τ"))
    elif key not in top1:
      out.append(_finding(claim, None, f"not evaluated: no {label} γ for FT"))
    elif frac is None:
      out.append(_finding(claim, None, f"undefined: γ* gains nothing over FT (Acc_y/y {ft_y:.2f})"))
    else:
      out.append(
          _finding(
              claim, frac > RECOVERY_THRESHOLD,
              f"Acc_y/y: FT {ft_y:.2f}, FT+{label} {top1[key]['acc_y/y']:.2f}, FT+γ* {star_y:.2f}; "
              f"recovered {100 * frac:.1f}% of the gain"))
  return out


def build_report(*, class_split: Any, test: Mapping[str, Predictions], alg_train: Optional[Mapping[str,
                                                                                                   Predictions]] = None,
                 ncm_train: Optional[Mapping[str, Predictions]] = None, pcv: Optional[Mapping[str,
                                                                                              Sequence[Any]]] = None,
                 history: Optional[Mapping[str, Mapping[str, Sequence[float]]]] = None, config: Optional[Any] = None,
                 class_mask: Optional[np.ndarray] = None) -> Dict[str, Any]:
  """Computes the paper's evaluation from cached predictions.

  Args:
    class_split: a `class_split.ClassSplit` over the head's C classes.
    test: model name -> Predictions (logits (N, C)) on the target test split. 'pretrained' and 'finetune' are
      required; others among MODEL_NAMES are reported when present.
    alg_train: model name -> that model's Predictions on its own S-only fine-tuning training data (ALG).
    ncm_train: 'pretrained'/'finetune' -> Predictions on the target training data of ALL classes (NCM means).
    pcv: {'gammas': (K,), 'found': (K,) bool, 'taus': (K,)} from the PCV pseudo-split runs.
    history: model name -> {'step', 'head_norm_seen', 'head_norm_absent', 'absent_update_cos', 'loss'} lists.
    config: the run config (dict or ConfigDict), recorded in the header.
    class_mask: optional (C,) bool, True for head classes the dataset has. When given, the other head classes are
      dropped from every argmax, curve, ALG mean and NCM (the "mask" policy); None keeps all head classes.

  Returns:
    A JSON-able dict (non-finite floats become None); see the module docstring for its sections.
  """
  missing = [k for k in ("pretrained", "finetune") if k not in test]
  if missing:
    raise ValueError(f"build_report needs test predictions for {missing}; got {sorted(test)}.")
  unknown = sorted(set(test) - set(MODEL_NAMES))
  if unknown:
    raise ValueError(f"Unknown model names in test: {unknown}. Valid names: {', '.join(MODEL_NAMES)}.")
  alg_train, ncm_train, history = dict(alg_train or {}), dict(ncm_train or {}), dict(history or {})
  stray = sorted(set(alg_train) - set(test))
  if stray:
    raise ValueError(f"alg_train has {stray} but test does not; ALG calibrates a model that is scored on test.")
  num_head = int(class_split.num_classes)
  for name, preds in {**test, **alg_train, **ncm_train}.items():
    if preds.num_classes != num_head:
      raise ValueError(f"Predictions for {name!r} have {preds.num_classes} logits; the class split has "
                       f"{num_head} classes.")

  absent = np.asarray(class_split.absent_mask, bool)
  seen = np.asarray(class_split.seen_mask, bool)
  if class_mask is not None:
    class_mask = np.asarray(class_mask, bool)
    if class_mask.shape != (num_head,):
      raise ValueError(f"class_mask has shape {class_mask.shape}; the head has {num_head} classes.")
    dropped = np.flatnonzero((seen | absent) & ~class_mask).tolist()
    if dropped:
      raise ValueError(f"class_mask drops classes {dropped[:10]} that the split puts in S or U; the split must "
                       "only use classes the dataset has.")
    restrict = lambda d: {k: v.restrict_classes(class_mask) for k, v in d.items()}
    test, alg_train, ncm_train = restrict(test), restrict(alg_train), restrict(ncm_train)
    absent = absent[class_mask]
    head_policy = {
        "policy": "mask", "num_head_classes": num_head, "num_scored_classes": int(class_mask.sum()),
        "note": f"{num_head - int(class_mask.sum())} head classes the dataset lacks are excluded from "
                "every argmax (as if their logits were -inf)."
    }
  else:
    head_policy = {
        "policy": "keep", "num_head_classes": num_head, "num_scored_classes": num_head,
        "note": "All head classes compete in every argmax (the official code's choice)."
    }
  num_scored = head_policy["num_scored_classes"]
  top5 = num_scored >= 10

  labels = test["finetune"].labels
  for name, preds in test.items():
    if not np.array_equal(preds.labels, labels):
      raise ValueError(f"test[{name!r}] labels differ from test['finetune']: all models must be scored on the "
                       "same test samples in the same order.")
  is_u = absent[labels]

  report: Dict[str, Any] = {
      "config": config.to_dict() if hasattr(config, "to_dict") else (config or {}),
      "class_split": class_split.to_dict(),
      "head_classes": head_policy,
      "test_samples": {"all": int(labels.size), "seen": int((~is_u).sum()), "absent": int(is_u.sum())},
      "methods": {},
      "gammas": {"alg": {}, "oracle": {}},
      "ausuc": {},
      "curves": {},
  }
  methods, gammas = report["methods"], report["gammas"]

  def add_row(key, name, preds, base=None, calib=None, gamma=None):
    logits = preds.logits if gamma is None else np.asarray(calibration.shift_absent(preds.logits, absent, gamma))
    methods[key] = {
        "name": name, "base": base or key, "calibration": calib, "gamma": gamma,
        **_accuracies(logits, preds.labels, absent, top5)
    }

  ordered = [k for k in MODEL_NAMES if k in test]
  for key in ordered:
    preds = test[key]
    add_row(key, MODEL_NAMES[key], preds)
    report["curves"][key] = _curve(preds, absent)
    report["ausuc"][key] = report["curves"][key]["ausuc"]
    star, star_acc = calibration.oracle_gamma(preds.logits, preds.labels, absent)
    gammas["oracle"][key] = {"gamma": float(star), "acc_y/y": 100.0 * float(star_acc)}
    if key in _UNCALIBRATED:
      continue
    if key in alg_train:
      _check_s_only(key, alg_train[key], absent)
      g = float(calibration.alg_gamma(alg_train[key].logits, alg_train[key].labels, absent))
      gammas["alg"][key] = g
      add_row(f"{key}+ALG", f"{MODEL_NAMES[key]} + ALG", preds, key, "ALG", g)
    if key != "finetune":
      continue
    if pcv is not None:
      g_k = np.asarray(pcv["gammas"], np.float64)
      found = np.asarray(pcv["found"], bool)
      g = float(calibration.pcv_gamma(g_k, found))
      gammas["pcv"] = {
          "gamma": g if math.isfinite(g) else None, "per_split": g_k.tolist(), "found": found.tolist(),
          "taus": [float(t) for t in pcv.get("taus", [])]
      }
      if math.isfinite(g):
        add_row("finetune+PCV", "FT + PCV", preds, key, "PCV", g)
    add_row("finetune+gamma*", "FT + γ* (oracle γ, upper bound)", preds, key, "gamma*",
            gammas["oracle"]["finetune"]["gamma"])
  # How much of gamma*'s Acc_y/y gain over FT each deployable gamma recovers (undefined when gamma* gains nothing).
  gain = methods["finetune+gamma*"]["top1"]["acc_y/y"] - methods["finetune"]["top1"]["acc_y/y"]
  gammas["recovery"] = {
      calib.lower(): (methods[key]["top1"]["acc_y/y"] - methods["finetune"]["top1"]["acc_y/y"]) / gain
      for key, calib in (("finetune+ALG", "ALG"), ("finetune+PCV", "PCV")) if key in methods and gain > 1e-9
  }

  if "pretrained" in ncm_train and "finetune" in ncm_train:
    report["ncm"] = _ncm_section(test, ncm_train, methods, absent, num_scored)

  # Where absent samples go wrong: sent to S (low p(U|x)) or confused within U (low Acc_u/u).
  report["softmax_decomposition"] = {}
  for key in ordered:
    dec = metrics.softmax_decomposition(test[key].logits, labels, absent)
    report["softmax_decomposition"][key] = {
        "mean_p_absent_on_absent": float(dec["mean_p_absent_on_absent"]), "acc_u/u": methods[key]["top1"]["acc_u/u"]
    }

  if history:
    report["head_norms"] = {k: _history_summary(h) for k, h in history.items()}
    report["history"] = {k: {f: list(v) for f, v in h.items()} for k, h in history.items()}

  report["findings"] = _findings(report)
  return to_jsonable(report)


def to_jsonable(x: Any) -> Any:
  """Recursively converts numpy values to Python ones; NaN/inf become None so the JSON is strict."""
  if isinstance(x, Mapping):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return to_jsonable(x.tolist())
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  if x is None or isinstance(x, str):
    return x
  if hasattr(x, "to_dict"):
    return to_jsonable(x.to_dict())
  if hasattr(x, "__array__"):  # jax.Array and other array-likes
    return to_jsonable(np.asarray(x))
  return str(x)


# -- Markdown ------------------------------------------------------------------------------------------------------


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


def render_markdown(report: Mapping[str, Any], figures: Mapping[str, str]) -> str:
  """The report as Markdown; `figures` maps figure name -> path relative to the report."""
  split, heads = report["class_split"], report["head_classes"]
  out = ["# ftcal_jax report", ""]
  cfg = report.get("config") or {}
  brief = {k: cfg[k] for k in ("method", "model", "seed") if k in cfg}
  if isinstance(cfg.get("dataset"), Mapping) and "name" in cfg["dataset"]:
    brief["dataset"] = cfg["dataset"]["name"]
  if brief:
    out += ["Run: " + ", ".join(f"{k} = `{v}`" for k, v in brief.items()) + " (full config in report.json).", ""]
  n = report["test_samples"]
  out += [
      f"Classes: |S| = {len(split['seen'])} seen, |U| = {len(split['absent'])} absent, "
      f"{len(split['remaining'])} unused; split provenance: `{json.dumps(split['provenance'])}`.",
      f"Head classes: policy **{heads['policy']}**, {heads['num_scored_classes']} of "
      f"{heads['num_head_classes']} scored. {heads['note']}",
      f"Test samples: {n['all']} ({n['seen']} of S, {n['absent']} of U). Accuracies in %.", ""
  ]

  out += ["## Methods (top-1)", "", _methods_table(report, "top1"), ""]
  first = next(iter(report["methods"].values()))
  if "top5" in first:
    out += ["## Methods (top-5)", "", _methods_table(report, "top5"), ""]

  g = report["gammas"]
  out += ["## Calibration γ", ""]
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
  out += [_table(["γ", "value", "how"], [[r[0], _fmt(r[1], 4), r[2]] for r in rows]), ""]

  out += [
      "## Seen-unseen curves", "",
      _table(
          ["model", "AUSUC", "curve points"],
          [[MODEL_NAMES.get(k, k), _fmt(v, 4), report["curves"][k]["num_points"]] for k, v in report["ausuc"].items()]),
      ""
  ]
  if "seen_unseen" in figures:
    out += [f"![seen-unseen curves]({figures['seen_unseen']})", ""]

  if "ncm" in report:
    ncm = report["ncm"]
    out += ["## NN vs NCM", "", f"*{ncm['diagnostic']}*", ""]
    rows = []
    for clf, src in (("NN (linear head)", report["methods"]), ("NCM", ncm)):
      get = (lambda k: src[k]["top1"]) if clf.startswith("NN") else (lambda k: src[k])
      for key in ("pretrained", "finetune"):
        rows.append([clf, MODEL_NAMES[key]] + [get(key)[a] for a in ("acc_y/y", "acc_s/y", "acc_u/y")])
      gains = ncm["gains"]["nn" if clf.startswith("NN") else "ncm"]
      rows.append([clf, "gain (FT − pre-trained)"] + [f"{gains[a]:+.2f}" for a in ("acc_y/y", "acc_s/y", "acc_u/y")])
    out += [_table(["classifier", "features", "Acc_y/y", "Acc_s/y", "Acc_u/y"], rows), ""]
    if "nn_vs_ncm" in figures:
      out += [f"![NN vs NCM gains]({figures['nn_vs_ncm']})", ""]

  out += [
      "## Softmax decomposition on absent-class samples", "",
      "p(c|x) = p(U|x)·p(c|x, U) for c ∈ U: a low mean p(U|x) means U samples are sent to S; a low Acc_u/u "
      "means U classes are confused among themselves.", "",
      _table(["model", "mean p(U|x) on U samples", "Acc_u/u"],
             [[MODEL_NAMES.get(k, k), _fmt(v["mean_p_absent_on_absent"], 4), v["acc_u/u"]]
              for k, v in report["softmax_decomposition"].items()]), ""
  ]

  if "head_norms" in report:
    rows = []
    for k, h in report["head_norms"].items():
      s, u = h.get("head_norm_seen", {}), h.get("head_norm_absent", {})
      rows.append([
          MODEL_NAMES.get(k, k),
          h.get("last_step"),
          _fmt(s.get("first"), 3),
          _fmt(s.get("last"), 3),
          _fmt(u.get("first"), 3),
          _fmt(u.get("last"), 3),
          _fmt(h.get("absent_update_cos", {}).get("mean"), 3)
      ])
    out += [
        "## Head weight norms during training", "",
        _table(["model", "steps", "‖W_S‖ first", "‖W_S‖ last", "‖W_U‖ first", "‖W_U‖ last", "mean cos of U updates"],
               rows), ""
    ]
    if "head_norms" in figures:
      out += [f"![head weight norms]({figures['head_norms']})", ""]

  out += ["## Findings (the paper's claims, checked on this run)", ""]
  for f in report["findings"]:
    verdict = {True: "**holds**", False: "**does not hold**", None: "*not checked*"}[f["holds"]]
    out.append(f"- {f['claim']}: {verdict} ({f['evidence']}).")
  return "\n".join(out) + "\n"


def write_report(report: Mapping[str, Any], workdir: str) -> Dict[str, str]:
  """Writes report.json, report.md and figures/*.png under `workdir`; returns {name: path}."""
  os.makedirs(workdir, exist_ok=True)
  fig_dir = os.path.join(workdir, "figures")
  figures = plots.write_figures(report, fig_dir)
  rel = {k: os.path.relpath(p, workdir) for k, p in figures.items()}
  paths = {"json": os.path.join(workdir, "report.json"), "markdown": os.path.join(workdir, "report.md")}
  with open(paths["json"], "w") as f:
    json.dump(to_jsonable(report), f, indent=1, allow_nan=False)
  with open(paths["markdown"], "w") as f:
    f.write(render_markdown(report, rel))
  return {**paths, **figures}
