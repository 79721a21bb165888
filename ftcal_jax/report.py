"""The run's report: every number of the paper's evaluation, computed from cached predictions.

`build_report` turns `evaluation.Predictions` (pre-trained, fine-tuned and baseline models on the target test
split, plus the training-split passes that ALG and NCM need) into one JSON-able dict:

  methods     Acc_y/y, s/y, u/y, s/s, u/u (top-1, and top-5 when C >= 10) for the pre-trained model, FT,
              FT+ALG, FT+PCV, FT+gamma*, the Oracle and any other baselines (with their ALG versions);
  gammas      ALG (per model, from its own S-only training data), PCV (mean and per split), gamma* (per model);
  ausuc       the exact AUSUC per model, and the seen-unseen curves the figure draws;
  ncm         nearest-class-mean accuracies before/after fine-tuning and the "NN vs NCM gains" (a diagnostic: the
              class means use absent-class training data);
  softmax_decomposition, head_norms (training_dynamics.summarize), class_split, head_classes, findings.

Each section is one function here; this module only computes. report_markdown.write_report writes the dict as
report.json, and report.md with the PNG figures (plots.py). All accuracies are in %. The models' display names
are methods.DISPLAY_NAMES.
"""

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ftcal_jax import calibration
from ftcal_jax import metrics
from ftcal_jax import pcv as pcv_lib
from ftcal_jax import training_dynamics
from ftcal_jax.evaluation import Predictions
from ftcal_jax.methods import DISPLAY_NAMES

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


def _check_inputs(class_split: Any, test: Mapping[str, Predictions], alg_train: Mapping[str, Predictions],
                  ncm_train: Mapping[str, Predictions]) -> None:
  """Refuses missing or unknown models, ALG without a test row, and logits that do not match the split's C."""
  missing = [k for k in ("pretrained", "finetune") if k not in test]
  if missing:
    raise ValueError(f"build_report needs test predictions for {missing}; got {sorted(test)}.")
  unknown = sorted(set(test) - set(DISPLAY_NAMES))
  if unknown:
    raise ValueError(f"Unknown model names in test: {unknown}. Valid names: {', '.join(DISPLAY_NAMES)}.")
  stray = sorted(set(alg_train) - set(test))
  if stray:
    raise ValueError(f"alg_train has {stray} but test does not; ALG calibrates a model that is scored on test.")
  num_head = int(class_split.num_classes)
  for name, preds in {**test, **alg_train, **ncm_train}.items():
    if preds.num_classes != num_head:
      raise ValueError(f"Predictions for {name!r} have {preds.num_classes} logits; the class split has "
                       f"{num_head} classes.")


def _head_classes(class_split: Any, class_mask: Optional[np.ndarray]) -> Tuple[np.ndarray, Dict[str, Any]]:
  """(the U mask over the scored classes, the `head_classes` section): which head classes every argmax sees."""
  num_head = int(class_split.num_classes)
  absent = np.asarray(class_split.absent_mask, bool)
  seen = np.asarray(class_split.seen_mask, bool)
  if class_mask is None:
    return absent, {
        "policy": "keep", "num_head_classes": num_head, "num_scored_classes": num_head,
        "note": "All head classes compete in every argmax (the official code's choice)."
    }
  class_mask = np.asarray(class_mask, bool)
  if class_mask.shape != (num_head,):
    raise ValueError(f"class_mask has shape {class_mask.shape}; the head has {num_head} classes.")
  dropped = np.flatnonzero((seen | absent) & ~class_mask).tolist()
  if dropped:
    raise ValueError(f"class_mask drops classes {dropped[:10]} that the split puts in S or U; the split must "
                     "only use classes the dataset has.")
  return absent[class_mask], {
      "policy": "mask", "num_head_classes": num_head, "num_scored_classes": int(class_mask.sum()),
      "note": f"{num_head - int(class_mask.sum())} head classes the dataset lacks are excluded from "
              "every argmax (as if their logits were -inf)."
  }


def _test_labels(test: Mapping[str, Predictions]) -> np.ndarray:
  """The (N,) test labels, checked to be the same samples in the same order for every model."""
  labels = test["finetune"].labels
  for name, preds in test.items():
    if not np.array_equal(preds.labels, labels):
      raise ValueError(f"test[{name!r}] labels differ from test['finetune']: all models must be scored on the "
                       "same test samples in the same order.")
  return labels


def _row(name: str, preds: Predictions, absent: np.ndarray, top5: bool, base: str, calib: Optional[str] = None,
         gamma: Optional[float] = None) -> Dict[str, Any]:
  """One row of the methods table: the model's accuracies, its U logits shifted by gamma when given."""
  logits = preds.logits if gamma is None else np.asarray(calibration.shift_absent(preds.logits, absent, gamma))
  return {
      "name": name, "base": base, "calibration": calib, "gamma": gamma,
      **_accuracies(logits, preds.labels, absent, top5)
  }


def _pcv_gammas(pcv: Mapping[str, Sequence[Any]]) -> Dict[str, Any]:
  """The `gammas.pcv` section: the averaged γ (None when no split found one) and the per-split record."""
  g_k = np.asarray(pcv["gammas"], np.float64)
  found = np.asarray(pcv["found"], bool)
  g = pcv_lib.average(g_k, found)
  return {
      "gamma": g if math.isfinite(g) else None, "per_split": g_k.tolist(), "found": found.tolist(),
      "taus": [float(t) for t in pcv.get("taus", [])]
  }


def _score_models(test: Mapping[str, Predictions], alg_train: Mapping[str, Predictions],
                  pcv: Optional[Mapping[str, Sequence[Any]]], absent: np.ndarray, top5: bool) -> Dict[str, Any]:
  """The `methods`, `gammas`, `ausuc` and `curves` sections.

  Models come in DISPLAY_NAMES order, each followed by its calibrated rows (ALG; for FT also PCV and γ*).
  """
  out: Dict[str, Any] = {"methods": {}, "gammas": {"alg": {}, "oracle": {}}, "ausuc": {}, "curves": {}}
  rows, gammas = out["methods"], out["gammas"]
  for key in [k for k in DISPLAY_NAMES if k in test]:
    preds = test[key]
    rows[key] = _row(DISPLAY_NAMES[key], preds, absent, top5, key)
    out["curves"][key] = _curve(preds, absent)
    out["ausuc"][key] = out["curves"][key]["ausuc"]
    star, star_acc = calibration.oracle_gamma(preds.logits, preds.labels, absent)
    gammas["oracle"][key] = {"gamma": float(star), "acc_y/y": 100.0 * float(star_acc)}
    if key in _UNCALIBRATED:
      continue
    if key in alg_train:
      _check_s_only(key, alg_train[key], absent)
      g = float(calibration.alg_gamma(alg_train[key].logits, alg_train[key].labels, absent))
      gammas["alg"][key] = g
      rows[f"{key}+ALG"] = _row(f"{DISPLAY_NAMES[key]} + ALG", preds, absent, top5, key, "ALG", g)
    if key != "finetune":
      continue
    if pcv is not None:
      gammas["pcv"] = _pcv_gammas(pcv)
      if gammas["pcv"]["gamma"] is not None:
        rows["finetune+PCV"] = _row("FT + PCV", preds, absent, top5, key, "PCV", gammas["pcv"]["gamma"])
    rows["finetune+gamma*"] = _row("FT + γ* (oracle γ, upper bound)", preds, absent, top5, key, "gamma*",
                                   gammas["oracle"]["finetune"]["gamma"])
  gammas["recovery"] = _recovery(rows)
  return out


def _recovery(rows: Mapping[str, Any]) -> Dict[str, float]:
  """How much of γ*'s Acc_y/y gain over FT each deployable γ recovers (left out when γ* gains nothing)."""
  ft = rows["finetune"]["top1"]["acc_y/y"]
  gain = rows["finetune+gamma*"]["top1"]["acc_y/y"] - ft
  return {
      calib.lower(): (rows[key]["top1"]["acc_y/y"] - ft) / gain
      for key, calib in (("finetune+ALG", "ALG"), ("finetune+PCV", "PCV")) if key in rows and gain > 1e-9
  }


def _softmax_section(test: Mapping[str, Predictions], rows: Mapping[str, Any], absent: np.ndarray) -> Dict[str, Any]:
  """Where absent samples go wrong: sent to S (low mean p(U|x)) or confused within U (low Acc_u/u)."""
  out = {}
  for key in [k for k in DISPLAY_NAMES if k in test]:
    dec = metrics.softmax_decomposition(test[key].logits, test[key].labels, absent)
    out[key] = {
        "mean_p_absent_on_absent": float(dec["mean_p_absent_on_absent"]), "acc_u/u": rows[key]["top1"]["acc_u/u"]
    }
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
      required; others among methods.DISPLAY_NAMES are reported when present.
    alg_train: model name -> that model's Predictions on its own S-only fine-tuning training data (ALG).
    ncm_train: 'pretrained'/'finetune' -> Predictions on the target training data of ALL classes (NCM means).
    pcv: {'gammas': (K,), 'found': (K,) bool, 'taus': (K,)} from the PCV pseudo-split runs (pcv.run).
    history: model name -> {'step', 'head_norm_seen', 'head_norm_absent', 'absent_update_cos', 'loss'} lists.
    config: the run config (dict or ConfigDict), recorded in the header.
    class_mask: optional (C,) bool, True for head classes the dataset has. When given, the other head classes are
      dropped from every argmax, curve, ALG mean and NCM (the "mask" policy); None keeps all head classes.

  Returns:
    A JSON-able dict (non-finite floats become None); see the module docstring for its sections.
  """
  alg_train, ncm_train, history = dict(alg_train or {}), dict(ncm_train or {}), dict(history or {})
  _check_inputs(class_split, test, alg_train, ncm_train)
  absent, head_policy = _head_classes(class_split, class_mask)
  if class_mask is not None:
    restrict = lambda d: {k: v.restrict_classes(np.asarray(class_mask, bool)) for k, v in d.items()}
    test, alg_train, ncm_train = restrict(test), restrict(alg_train), restrict(ncm_train)
  num_scored = head_policy["num_scored_classes"]
  is_u = absent[_test_labels(test)]
  report: Dict[str, Any] = {
      "config": config.to_dict() if hasattr(config, "to_dict") else (config or {}),
      "class_split": class_split.to_dict(),
      "head_classes": head_policy,
      "test_samples": {"all": int(is_u.size), "seen": int((~is_u).sum()), "absent": int(is_u.sum())},
      **_score_models(test, alg_train, pcv, absent, top5=num_scored >= 10),
  }
  if "pretrained" in ncm_train and "finetune" in ncm_train:
    report["ncm"] = _ncm_section(test, ncm_train, report["methods"], absent, num_scored)
  report["softmax_decomposition"] = _softmax_section(test, report["methods"], absent)
  if history:
    report["head_norms"] = {k: training_dynamics.summarize(h) for k, h in history.items()}
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
