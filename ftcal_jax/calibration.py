"""Calibration of absent-class logits: shift, seen-unseen curve, AUSUC, γ choices.

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

Speed note: on XLA:CPU only row reductions built from add/sub/mul/min/max
run at vector speed (a compare or select inside makes them ~20x slower). The
per-sample reduction is therefore two-level and compare-free: one pass gives
per-block maxima of the S and U logits (blocks of ~sqrt(C) consecutive
classes); the first block at the group max, then the first class inside that
block, are found by ``min(index + gap * 2**100 * 2**100)``, which is exactly
the first arg-max because any nonzero float32 gap is >= 2**-149. Only the
chosen block of each row is gathered again, so z is read once. Rows with
NaN, ±inf or an empty class group send the batch to an exact compare-based
path (``lax.cond``). The curve sorts int32 keys that order like the float
breakpoints (XLA:CPU sorts int32 ~4x faster than float32).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

# Two factors that turn any nonzero float32 gap (>= 2**-149) into >= 2**51,
# far above any class index, and big gaps into +inf; applied as two multiplies
# by a runtime scalar so XLA cannot fold them into one infinite constant.
_GAP_FACTOR = 2.0**100

# --------------------------------------------------------------------------
# Input validation (Python level, runs outside jit).


def _concrete(x):
  """Returns x as a NumPy array, or None when x is a tracer."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def validate_inputs(logits, labels, absent_mask, class_mask=None):
  """Checks shapes always, and values when the arrays are concrete.

  Args:
    logits: (N, C) float array.
    labels: (N,) int array in [0, C), or None when there are no labels.
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool, True for classes the evaluation keeps.

  Raises:
    ValueError: naming the problem and the fix.
  """
  if jnp.ndim(logits) != 2:
    raise ValueError(f"logits must be (N, C); got shape {jnp.shape(logits)}. Vmap over "
                     "extra leading axes.")
  n, c = jnp.shape(logits)
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise ValueError(f"logits must be floating point, got {jnp.result_type(logits)}.")
  if jnp.shape(absent_mask) != (c,):
    raise ValueError(f"absent_mask must have shape (C,) = ({c},) to match logits; got "
                     f"{jnp.shape(absent_mask)}.")
  if jnp.result_type(absent_mask) != jnp.bool_:
    raise ValueError(f"absent_mask must be bool (True = absent class); got dtype "
                     f"{jnp.result_type(absent_mask)}. Build it with "
                     "jnp.zeros(C, bool).at[absent_ids].set(True).")
  if class_mask is not None:
    if jnp.shape(class_mask) != (c,) or jnp.result_type(class_mask) != jnp.bool_:
      raise ValueError(f"class_mask must be a bool array of shape ({c},); got "
                       f"{jnp.shape(class_mask)} {jnp.result_type(class_mask)}.")
  if labels is not None:
    if jnp.shape(labels) != (n,):
      raise ValueError(f"labels must have shape (N,) = ({n},) to match logits; got "
                       f"{jnp.shape(labels)}.")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
      raise ValueError(f"labels must be integers, got {jnp.result_type(labels)}.")

  absent = _concrete(absent_mask)
  keep = np.ones(c, bool) if class_mask is None else _concrete(class_mask)
  if absent is not None and keep is not None:
    if not np.any(~absent & keep):
      raise ValueError("The seen set S is empty: absent_mask marks every "
                       "(kept) class as absent.")
    if not np.any(absent & keep):
      raise ValueError("The absent set U is empty: absent_mask marks no "
                       "(kept) class as absent.")
  lab = None if labels is None else _concrete(labels)
  if lab is not None and lab.size:
    if lab.min() < 0 or lab.max() >= c:
      raise ValueError(f"labels must lie in [0, C) = [0, {c}); got range "
                       f"[{lab.min()}, {lab.max()}].")
    if keep is not None and not np.all(keep[lab]):
      raise ValueError("Some labels are classes that class_mask drops; keep "
                       "them in class_mask or remove those samples.")


def _validate_gamma(gamma, name="gamma"):
  g = _concrete(gamma)
  if g is not None and not np.all(np.isfinite(g)):
    raise ValueError(f"{name} must be finite; got {g}.")


def _class_rows(absent_mask, class_mask):
  """(C,) masks of S and U after class_mask."""
  keep = jnp.ones_like(absent_mask) if class_mask is None else class_mask
  return keep & ~absent_mask, keep & absent_mask


# --------------------------------------------------------------------------
# Shift.


def shift_absent(logits, absent_mask, gamma):
  """Adds γ to the logits of absent classes.

  Args:
    logits: (..., C) float.
    absent_mask: (C,) bool, True for classes in U.
    gamma: scalar (must be finite).

  Returns:
    (..., C): ``z + γ·1[c ∈ U]``.
  """
  if jnp.shape(absent_mask) != jnp.shape(logits)[-1:]:
    raise ValueError(f"absent_mask shape {jnp.shape(absent_mask)} does not match the class "
                     f"axis of logits {jnp.shape(logits)}.")
  if jnp.ndim(gamma) != 0:
    raise ValueError(f"gamma must be a scalar; got shape {jnp.shape(gamma)}. "
                     "Use jax.vmap for several γ.")
  _validate_gamma(gamma)
  gamma = jnp.asarray(gamma, jnp.result_type(logits))
  # where, not z + γ·mask: keeps -inf logits -inf and avoids 0·γ surprises.
  return jnp.where(absent_mask, logits + gamma, logits)


# --------------------------------------------------------------------------
# Per-sample reduction.


class SampleStats(NamedTuple):
  """What a sample contributes to any γ; every field is (N,).

  The first five fields are (max_S, s_correct, max_U, u_correct, is_absent).
  """
  max_s: Array  # float: max logit over S (-inf if none is finite).
  s_correct: Array  # bool: the first arg-max over S is the label.
  max_u: Array  # float: max logit over U.
  u_correct: Array  # bool: the first arg-max over U is the label.
  is_absent: Array  # bool: the label is in U.
  s_first: Array  # bool: best S index < best U index (decides exact ties).


def _blocks(c):
  """(block width B, padded class count) for the two-level arg-max.

  B divides the padded count; it is a divisor of C near sqrt(C) when one lies
  in [8, 128], so no padding (a copy of the logits) is needed for common C.
  """
  if c <= 64:
    return c, c
  divisors = [b for b in range(8, 129) if c % b == 0]
  if divisors:
    return min(divisors, key=lambda b: abs(b - c**0.5)), c
  return 32, -(-c // 32) * 32


def _first_at(x, m, iota, factor):
  """First index along the last axis with x == m (m = the max), or >= size.

  Arithmetic only, so XLA:CPU keeps it vectorised: entries below m get a
  penalty >= 2**51 (any float32 gap > 0 is >= 2**-149); NaN entries are
  ignored or make the result NaN, both caught by the caller's check.
  """
  return jnp.min(iota + ((m[..., None] - x) * factor) * factor, axis=-1)


def _group_argmax_fast(z, bias2, iota_k, iota_b, factor):
  """Max and first arg-max of z + bias2[g] per row and group g; (N, 2) each.

  Returns (m, idx, ok): idx is exact wherever ok; ok is False for rows the
  fast path cannot decide (NaN, ±inf, an all -inf group).
  """
  n = z.shape[0]
  k, b = iota_k.shape[0], iota_b.shape[0]
  if k * b != z.shape[1]:  # C has no good divisor: pad with -inf classes.
    z = jnp.pad(z, ((0, 0), (0, k * b - z.shape[1])), constant_values=-jnp.inf)
  block_max = jnp.max(z.reshape(n, 1, k, b) + bias2.reshape(1, 2, k, b), -1)
  # Keep the (N, 2, K) maxima as their own small array: fused into the
  # consumers below, XLA would rebuild the (N, 2, C) sum for each of them.
  block_max = lax.optimization_barrier(block_max)
  m = jnp.max(block_max, -1)  # (N, 2)
  k_pos = _first_at(block_max, m, iota_k, factor)  # (N, 2)
  ok = jnp.isfinite(m) & (k_pos < k)
  k_star = jnp.where(ok, k_pos, 0.0).astype(jnp.int32)
  # Gather the chosen block of each row and group: contiguous rows of B.
  rows = jnp.arange(n, dtype=jnp.int32)[:, None] * k + k_star
  block = jnp.take(z.reshape(n * k, b), rows.reshape(-1), axis=0, mode="clip").reshape(n, 2, b)
  bias_rows = jnp.arange(2, dtype=jnp.int32)[None, :] * k + k_star
  block_bias = jnp.take(bias2.reshape(2 * k, b), bias_rows.reshape(-1), axis=0, mode="clip").reshape(n, 2, b)
  j_pos = _first_at(block + block_bias, m, iota_b, factor)
  ok &= j_pos < b
  idx = k_star * b + jnp.where(ok, j_pos, 0.0).astype(jnp.int32)
  return m, idx, ok


def _group_argmax_exact(z, seen_cls, absent_cls):
  """Compare-based (N, 2) max and first arg-max; NaN = -inf, +inf = max float."""
  z = jnp.where(jnp.isnan(z), -jnp.inf, z)
  z = jnp.minimum(z, jnp.finfo(z.dtype).max)
  out = []
  for keep in (seen_cls, absent_cls):
    zk = jnp.where(keep, z, -jnp.inf)
    out.append((jnp.max(zk, axis=1), jnp.argmax(zk, axis=1).astype(jnp.int32)))
  return (jnp.stack([out[0][0], out[1][0]], 1), jnp.stack([out[0][1], out[1][1]], 1))


@jax.jit
def _reduce_with_path(logits, labels, seen_cls, absent_cls, bias2, iota_k, iota_b, factor):
  """Jitted core of :func:`reduce_logits`; also says if the fast path held."""
  z = logits.astype(jnp.float32)
  m, idx, ok = _group_argmax_fast(z, bias2, iota_k, iota_b, factor)
  fast = jnp.all(ok)
  m, idx = lax.cond(fast, lambda: (m, idx), lambda: _group_argmax_exact(z, seen_cls, absent_cls))
  stats = SampleStats(max_s=m[:, 0], s_correct=idx[:, 0] == labels, max_u=m[:, 1], u_correct=idx[:, 1] == labels,
                      is_absent=absent_cls[labels], s_first=idx[:, 0] < idx[:, 1])
  return stats, fast


def _row_vectors(absent_mask, class_mask):
  c = absent_mask.shape[0]
  b, c_pad = _blocks(c)
  seen_cls, absent_cls = _class_rows(absent_mask, class_mask)
  pad = (0, c_pad - c)
  bias2 = jnp.stack([
      jnp.pad(jnp.where(seen_cls, 0.0, -jnp.inf), pad, constant_values=-jnp.inf),
      jnp.pad(jnp.where(absent_cls, 0.0, -jnp.inf), pad, constant_values=-jnp.inf)
  ]).astype(jnp.float32)
  iota_k = jnp.arange(c_pad // b, dtype=jnp.float32)
  iota_b = jnp.arange(b, dtype=jnp.float32)
  return (seen_cls, absent_cls, bias2, iota_k, iota_b, jnp.float32(_GAP_FACTOR))


_row_vectors_jit = jax.jit(_row_vectors)


def _reduce(logits, labels, absent_mask, class_mask):
  # The small row vectors come from a separate jitted call: built inside the
  # (N, C) computation, their compares would be fused into its loops.
  return _reduce_with_path(logits, labels, *_row_vectors_jit(absent_mask, class_mask))


def reduce_logits(logits, labels, absent_mask, class_mask=None) -> SampleStats:
  """Reduces (N, C) logits to what every γ needs, in O(N·C).

  Args:
    logits: (N, C) float.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool; False drops a class from the head.

  Returns:
    :class:`SampleStats` of (N,) arrays: (max_s, s_correct, max_u, u_correct,
    is_absent, s_first).
  """
  validate_inputs(logits, labels, absent_mask, class_mask)
  return _reduce(logits, labels, absent_mask, class_mask)[0]


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
  """
  gammas: Array  # float, non-increasing. Valid points: a γ strictly inside
  #   the interval (the midpoint; at the ends the extreme finite breakpoint ±1,
  #   widened for |γ| > 2**16; 0 if no breakpoint is finite). Invalid points:
  #   their breakpoint γ_(k) (may be ±inf).
  acc_seen: Array  # Acc_s/y in [0, 1].
  acc_unseen: Array  # Acc_u/y in [0, 1].
  acc_all: Array  # Acc_y/y in [0, 1].
  valid: Array  # bool: False when the interval is empty (inside a tie
  #   group, or beyond an infinite breakpoint). Only valid points form the
  #   curve; the rest repeat a neighbour's counts and are kept for fixed shapes.


def _sanitised_gaps(stats):
  """(N,) breakpoints; rows with every logit -inf never flip (gap -inf)."""
  dead = jnp.isneginf(stats.max_s) & jnp.isneginf(stats.max_u)
  return jnp.where(dead, -jnp.inf, stats.max_s - stats.max_u), dead


def _order_key(x):
  """int32 keys ordered like the float32 values x (no NaN; -0 equals +0)."""
  bits = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _from_order_key(key):
  """Inverse of :func:`_order_key`."""
  return lax.bitcast_convert_type(key ^ ((key >> 31) & 0x7FFFFFFF), jnp.float32)


def _end_margin(g):
  return jnp.maximum(1.0, jnp.abs(g) * 2.0**-16)


@jax.jit
def curve_from_stats(stats: SampleStats) -> SeenUnseenCurve:
  """Exact curve from per-sample stats in O(N log N); see SeenUnseenCurve."""
  gaps, dead = _sanitised_gaps(stats)
  # A flip to S changes the counts by s_correct - u_correct (0 for dead rows).
  delta = jnp.where(dead, 0, stats.s_correct.astype(jnp.int32) - stats.u_correct.astype(jnp.int32))
  seen = ~stats.is_absent
  d = jnp.stack([jnp.where(seen, delta, 0), jnp.where(seen, 0, delta)], 1)
  # Sort int32 keys (decreasing γ), not floats: XLA:CPU sorts int32 ~4x faster.
  desc = jnp.sort(~_order_key(gaps))
  g = _from_order_key(~desc)  # decreasing breakpoints, bit-exact
  # Each sample's deltas go to the first sorted slot of its breakpoint, so a
  # tie group flips at once: points inside it repeat the counts after it.
  rank = jnp.searchsorted(desc, ~_order_key(gaps), side="left", method="scan_unrolled")
  bins = jax.ops.segment_sum(d, rank, num_segments=gaps.shape[0])
  zero = jnp.zeros((1, 2), jnp.int32)
  cum = jnp.concatenate([zero, jnp.cumsum(bins, axis=0)])  # (N+1, 2)
  cum_seen, cum_unseen = cum[:, 0], cum[:, 1]
  u_ok = stats.u_correct
  base_seen = jnp.sum(u_ok & seen)
  base_unseen = jnp.sum(u_ok & ~seen)
  n_seen = jnp.sum(seen)
  n_unseen = jnp.sum(~seen)
  right_seen = base_seen + cum_seen
  right_unseen = base_unseen + cum_unseen
  acc_seen = right_seen / n_seen
  acc_unseen = right_unseen / n_unseen
  acc_all = (right_seen + right_unseen) / (n_seen + n_unseen)

  inf = jnp.full((1,), jnp.inf, g.dtype)
  hi = jnp.concatenate([inf, g])  # γ_(k), k = 0..N
  lo = jnp.concatenate([g, -inf])  # γ_(k+1)
  valid = hi > lo
  finite_hi, finite_lo = jnp.isfinite(hi), jnp.isfinite(lo)
  mid = 0.5 * hi + 0.5 * lo
  rep = jnp.where(finite_hi & finite_lo, mid,
                  jnp.where(finite_lo, lo + _end_margin(lo), jnp.where(finite_hi, hi - _end_margin(hi), 0.0)))
  gammas = jnp.where(valid, rep, jnp.where(jnp.isinf(hi) & (hi > 0), lo, hi))
  return SeenUnseenCurve(gammas, acc_seen.astype(jnp.float32), acc_unseen.astype(jnp.float32),
                         acc_all.astype(jnp.float32), valid)


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
  return curve_from_stats(reduce_logits(logits, labels, absent_mask, class_mask))


def _forward_fill(x, valid):
  idx = jnp.arange(x.shape[0])
  last = lax.cummax(jnp.where(valid, idx, -1), axis=0)
  first = jnp.argmax(valid)
  return x[jnp.where(last < 0, first, last)]


@jax.jit
def ausuc(curve: SeenUnseenCurve) -> Array:
  """Area under the seen-unseen curve, trapezoid along the γ path, in [0, 1].

  Acc_s/y is the x axis and Acc_u/y the y axis; points are taken in order of
  decreasing γ, so the area is unique even when several points share an
  Acc_s/y. NaN if the curve has NaN accuracies (no S or no U samples).

  Args:
    curve: a :class:`SeenUnseenCurve` (fields (P,)).

  Returns:
    Scalar float32.
  """
  x = _forward_fill(curve.acc_seen, curve.valid)
  y = _forward_fill(curve.acc_unseen, curve.valid)
  return jnp.sum(0.5 * (x[1:] - x[:-1]) * (y[1:] + y[:-1]))


# --------------------------------------------------------------------------
# γ grid.


def _grid_parts(stats):
  ms, mu = stats.max_s, stats.max_u
  dead = jnp.isneginf(ms) & jnp.isneginf(mu)
  ms = jnp.where(dead, 0.0, ms)
  mu = jnp.where(dead, 0.0, mu)
  s_ok = stats.s_correct.astype(jnp.float32)
  u_ok = stats.u_correct.astype(jnp.float32)
  seen = (~stats.is_absent).astype(jnp.float32)
  # Per flip to S: column 0 changes seen hits, column 1 unseen hits.
  w = jnp.stack([(s_ok - u_ok) * seen, (s_ok - u_ok) * (1.0 - seen)], axis=1)
  base = jnp.stack([jnp.sum(u_ok * seen), jnp.sum(u_ok * (1.0 - seen))])
  return ms, mu, w, base, jnp.sum(seen), jnp.sum(1.0 - seen)


def _predicts_seen(ms, mu, s_first, gamma):
  # Exactly argmax(shift_absent(z, γ)): the S class wins if its max beats
  # fl(max_U + γ), or ties with it and comes first in index order.
  thr = mu + gamma
  return (ms > thr) | ((ms == thr) & s_first)


@functools.partial(jax.jit, static_argnames="method")
def grid_from_stats(stats: SampleStats, gammas, method: str = "search") -> dict:
  """Accuracies at each γ from per-sample stats; see evaluate_gamma_grid.

  Args:
    stats: :class:`SampleStats` of (N,) arrays.
    gammas: (G,) floats.
    method: "search" (default): sort γ and binary-search each sample's switch
      point, O(N log G + G log G) time, O(N + G) memory. "vmap": evaluate
      every (γ, sample) pair, O(G·N). Both apply the same comparison, so they
      agree exactly; "vmap" is kept as a cross-check.

  Returns:
    dict of (G,) 'acc_seen', 'acc_unseen', 'acc_all'.
  """
  ms, mu, w, base, n_seen, n_unseen = _grid_parts(stats)
  gammas = jnp.asarray(gammas, jnp.float32)
  g = gammas.shape[0]
  if method == "vmap":

    def one(gamma):
      return base + _predicts_seen(ms, mu, stats.s_first, gamma).astype(jnp.float32) @ w

    hits = jax.vmap(one)(gammas)  # (G, 2)
  elif method == "search":
    order = jnp.argsort(gammas)
    sorted_g = gammas[order]

    # Predicting S is monotone (true, then false) along increasing γ, so each
    # sample's switch index k (number of sorted γ predicting S) is found by
    # bisection: invariant pred(lo - 1) true, pred(hi) false.
    def bisect(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) // 2
      ok = _predicts_seen(ms, mu, stats.s_first, sorted_g[jnp.clip(mid, 0, g - 1)])
      go_right = (lo < hi) & ok
      return (jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~ok, mid, hi))

    lo = jnp.zeros(ms.shape, jnp.int32)
    hi = jnp.full(ms.shape, g, jnp.int32)
    k, _ = lax.fori_loop(0, max(1, int(np.ceil(np.log2(g + 1)))), bisect, (lo, hi))
    # Sample i adds w_i at sorted positions j < k_i: a suffix sum of bins.
    bins = jax.ops.segment_sum(w, k, num_segments=g + 1)  # (G+1, 2)
    from_s = jnp.cumsum(bins[::-1], axis=0)[::-1][1:]  # sum_{k > j}
    hits = jnp.zeros((g, 2), jnp.float32).at[order].set(base + from_s)
  else:
    raise ValueError(f"method must be 'search' or 'vmap'; got {method!r}.")
  return {
      "acc_seen": hits[:, 0] / n_seen,
      "acc_unseen": hits[:, 1] / n_unseen,
      "acc_all": (hits[:, 0] + hits[:, 1]) / (n_seen + n_unseen),
  }


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
  if jnp.ndim(gammas) != 1:
    raise ValueError(f"gammas must be (G,); got shape {jnp.shape(gammas)}.")
  _validate_gamma(gammas, "gammas")
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
    they raise.
  """
  validate_inputs(train_logits, train_labels, absent_mask, class_mask)
  lab = _concrete(train_labels)
  absent = _concrete(absent_mask)
  if lab is not None and absent is not None and np.any(absent[lab]):
    raise ValueError("alg_gamma takes fine-tuning TRAINING data, which holds S samples only; "
                     f"{int(np.sum(absent[lab]))} labels are absent classes. Using test "
                     "data with U samples leaks them (see paper.md).")
  keep = _concrete(class_mask) if class_mask is not None else (None if absent is None else np.ones_like(absent))
  if absent is not None and keep is not None and np.sum(~absent & keep) < 2:
    raise ValueError("alg_gamma needs at least 2 seen classes (the mean over "
                     "non-ground-truth S classes is empty otherwise).")
  z = _concrete(train_logits)
  if z is not None and not np.all(np.isfinite(z[:, keep] if keep is not None else z)):
    raise ValueError("alg_gamma needs finite logits; got NaN or inf.")
  return _alg(train_logits, train_labels, absent_mask, jnp.ones_like(absent_mask) if class_mask is None else class_mask)


@jax.jit
def _alg(z, labels, absent_mask, class_mask):
  seen_cls, absent_cls = _class_rows(absent_mask, class_mask)
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
  tau = _concrete(acc_pseudo_absent_threshold)
  if tau is not None and not (np.ndim(tau) == 0 and 0.0 <= tau <= 1.0):
    raise ValueError(f"acc_pseudo_absent_threshold must be a scalar in [0, 1]; got {tau}. "
                     "If it is a percentage, divide by 100.")
  ok = curve.valid & (curve.acc_unseen >= acc_pseudo_absent_threshold)
  best, found = _best_point(curve, ok)
  return jnp.where(found, curve.gammas[best], jnp.nan), found


@jax.jit
def pcv_gamma(gammas_k, found_k):
  """Mean of γ_k over the splits that found one.

  Args:
    gammas_k: (K,) floats from :func:`pcv_select`.
    found_k: (K,) bool.

  Returns:
    Scalar; NaN when no split found a γ (nothing to average: choose another
    rule, e.g. ALG, and say so).
  """
  if jnp.shape(gammas_k) != jnp.shape(found_k) or jnp.ndim(gammas_k) != 1:
    raise ValueError(f"gammas_k and found_k must both be (K,); got "
                     f"{jnp.shape(gammas_k)} and {jnp.shape(found_k)}.")
  total = jnp.sum(jnp.where(found_k, gammas_k, 0.0))
  return total / jnp.sum(found_k)
