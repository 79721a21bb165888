"""The paper's findings as statistics: margins with paired-bootstrap 95% intervals over test samples.

Every finding compares two models on the same test samples ("Findings" in shared/paper.md):

  collapse            Acc_u/y(FT) − Acc_u/y(pre-trained), claimed < 0 (points);
  ncm_features        NCM Acc_u/y with FT features − with pre-trained features, claimed > 0 (points);
  ausuc               AUSUC(FT) − AUSUC(pre-trained), claimed > 0 (AUSUC in [0, 1]);
  dominance_at_seen   at the pre-trained Acc_s/y, the most Acc_u/y that FT + γ reaches, minus the pre-trained
                      Acc_u/y, claimed > 0 (points);
  dominance_at_unseen at the pre-trained Acc_u/y, the most Acc_s/y that FT + γ reaches, minus the pre-trained
                      Acc_s/y, claimed > 0 (points);
  recovery_<rule>     (Acc(FT + γ̂) − Acc(FT)) / (Acc(FT + γ*) − Acc(FT)) on Acc_y/y, claimed > 0.5.

The bootstrap is paired: replicate b draws N test indices with replacement once, and every model (and both ends of
every difference) is scored on that same resample. It is stratified by the label's group: the n_S samples of S
classes and the n_U of U classes are resampled separately, so every resample keeps the test set's n_S and n_U (the
class split fixes them) and Acc_s/y, Acc_u/y are defined on every resample, even for tiny test sets. A resample is
a (B, N) matrix of multiplicities w_bi, so each accuracy is a weighted count and each seen-unseen curve a weighted
curve. The interval is the percentile interval (the empirical quantiles alpha/2 and 1 − alpha/2, numpy's
'inverted_cdf': order statistics, no interpolation, so −inf replicates stay −inf). A finding "holds" when its
interval excludes the threshold in the claimed direction.

What stays fixed across resamples: the models, the NCM class means (they come from training data; only the test
samples are resampled, so the caller passes per-sample NCM correctness), the deployable γ̂ (ALG and PCV are
chosen without test data) and γ* (the full-sample oracle). Keeping γ* fixed bootstraps the recovery of that one γ;
re-choosing it on each resample would add the optimism of a maximum to every denominator.

Dominance convention: FT + γ "reaches" Acc_u/y v at Acc_s/y >= a when some state of FT's exact seen-unseen curve
(one γ interval) has acc_seen >= a and acc_unseen = v; the most it reaches is the maximum over those states. The
curve is the set of states one γ can realise, so no interpolation between states. When no state qualifies the
margin is −inf (it cannot hold).

All of it is NumPy on integer counts: a curve's breakpoints are sorted once per model; a replicate's curve is the
cumulative sum of its weights in that fixed order, O(B·N) in all.
"""

from typing import Any, Dict, Mapping, NamedTuple, Optional

import numpy as np

from ftcal_jax import calibration
from ftcal_jax import metrics

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 0
DEFAULT_ALPHA = 0.05
# "ALG/PCV recover most of γ*'s gain" holds when their recovery's interval lies above this fraction.
RECOVERY_THRESHOLD = 0.5
# Replicates per block: bounds memory to a few (block, N) int32 arrays (N = 7,000: ~7 MB each).
_BLOCK = 250


def resample_counts(num_samples: int, num_replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
                    strata: Optional[np.ndarray] = None) -> np.ndarray:
  """Multiplicities of a nonparametric bootstrap, deterministic given the seed.

  Args:
    num_samples, num_replicates, seed: N, B and the NumPy Generator seed.
    strata: optional (N,) labels (bool or int); each stratum is resampled on its own, keeping its size.

  Returns:
    (B, N) int32: entry (b, i) counts how often test sample i is drawn in resample b; every row sums to N.
  """
  strata = np.zeros(num_samples, np.int64) if strata is None else np.asarray(strata)
  if num_samples < 1 or num_replicates < 1 or strata.shape != (num_samples,):
    raise ValueError(f"Need N >= 1, B >= 1 and strata of shape (N,); got N = {num_samples}, B = {num_replicates}, "
                     f"strata {strata.shape}.")
  rng = np.random.default_rng(seed)
  members = [np.flatnonzero(strata == g) for g in np.unique(strata)]
  idx = np.concatenate([m[rng.integers(0, m.size, size=(num_replicates, m.size))] for m in members], axis=1)
  idx += np.arange(num_replicates)[:, None] * num_samples
  counts = np.bincount(idx.ravel(), minlength=num_replicates * num_samples)
  return counts.reshape(num_replicates, num_samples).astype(np.int32)


def correct_at(stats: calibration.SampleStats, gamma: float) -> np.ndarray:
  """(N,) bool: is argmax(shift_absent(z, γ)) the label, from per-sample stats.

  The rule of calibration.grid_from_stats: the best S class wins if max_S > fl(max_U + γ) in float32, or ties
  with it and comes first in index order; rows with every logit -inf compare 0 with γ.
  """
  ms, mu = np.asarray(stats.max_s, np.float32), np.asarray(stats.max_u, np.float32)
  dead = np.isneginf(ms) & np.isneginf(mu)
  ms, mu = np.where(dead, np.float32(0), ms), np.where(dead, np.float32(0), mu)
  thr = mu + np.float32(gamma)
  pred_s = (ms > thr) | ((ms == thr) & np.asarray(stats.s_first, bool))
  return np.where(pred_s, np.asarray(stats.s_correct, bool), np.asarray(stats.u_correct, bool))


class CurveOrder(NamedTuple):
  """A model's seen-unseen curve structure; only the weights change between resamples.

  State 0 has every finite-breakpoint sample on its best U class (samples with max_U = -inf are always S); state
  j >= 1 flips the j tie groups with the largest breakpoints γ_i = max_S − max_U to S. These G + 1 states are,
  in order, the valid points of calibration.curve_from_stats.
  """
  order: np.ndarray  # (M,) samples with a finite breakpoint, by decreasing breakpoint (stable).
  group_end: np.ndarray  # (G,) exclusive end of each tie group within `order`.
  base_correct: np.ndarray  # (N,) bool: correct in state 0.
  flip_delta: np.ndarray  # (M,) int32: change in correctness when order[k] flips to S.


def curve_order(stats: calibration.SampleStats) -> CurveOrder:
  """Sorts the breakpoints of (N,) per-sample stats once.

  As in calibration's curve, a breakpoint is the exact real max_S − max_U, kept as a float32 pair (hi, lo) with
  hi = fl(gap) and hi + lo = gap (two-sum): two samples tie only when their gaps are truly equal.
  """
  ms, mu = np.asarray(stats.max_s, np.float32), np.asarray(stats.max_u, np.float32)
  with np.errstate(invalid="ignore", over="ignore"):
    hi = ms - mu
    back = hi - ms
    lo = (ms - (hi - back)) + (-mu - back)
  hi[np.isnan(hi)] = -np.inf  # every logit -inf: never flips (calibration's dead rows)
  lo[~np.isfinite(hi)] = 0.0
  s_ok, u_ok = np.asarray(stats.s_correct, bool), np.asarray(stats.u_correct, bool)
  finite = np.flatnonzero(np.isfinite(hi))
  order = finite[np.lexsort((-lo[finite], -hi[finite]))]  # decreasing (hi, lo), stable
  h, l = hi[order], lo[order]
  new_group = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
  group_end = np.append(np.flatnonzero(new_group) + 1, h.size) if h.size else np.zeros(0, np.int64)
  base = np.where(hi == np.inf, s_ok, u_ok)
  delta = s_ok[order].astype(np.int32) - u_ok[order].astype(np.int32)
  return CurveOrder(order, group_end, base, delta)


def _transposed(weights) -> np.ndarray:
  """(N, B) int32 C-contiguous copy of (B, N) weights: the layout _state_hits works in."""
  return np.ascontiguousarray(np.asarray(weights, np.int32).T)


def _state_hits(curve: CurveOrder, seen: np.ndarray, wt: np.ndarray):
  """(hits_seen, hits_unseen), each (G + 1, B) int32, from transposed weights wt (N, B).

  State-major layout: gathering rows of wt in curve order copies one contiguous row per sample, and the cumulative
  sum runs down rows for all replicates at once. Counts are at most N, so int32 holds them.
  """
  wo = wt[curve.order]
  out = []
  for rows in (seen, ~seen):
    base = (curve.base_correct & rows).astype(np.int32) @ wt
    steps = np.cumsum(wo * (curve.flip_delta * rows[curve.order])[:, None], axis=0, dtype=np.int32)
    out.append(np.concatenate([base[None], base[None] + steps[curve.group_end - 1]], axis=0))
  return out[0], out[1]


def _area(hs, hu, n_s, n_u):
  """(B,) trapezoid area along the path (calibration.ausuc's rule) from (P, B) hits; exact until the division."""
  dx = np.diff(hs, axis=0).astype(np.int64)
  return np.sum(dx * (hu[1:] + hu[:-1]), axis=0) / (2.0 * n_s * n_u)


def weighted_curve_hits(curve: CurveOrder, is_absent: np.ndarray, weights: np.ndarray):
  """Weighted seen-unseen curves, one per row of weights, as hit counts.

  Args:
    curve: from curve_order.
    is_absent: (N,) bool, the label is in U.
    weights: (B, N) non-negative integer multiplicities (a row of ones is the plain curve; 2 counts a sample
      twice, 0 drops it).

  Returns:
    (hits_seen, hits_unseen), each (B, G + 1) int32: weighted correct S / U samples in each
    state; divide by weights @ ~is_absent and weights @ is_absent for Acc_s/y and Acc_u/y.
  """
  hs, hu = _state_hits(curve, ~np.asarray(is_absent, bool), _transposed(weights))
  return hs.T, hu.T


def weighted_ausuc(stats: calibration.SampleStats, weights: np.ndarray) -> np.ndarray:
  """(B,) exact AUSUC of each weighted resample of (N,) stats; weights (B, N) integer multiplicities."""
  absent = np.asarray(stats.is_absent, bool)
  wt = _transposed(weights)
  hs, hu = _state_hits(curve_order(stats), ~absent, wt)
  return _area(hs, hu, (~absent).astype(np.int32) @ wt, absent.astype(np.int32) @ wt)


def _best_reach(hits_axis, hits_other, need_other):
  """Per replicate (column of (P, B) hits): the most hits_axis over states with hits_other >= need_other (-1
  when none), and that state."""
  masked = np.where(hits_other >= need_other[None, :], hits_axis, -1)
  state = np.argmax(masked, axis=0)  # first along the path (largest γ) among equal maxima
  return masked[state, np.arange(masked.shape[1])], state


class _Inputs(NamedTuple):
  """Per-sample vectors shared by every replicate."""
  absent: np.ndarray  # (N,) bool
  pre_curve: CurveOrder
  ft_curve: CurveOrder
  correct: Dict[str, np.ndarray]  # name -> (N,) bool: 'pre', 'ft', 'ncm_pre', 'ncm_ft', 'star', 'hat_<rule>'


def _ratio(num, den):
  # Integer counts: den > 0 means den >= 1. Replicates where γ* gains nothing over FT leave the ratio undefined:
  # they count as not recovering (-inf).
  return np.where(den > 0, num / np.maximum(den, 1), -np.inf)


def _replicate_stats(w: np.ndarray, inp: _Inputs) -> Dict[str, np.ndarray]:
  """Every finding's statistic on each resample (rows of w (b, N)); (b,) float64 arrays, plus dominance states."""
  seen = ~inp.absent
  wt = _transposed(w)
  n_s, n_u = seen.astype(np.int32) @ wt, inp.absent.astype(np.int32) @ wt
  names = list(inp.correct)
  groups = np.stack([inp.correct[k] & rows for k in names for rows in (seen, inp.absent)]).astype(np.int32)
  counts = groups @ wt  # (2K, b): one product for every fixed-γ accuracy
  hits = {k: (counts[2 * i], counts[2 * i + 1]) for i, k in enumerate(names)}
  pre_hs, pre_hu = _state_hits(inp.pre_curve, seen, wt)
  ft_hs, ft_hu = _state_hits(inp.ft_curve, seen, wt)
  reach_u, state_u = _best_reach(ft_hu, ft_hs, hits["pre"][0])
  reach_s, state_s = _best_reach(ft_hs, ft_hu, hits["pre"][1])
  out = {"collapse": 100.0 * (hits["ft"][1] - hits["pre"][1]) / n_u}
  if "ncm_ft" in hits:
    out["ncm_features"] = 100.0 * (hits["ncm_ft"][1] - hits["ncm_pre"][1]) / n_u
  out.update({
      "ausuc": _area(ft_hs, ft_hu, n_s, n_u) - _area(pre_hs, pre_hu, n_s, n_u),
      "dominance_at_seen": np.where(reach_u >= 0, 100.0 * (reach_u - hits["pre"][1]) / n_u, -np.inf),
      "dominance_at_unseen": np.where(reach_s >= 0, 100.0 * (reach_s - hits["pre"][0]) / n_s, -np.inf),
      "_state_at_seen": state_u, "_state_at_unseen": state_s, "_ft_hits": (ft_hs, ft_hu), "_n": (n_s, n_u)
  })
  total = {k: h[0] + h[1] for k, h in hits.items()}
  for k in inp.correct:
    if k.startswith("hat_"):
      out["recovery_" + k[4:]] = _ratio(total[k] - total["ft"], total["star"] - total["ft"])
  return out


_CLAIMS = {
    "collapse":
        ("FT lowers Acc_u/y below the pre-trained model", "Acc_u/y(FT) − Acc_u/y(pre-trained)", "points", "below", 0.0),
    "ncm_features": ("NCM Acc_u/y with FT features is above NCM Acc_u/y with pre-trained features (features improve "
                     "for absent classes)", "NCM Acc_u/y(FT) − NCM Acc_u/y(pre-trained)", "points", "above", 0.0),
    "ausuc": ("AUSUC(FT) is above AUSUC(pre-trained)", "AUSUC(FT) − AUSUC(pre-trained)", "AUSUC", "above", 0.0),
    "dominance_at_seen":
        ("Pareto dominance: at the pre-trained Acc_s/y, FT + γ reaches more Acc_u/y",
         "max Acc_u/y of FT + γ with Acc_s/y ≥ pre-trained's, − pre-trained Acc_u/y", "points", "above", 0.0),
    "dominance_at_unseen":
        ("Pareto dominance: at the pre-trained Acc_u/y, FT + γ reaches more Acc_s/y",
         "max Acc_s/y of FT + γ with Acc_u/y ≥ pre-trained's, − pre-trained Acc_s/y", "points", "above", 0.0),
}


def describe(key: str) -> Dict[str, Any]:
  """What finding `key` claims: {'claim', 'statistic', 'unit', 'direction', 'threshold'}."""
  if key.startswith("recovery_"):
    rule = key[len("recovery_"):]
    row = (f"{rule} recovers most (> {RECOVERY_THRESHOLD:.0%}) of γ*'s Acc_y/y gain over FT",
           f"(Acc_y/y(FT + {rule}) − Acc_y/y(FT)) / (Acc_y/y(FT + γ*) − Acc_y/y(FT))", "ratio", "above",
           RECOVERY_THRESHOLD)
  else:
    row = _CLAIMS[key]
  return dict(zip(("claim", "statistic", "unit", "direction", "threshold"), row))


def _finding(key: str, estimate: float, replicates: np.ndarray, alpha: float) -> Dict[str, Any]:
  d = describe(key)
  lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
  holds = bool(lo > d["threshold"]) if d["direction"] == "above" else bool(hi < d["threshold"])
  return {"key": key, **d, "estimate": float(estimate), "interval": [float(lo), float(hi)], "holds": holds}


def _curve_gammas(stats: calibration.SampleStats, num_states: int) -> np.ndarray:
  """The γ inside each state's interval, from calibration's curve (same states, same order)."""
  curve = calibration.curve_from_stats(calibration.SampleStats(*(np.asarray(x) for x in stats)))
  gammas = np.asarray(curve.gammas, np.float64)[np.asarray(curve.valid, bool)]
  if gammas.size != num_states:  # only if XLA and NumPy disagree on a breakpoint (a subnormal gap)
    raise ValueError(f"calibration's curve has {gammas.size} valid points, findings' {num_states}.")
  return gammas


def _full_sample_points(full: Mapping[str, np.ndarray], gammas: np.ndarray) -> Dict[str, Any]:
  """The two calibrated points of the dominance findings on FT's curve, in %, with their γ (for the figure)."""
  (hs, hu), (n_s, n_u) = full["_ft_hits"], full["_n"]
  pts = {}
  for name in ("at_seen", "at_unseen"):
    s = int(full[f"_state_{name}"][0])
    pts[name] = {
        "gamma": float(gammas[s]), "acc_s/y": float(100.0 * hs[s, 0] / n_s[0]),
        "acc_u/y": float(100.0 * hu[s, 0] / n_u[0])
    }
  return pts


def _correctness(pretrained, finetune, ncm_correct, calibrated_gammas, gamma_star):
  """Per-sample correctness vectors (name -> (N,) bool) at every fixed γ, and the rules skipped."""
  correct = {"pre": correct_at(pretrained, 0.0), "ft": correct_at(finetune, 0.0)}
  if ncm_correct is not None:
    correct["ncm_pre"] = np.asarray(ncm_correct["pretrained"], bool)
    correct["ncm_ft"] = np.asarray(ncm_correct["finetune"], bool)
    if correct["ncm_pre"].shape != correct["pre"].shape or correct["ncm_ft"].shape != correct["pre"].shape:
      raise ValueError(f"ncm_correct must hold (N,) = {correct['pre'].shape} vectors for both models.")
  correct["star"] = correct_at(finetune, gamma_star)
  skipped = []
  for rule, g in (calibrated_gammas or {}).items():
    if g is None or not np.isfinite(g):
      skipped.append(rule)
    else:
      correct[f"hat_{rule}"] = correct_at(finetune, g)
  return correct, skipped


def compute_findings(pretrained: calibration.SampleStats, finetune: calibration.SampleStats, *,
                     ncm_correct: Optional[Mapping[str, np.ndarray]] = None,
                     calibrated_gammas: Optional[Mapping[str, Optional[float]]] = None,
                     gamma_star: Optional[float] = None, num_replicates: int = DEFAULT_REPLICATES,
                     seed: int = DEFAULT_SEED, alpha: float = DEFAULT_ALPHA) -> Dict[str, Any]:
  """The paper's findings on one test set, each with its paired-bootstrap interval.

  Args:
    pretrained, finetune: calibration.SampleStats ((N,) fields) of the two models on the same test samples, in
      the same order (calibration.reduce_logits of their test logits).
    ncm_correct: optional {'pretrained': (N,) bool, 'finetune': (N,) bool}: is the NCM prediction with each
      model's features right on each test sample (class means from training data, fixed across resamples).
    calibrated_gammas: optional {rule name, e.g. 'ALG': γ̂}; a None or NaN γ̂ is skipped (e.g. PCV found none).
    gamma_star: γ* of FT; None takes the oracle on these test data (calibration's rule: the first state along
      the path with the most correct samples).
    num_replicates, seed, alpha: the bootstrap (deterministic given the seed) and the interval's level.

  Returns:
    {'findings': [dict per finding: key, claim, statistic, unit, direction, threshold, estimate, interval
    [lo, hi], holds], 'points': {'pretrained': {'acc_s/y', 'acc_u/y'}, 'at_seen', 'at_unseen': {'gamma',
    'acc_s/y', 'acc_u/y'}} (in %), 'gamma_star', 'skipped': [rule names], 'bootstrap': its settings}.
  """
  absent = np.asarray(finetune.is_absent, bool)
  if not np.array_equal(np.asarray(pretrained.is_absent, bool), absent):
    raise ValueError("pretrained and finetune stats must come from the same test samples in the same order.")
  if absent.all() or not absent.any():
    raise ValueError("The test samples need both S and U labels for the findings.")
  ft_curve = curve_order(finetune)
  gammas = _curve_gammas(finetune, ft_curve.group_end.size + 1)
  if gamma_star is None:
    hs, hu = weighted_curve_hits(ft_curve, absent, np.ones((1, absent.size), np.int32))
    gamma_star = float(gammas[np.argmax((hs + hu)[0])])
  correct, skipped = _correctness(pretrained, finetune, ncm_correct, calibrated_gammas, gamma_star)
  inp = _Inputs(absent, curve_order(pretrained), ft_curve, correct)

  full = _replicate_stats(np.ones((1, absent.size), np.int32), inp)
  w = resample_counts(absent.size, num_replicates, seed, strata=absent)
  blocks = [_replicate_stats(w[i:i + _BLOCK], inp) for i in range(0, num_replicates, _BLOCK)]
  keys = [k for k in full if not k.startswith("_")]
  (pre_s, pre_u), (n_s, n_u) = [(correct["pre"] & rows).sum() for rows in (~absent, absent)], full["_n"]
  points = {
      "pretrained": {"acc_s/y": float(100.0 * pre_s / n_s[0]), "acc_u/y": float(100.0 * pre_u / n_u[0])},
      **_full_sample_points(full, gammas)
  }
  return {
      "findings": [_finding(k, full[k][0], np.concatenate([b[k] for b in blocks]), alpha) for k in keys],
      "points": points, "gamma_star": float(gamma_star), "skipped": skipped, "bootstrap": {
          "replicates": int(num_replicates), "seed": int(seed), "alpha": float(alpha),
          "method": "paired percentile bootstrap over test samples, stratified by S/U",
          "num_test_samples": int(absent.size)
      }
  }


def ncm_correctness(test_features, test_labels, train_features, train_labels, num_classes: int) -> np.ndarray:
  """(N,) bool: the NCM prediction (first index wins ties) on test (N, D) features equals the (N,) label; the C
  class means come from the (M, D) training features and (M,) labels."""
  logits = np.asarray(
      metrics.ncm_logits(test_features, metrics.ncm_class_means(train_features, train_labels, num_classes)))
  return np.argmax(np.where(np.isnan(logits), -np.inf, logits), axis=1) == np.asarray(test_labels)


def from_predictions(test: Mapping[str, Any], absent_mask: np.ndarray, *, ncm_train: Optional[Mapping[str, Any]] = None,
                     **kwargs) -> Dict[str, Any]:
  """compute_findings from cached predictions (evaluation.Predictions or anything with the same fields).

  Args:
    test: {'pretrained', 'finetune'} -> predictions on the same test samples: logits (N, C), labels (N,),
      features (N, D).
    absent_mask: (C,) bool, True for classes in U.
    ncm_train: optional {'pretrained', 'finetune'} -> predictions on the training data the NCM class means come
      from; without both, the NCM finding is left out.
    **kwargs: calibrated_gammas, gamma_star, num_replicates, seed, alpha of compute_findings.

  Returns:
    compute_findings' dict.
  """
  absent = np.asarray(absent_mask, bool)
  models = ("pretrained", "finetune")
  stats = {k: calibration.reduce_logits(test[k].logits, test[k].labels, absent) for k in models}
  ncm = None
  if ncm_train is not None and all(k in ncm_train for k in models):
    ncm = {
        k: ncm_correctness(test[k].features, test[k].labels, ncm_train[k].features, ncm_train[k].labels, absent.size)
        for k in models
    }
  return compute_findings(stats["pretrained"], stats["finetune"], ncm_correct=ncm, **kwargs)
