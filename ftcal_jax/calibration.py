"""Calibration of absent-class logits: shift, seen-unseen curve, AUSUC, γ choices.

The curve algorithm in three lines: (1) one O(N·C) pass reduces each sample to
its S and U maxima and whether each group's first arg-max is the label;
(2) sample i predicts S exactly while γ < γ_i = max_S z − max_U z, so sorting
the γ_i gives every state of the γ sweep; (3) cumulative sums of the per-sample
count changes along that order give all N+1 points' accuracies at once.

Definitions follow ``shared/paper.md`` (Mai et al. 2024). The prediction after
calibration is ``argmax_c z_c + γ·1[c ∈ U]``; S are the classes seen during
fine-tuning, U the absent ones (``absent_mask``). All accuracies here are on the
[0, 1] scale; :mod:`ftcal_jax.metrics` reports percentages.

Conventions shared by every function:

* ``logits`` (N, C) float, ``labels`` (N,) int in [0, C), ``absent_mask`` (C,)
  bool (True = class in U). ``class_mask`` (C,) bool, optional: classes set to
  False are dropped from the head (their logits become -inf), e.g. the 200
  ImageNet-R classes of a 1000-way head. Labels must then be kept classes.
* NaN logits count as -inf (paper.md). +inf logits are treated as the largest
  finite float, so several +inf in one row still tie in index order.
* Ties follow ``jnp.argmax``: the first index wins. XLA:CPU flushes subnormal
  floats to zero in every op (``jnp.argmax`` too), so there they tie with 0.
* Input errors raise ``ValueError``. Shapes are always checked; values (label
  range, empty S or U, finite γ) only when the arrays are concrete, so every
  function stays usable under ``jax.jit`` and ``jax.vmap``.
* An accuracy over an empty sample group (no U samples, say) is NaN.

Kernels: :mod:`ftcal_jax._argmax_cpu` (reduction), :mod:`ftcal_jax._exact_curve`
and :mod:`ftcal_jax._pair_order` (curve), :mod:`ftcal_jax._gamma_grid` (γ grid);
input checks: :mod:`ftcal_jax.validation`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax import _argmax_cpu
from ftcal_jax import _exact_curve
from ftcal_jax import _gamma_grid
from ftcal_jax import _pair_order
from ftcal_jax import validation

# Re-exported: callers and tests check inputs through this module too.
validate_inputs = validation.validate_inputs

Array = jax.Array


def shift_absent(logits, absent_mask, gamma):
  """Adds γ to the logits of absent classes.

  Args:
    logits: (..., C) float (integer logits are refused: they would truncate γ).
    absent_mask: (C,) bool, True for classes in U.
    gamma: scalar (must be finite).

  Returns:
    (..., C): ``z + γ·1[c ∈ U]``, in the dtype of logits.
  """
  logits, absent_mask = validation.as_arrays(logits, absent_mask)
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise ValueError(f"logits must be floating point, got {jnp.result_type(logits)}: adding γ to integer "
                     "logits would truncate it. Cast them first, e.g. logits.astype(jnp.float32).")
  if jnp.shape(absent_mask) != jnp.shape(logits)[-1:]:
    raise ValueError(f"absent_mask shape {jnp.shape(absent_mask)} does not match the class "
                     f"axis of logits {jnp.shape(logits)}.")
  if jnp.ndim(gamma) != 0:
    raise ValueError(f"gamma must be a scalar; got shape {jnp.shape(gamma)}. "
                     "Use jax.vmap for several γ.")
  validation.validate_gamma(gamma)
  gamma = jnp.asarray(gamma, jnp.result_type(logits))
  # where, not z + γ·mask: keeps -inf logits -inf and avoids 0·γ surprises.
  return jnp.where(absent_mask, logits + gamma, logits)


# --------------------------------------------------------------------------
# Per-sample reduction.


class SampleStats(NamedTuple):
  """What a sample contributes to any γ; every field is (N,).

  The first five fields are (max_S, s_correct, max_U, u_correct, is_absent).
  """
  max_s: Array  # float32: max logit over S (-inf if none is finite).
  s_correct: Array  # bool: the first arg-max over S is the label.
  max_u: Array  # float32: max logit over U.
  u_correct: Array  # bool: the first arg-max over U is the label.
  is_absent: Array  # bool: the label is in U.
  s_first: Array  # bool: best S index < best U index (decides exact ties).


def _reduce(logits, labels, absent_mask, class_mask):
  """Traceable core of :func:`reduce_logits` (no jit boundary inside)."""
  seen_cls, absent_cls = validation.class_rows(absent_mask, class_mask)
  m, idx = _argmax_cpu.group_argmax(logits.astype(jnp.float32), seen_cls, absent_cls)
  return SampleStats(max_s=m[:, 0], s_correct=idx[:, 0] == labels, max_u=m[:, 1], u_correct=idx[:, 1] == labels,
                     is_absent=absent_cls[labels], s_first=idx[:, 0] < idx[:, 1])


_reduce_jit = jax.jit(_reduce)


def reduce_logits(logits, labels, absent_mask, class_mask=None) -> SampleStats:
  """Reduces (N, C) logits to what every γ needs, in O(N·C).

  Args:
    logits: (N, C) float (float32, bfloat16 and float16 are exact in float32).
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool; False drops a class from the head.

  Returns:
    :class:`SampleStats` of (N,) arrays: (max_s, s_correct, max_u, u_correct,
    is_absent, s_first).
  """
  logits, labels, absent_mask, class_mask = validation.checked_inputs(logits, labels, absent_mask, class_mask)
  return _reduce_jit(logits, labels, absent_mask, class_mask)


# --------------------------------------------------------------------------
# Exact seen-unseen curve.


class SeenUnseenCurve(NamedTuple):
  """Every distinct state of the γ sweep; all fields are (N+1,).

  Point k is the state in which the k samples with the largest breakpoints
  γ_i = max_S z − max_U z predict their best S class and the others their best
  U class. It holds for γ in (γ_(k+1), γ_(k)), sorting γ_i decreasingly with
  γ_(0) = +inf and γ_(N+1) = -inf. Point 0 is the all-U end (Acc_s/y = 0),
  point N the all-S end (Acc_u/y = 0). N samples have at most N distinct
  breakpoints and so at most N+1 states: the curve has N+1 slots, not N+2.
  The breakpoints are exact differences of the float32 logits (not rounded
  to float32), so two samples tie only when their gaps are truly equal.
  """
  gammas: Array  # float32, non-increasing. Valid points: the float32 nearest
  #   the exact midpoint of the interval (at the ends the extreme finite
  #   breakpoint ±1, widened for |γ| > 2**16; 0 if no breakpoint is finite);
  #   ``shift_absent`` with it reproduces the point whenever the interval is
  #   wider than the float32 rounding of z + γ (~1 ulp of the logits). Points
  #   narrower than that exist only in exact arithmetic: no float32 γ names
  #   them. Invalid points: their breakpoint γ_(k) rounded to float32 (may be ±inf).
  acc_seen: Array  # Acc_s/y in [0, 1].
  acc_unseen: Array  # Acc_u/y in [0, 1].
  acc_all: Array  # Acc_y/y in [0, 1].
  valid: Array  # bool: False when the interval is empty (inside a tie
  #   group, or beyond an infinite breakpoint). Only valid points form the
  #   curve; the rest repeat a neighbour's counts and are kept for fixed shapes.


@jax.jit
def curve_from_stats(stats: SampleStats) -> SeenUnseenCurve:
  """Exact curve from per-sample stats in O(N log N); see SeenUnseenCurve."""
  return SeenUnseenCurve(*_exact_curve.curve_fields(stats))


def seen_unseen_curve(logits, labels, absent_mask, class_mask=None) -> SeenUnseenCurve:
  """Exact seen-unseen curve: every breakpoint at once, O(N·C + N log N).

  Args:
    logits: (N, C) float.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool; False drops a class from the head.

  Returns:
    :class:`SeenUnseenCurve` with (N+1,) fields, ordered by decreasing γ.
  """
  logits, labels, absent_mask, class_mask = validation.checked_inputs(logits, labels, absent_mask, class_mask)
  return _curve_jit(logits, labels, absent_mask, class_mask)


@jax.jit
def _curve_jit(logits, labels, absent_mask, class_mask):
  """Reduction and curve in one compiled call (one dispatch, no stats in between)."""
  return SeenUnseenCurve(*_exact_curve.curve_fields(_reduce(logits, labels, absent_mask, class_mask)))


def _forward_fill(x, valid):
  idx = jnp.arange(x.shape[0])
  last = _pair_order.cummax(jnp.where(valid, idx, -1))
  first = jnp.argmax(valid)
  return x[jnp.where(last < 0, first, last)]


@jax.jit
def _ausuc(curve):
  x = _forward_fill(curve.acc_seen, curve.valid)
  y = _forward_fill(curve.acc_unseen, curve.valid)
  area = jnp.sum(0.5 * (x[1:] - x[:-1]) * (y[1:] + y[:-1]))
  return jnp.where(jnp.any(curve.valid), area, jnp.nan)


def ausuc(curve: SeenUnseenCurve) -> Array:
  """Area under the seen-unseen curve, trapezoid along the γ path, in [0, 1].

  Acc_s/y is the x axis and Acc_u/y the y axis; points are taken in order of
  decreasing γ, so the area is unique even when several points share an
  Acc_s/y. NaN if the curve has NaN accuracies (no S or no U samples).

  Args:
    curve: a :class:`SeenUnseenCurve` (fields (P,)).

  Returns:
    Scalar float32.

  Raises:
    ValueError: the curve has no point, or (when concrete) no valid point.
      Under jit a curve without valid points gives NaN.
  """
  if jnp.ndim(curve.valid) < 1 or jnp.shape(curve.valid)[-1] == 0:
    raise ValueError("ausuc of an empty curve: it has no points.")
  area = _ausuc(curve)  # dispatched before any check, so no wait in between
  value = validation.concrete(area)
  if value is not None and np.isnan(value) and not np.any(validation.concrete(curve.valid)):
    raise ValueError("ausuc of an empty curve: no point is valid (every interval is empty).")
  return area


# The γ grid works from the same per-sample stats.
grid_from_stats = _gamma_grid.grid_from_stats


def evaluate_gamma_grid(logits, labels, absent_mask, gammas, class_mask=None, method: str = "search") -> dict:
  """Accuracies at G values of γ from one O(N·C) pass; never builds G·N·C.

  Args:
    logits: (N, C) float.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    gammas: (G,) finite floats.
    class_mask: optional (C,) bool; False drops a class from the head.
    method: "search" or "vmap", see :func:`grid_from_stats`.

  Returns:
    dict with (G,) arrays 'acc_seen', 'acc_unseen', 'acc_all' in [0, 1], equal
    to the accuracies of ``argmax(shift_absent(logits, absent_mask, γ))``.
  """
  (gammas,) = validation.as_arrays(gammas)
  if jnp.ndim(gammas) != 1:
    raise ValueError(f"gammas must be (G,); got shape {jnp.shape(gammas)}.")
  validation.validate_gamma(gammas, "gammas")
  _gamma_grid.check_grid(gammas)
  stats = reduce_logits(logits, labels, absent_mask, class_mask)
  return grid_from_stats(stats, gammas, method=method)


# --------------------------------------------------------------------------
# Choosing γ.


def alg_gamma(train_logits, train_labels, absent_mask, class_mask=None):
  """Average logit gap (ALG) on fine-tuning training data of S only.

  γ = mean_i[mean_{c ∈ S, c ≠ y_i} z_ic] − mean_i[mean_{c ∈ U} z_ic].

  Args:
    train_logits: (N, C) finite floats of training samples.
    train_labels: (N,) int, all in S (the fine-tuning data has no U samples).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool; False drops a class from both means.

  Returns:
    Scalar float32. Non-finite logits give a non-finite γ under jit; eagerly
    they raise, as does an empty batch (N = 0).
  """
  train_logits, train_labels, absent_mask, class_mask = validation.checked_inputs(train_logits, train_labels,
                                                                                  absent_mask, class_mask)
  if jnp.shape(train_logits)[0] == 0:
    raise ValueError("alg_gamma needs at least one training sample; got N = 0.")
  lab = validation.concrete(train_labels)
  absent = validation.concrete(absent_mask)
  if lab is not None and absent is not None and np.any(absent[lab]):
    raise ValueError("alg_gamma takes fine-tuning TRAINING data, which holds S samples only; "
                     f"{int(np.sum(absent[lab]))} labels are absent classes. Using test "
                     "data with U samples leaks them (see paper.md).")
  keep = validation.concrete(class_mask) if class_mask is not None else (
      None if absent is None else np.ones_like(absent))
  if absent is not None and keep is not None and np.sum(~absent & keep) < 2:
    raise ValueError("alg_gamma needs at least 2 seen classes (the mean over "
                     "non-ground-truth S classes is empty otherwise).")
  z = validation.concrete(train_logits)
  if z is not None and not np.all(np.isfinite(z[:, keep] if keep is not None else z)):
    raise ValueError("alg_gamma needs finite logits; got NaN or inf.")
  return _alg(train_logits, train_labels, absent_mask, jnp.ones_like(absent_mask) if class_mask is None else class_mask)


@jax.jit
def _alg(z, labels, absent_mask, class_mask):
  seen_cls, absent_cls = validation.class_rows(absent_mask, class_mask)
  z = jnp.where(class_mask, z.astype(jnp.float32), 0.0)
  sum_s = z @ seen_cls.astype(jnp.float32)
  sum_u = z @ absent_cls.astype(jnp.float32)
  z_true = jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0]
  wrong_seen = (sum_s - z_true) / (jnp.sum(seen_cls) - 1)
  return jnp.mean(wrong_seen) - jnp.mean(sum_u / jnp.sum(absent_cls))


@jax.jit
def _best_point(curve, ok):
  """First point along the path with the highest Acc_y/y among ok points."""
  best = jnp.argmax(jnp.where(ok, curve.acc_all, -jnp.inf))
  return best, jnp.any(ok)


def oracle_gamma(logits, labels, absent_mask, class_mask=None):
  """γ* maximising Acc_y/y on these (test) data: an upper bound, not a method.

  Args:
    logits: (N, C) float.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool.

  Returns:
    (gamma, acc_all): scalars. γ lies strictly inside the best interval (its
    midpoint), so ``shift_absent`` reproduces acc_all up to float rounding.
    Among equal optima, the largest γ (first along the path) is returned.
  """
  curve = seen_unseen_curve(logits, labels, absent_mask, class_mask)
  best, _ = _best_point(curve, curve.valid)
  return curve.gammas[best], curve.acc_all[best]


def pcv_select(curve: SeenUnseenCurve, acc_pseudo_absent_threshold):
  """PCV step 5: the γ of the best point whose pseudo-absent accuracy >= τ.

  Args:
    curve: curve of a pseudo split (S2 playing U), fields (P,).
    acc_pseudo_absent_threshold: τ in [0, 1], the pre-trained model's accuracy
      on S2 samples over all classes (the curve's scale, not percent).

  Returns:
    (gamma_k, found): γ_k is NaN when no valid point reaches τ (found False).
    Ties go to the first point along the path (largest γ).
  """
  tau = validation.concrete(acc_pseudo_absent_threshold)
  if tau is not None and not (np.ndim(tau) == 0 and 0.0 <= tau <= 1.0):
    raise ValueError(f"acc_pseudo_absent_threshold must be a scalar in [0, 1]; got {tau}. "
                     "If it is a percentage, divide by 100.")
  ok = curve.valid & (curve.acc_unseen >= acc_pseudo_absent_threshold)
  best, found = _best_point(curve, ok)
  return jnp.where(found, curve.gammas[best], jnp.nan), found


def pcv_gamma(gammas_k, found_k):
  """Mean of γ_k over the splits that found one.

  Args:
    gammas_k: (K,) floats from :func:`pcv_select`.
    found_k: (K,) bool.

  Returns:
    Scalar; NaN when no split found a γ (nothing to average: choose another
    rule, e.g. ALG, and say so).
  """
  gammas_k, found_k = validation.as_arrays(gammas_k, found_k)
  if jnp.shape(gammas_k) != jnp.shape(found_k) or jnp.ndim(gammas_k) != 1:
    raise ValueError(f"gammas_k and found_k must both be (K,); got "
                     f"{jnp.shape(gammas_k)} and {jnp.shape(found_k)}.")
  return _pcv_gamma(gammas_k, found_k)


@jax.jit
def _pcv_gamma(gammas_k, found_k):
  total = jnp.sum(jnp.where(found_k, gammas_k, 0.0))
  return total / jnp.sum(found_k)
