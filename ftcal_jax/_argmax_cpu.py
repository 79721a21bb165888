"""Per-group max and first arg-max of logit rows, fast on XLA:CPU.

On XLA:CPU only row reductions built from add/sub/mul/min/max run at vector
speed: a compare or select inside makes them ~20x slower, and a materialised
(N, C) temporary costs ~10 reductions. The reduction is therefore two-level and
compare-free: one pass gives per-block maxima of the S and U logits (blocks of
~sqrt(C) consecutive classes); the first block at the group max, then the first
class inside that block, are found by ``min(index + gap * 2**100 * 2**100)``,
which is exactly the first arg-max because any nonzero float32 gap is >=
2**-149. Only the chosen block of each row is gathered again, so z is read once.

The vectorised max of XLA:CPU does not propagate NaN: a NaN resets the running
maximum, so a row with NaN can get neither NaN nor its true max. The same pass
therefore sums ``z * 0`` per row (NaN exactly when the row holds a NaN or ±inf;
additions propagate NaN in any order; a -inf logit flags its row too, which
only costs time). If any row is flagged, the batch is
reduced again from a sanitised copy (NaN -> -inf, +inf -> the largest float)
and the flagged rows take those values. The decision is one ``lax.cond`` whose
predicate is hoisted over ``jax.vmap`` batches (:mod:`ftcal_jax._batch_cond`),
so vmap does not run both branches. Other backends get the plain compare-based
arg-max, chosen at trace time.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ftcal_jax import _batch_cond

# Two factors that turn any nonzero float32 gap (>= 2**-149) into >= 2**51,
# far above any class index, and big gaps into +inf; applied as two multiplies
# by a runtime scalar so XLA cannot fold them into one infinite constant.
GAP_FACTOR = 2.0**100


def blocks(c):
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


def first_at(x, m, iota, factor):
  """First index along the last axis with x == m (m = the max), or >= size.

  Arithmetic only, so XLA:CPU keeps it vectorised: entries below m get a
  penalty >= 2**51 (any float32 gap > 0 is >= 2**-149).
  """
  return jnp.min(iota + ((m[..., None] - x) * factor) * factor, axis=-1)


def row_vectors(seen_cls, absent_cls):
  """The small (C,)-sized operands of :func:`group_argmax_fast`.

  Returns (bias2, iota_k, iota_b, factor): bias2 (2, C_pad) is 0 on the
  group's classes and -inf elsewhere (padding included). They pass an
  optimization barrier: built inside the caller's trace, their compares would
  otherwise be fused into the (N, C) loops, and the factor folded to a constant.
  """
  c = seen_cls.shape[0]
  b, c_pad = blocks(c)
  pad = (0, c_pad - c)
  bias2 = jnp.stack([
      jnp.pad(jnp.where(seen_cls, 0.0, -jnp.inf), pad, constant_values=-jnp.inf),
      jnp.pad(jnp.where(absent_cls, 0.0, -jnp.inf), pad, constant_values=-jnp.inf)
  ]).astype(jnp.float32)
  iota_k = jnp.arange(c_pad // b, dtype=jnp.float32)
  iota_b = jnp.arange(b, dtype=jnp.float32)
  return lax.optimization_barrier((bias2, iota_k, iota_b, jnp.float32(GAP_FACTOR)))


def group_argmax_fast(z, bias2, iota_k, iota_b, factor, flag_non_finite=True):
  """Max and first arg-max of z + bias2[g] per row and group g; (N, 2) each.

  Returns (m, idx, ok): idx is exact wherever ok; ok is False for rows the
  fast path cannot decide: an all -inf group, +inf, and (unless
  flag_non_finite is False, for rows known to hold no NaN) NaN or ±inf.
  """
  n = z.shape[0]
  k, b = iota_k.shape[0], iota_b.shape[0]
  # NaN exactly where the row holds NaN or ±inf (summed in two stages, which
  # XLA:CPU vectorises; a plain row sum is ~3x slower).
  c = z.shape[1]
  if flag_non_finite:
    poison = jnp.sum(jnp.sum((z * 0.0).reshape(n, c // b, b), 1), 1) if c % b == 0 else jnp.sum(z * 0.0, 1)
  if k * b != z.shape[1]:  # C has no good divisor: pad with -inf classes.
    z = jnp.pad(z, ((0, 0), (0, k * b - z.shape[1])), constant_values=-jnp.inf)
  block_max = jnp.max(z.reshape(n, 1, k, b) + bias2.reshape(1, 2, k, b), -1)
  # Keep the (N, 2, K) maxima as their own small array: fused into the
  # consumers below, XLA would rebuild the (N, 2, C) sum for each of them.
  block_max = lax.optimization_barrier(block_max)
  m = jnp.max(block_max, -1)  # (N, 2)
  k_pos = first_at(block_max, m, iota_k, factor)  # (N, 2)
  ok = jnp.isfinite(m) & (k_pos < k)
  if flag_non_finite:
    ok &= ~jnp.isnan(poison)[:, None]
  k_star = jnp.where(ok, k_pos, 0.0).astype(jnp.int32)
  # Gather the chosen block of each row and group: contiguous rows of B.
  rows = jnp.arange(n, dtype=jnp.int32)[:, None] * k + k_star
  block = jnp.take(z.reshape(n * k, b), rows.reshape(-1), axis=0, mode="clip").reshape(n, 2, b)
  bias_rows = jnp.arange(2, dtype=jnp.int32)[None, :] * k + k_star
  block_bias = jnp.take(bias2.reshape(2 * k, b), bias_rows.reshape(-1), axis=0, mode="clip").reshape(n, 2, b)
  j_pos = first_at(block + block_bias, m, iota_b, factor)
  ok &= j_pos < b
  idx = k_star * b + jnp.where(ok, j_pos, 0.0).astype(jnp.int32)
  return m, idx, ok


def sanitise(z):
  """NaN -> -inf and +inf -> the largest finite float (the module's rules)."""
  return jnp.minimum(jnp.where(jnp.isnan(z), -jnp.inf, z), jnp.finfo(z.dtype).max)


def group_argmax_exact(z, seen_cls, absent_cls):
  """Compare-based (N, 2) max and first arg-max; NaN = -inf, +inf = max float."""
  z = sanitise(z)
  out = []
  for keep in (seen_cls, absent_cls):
    zk = jnp.where(keep, z, -jnp.inf)
    out.append((jnp.max(zk, axis=1), jnp.argmax(zk, axis=1).astype(jnp.int32)))
  return (jnp.stack([out[0][0], out[1][0]], 1), jnp.stack([out[0][1], out[1][1]], 1))


def _redo_flagged(operands):
  """Recomputes the flagged rows from a sanitised copy; others keep theirs."""
  z, vectors, m, idx, ok = operands
  m2, idx2, _ = group_argmax_fast(sanitise(z), *vectors, flag_non_finite=False)
  # An all -inf group: jnp.argmax's answer is index 0.
  idx2 = jnp.where(jnp.isneginf(m2), 0, idx2)
  return jnp.where(ok, m, m2), jnp.where(ok, idx, idx2)


def _keep(operands):
  return operands[2], operands[3]


# Under vmap, one predicate for the whole batch (see _batch_cond).
_fix_if_flagged = _batch_cond.batch_cond(_redo_flagged, _keep)


def group_argmax(z, seen_cls, absent_cls):
  """(N, 2) max and first arg-max over S and over U of (N, C) float32 logits.

  NaN counts as -inf, +inf as the largest float; an all -inf group gives
  (-inf, 0), like ``jnp.argmax``.
  """
  if jax.default_backend() != "cpu":
    return group_argmax_exact(z, seen_cls, absent_cls)
  vectors = row_vectors(seen_cls, absent_cls)
  m, idx, ok = group_argmax_fast(z, *vectors)
  return _fix_if_flagged(~jnp.all(ok), (z, vectors, m, idx, ok))


def order_key(x):
  """int32 keys ordered like the float32 values x (no NaN; -0 equals +0)."""
  bits = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def from_order_key(key):
  """Inverse of :func:`order_key`."""
  return lax.bitcast_convert_type(key ^ ((key >> 31) & 0x7FFFFFFF), jnp.float32)
