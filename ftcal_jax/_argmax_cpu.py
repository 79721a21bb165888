"""Per-group max and first arg-max of logit rows, fast on XLA:CPU.

On XLA:CPU only row reductions built from add/sub/mul/min/max run at vector
speed: a compare or select inside makes them ~20x slower, and a materialised
(N, C) temporary costs ~10 reductions. The reduction is therefore two-level and
compare-free: one pass gives per-block maxima of the S and U logits (blocks of
~sqrt(C) consecutive classes); the first block at the group max, then the first
class inside that block, are found by ``min(index + gap * 2**100 * 2**100)``,
which is exactly the first arg-max because any nonzero float32 gap is >=
2**-149. Only the chosen block of each row is gathered again, so this pass reads
z once (the non-finite check below is one more read).

The vectorised max of XLA:CPU does not propagate NaN: a NaN resets the running
maximum, so a row with NaN can get neither NaN nor its true max. Non-finite
rows are therefore found first, by one matrix-vector product with a vector of
zeros (``0 * NaN`` and ``0 * ±inf`` are NaN, and a dot propagates NaN in any
order; this costs about one read of z, half the cost of a row sum of ``z * 0``).
A batch without them takes the fast pass directly. A batch with them is reduced
chunk by chunk (~2 MB of rows each, so the cleaned copy stays in cache instead
of costing a fresh (N, C) buffer) from a sanitised copy: NaN -> -inf, +inf ->
the largest float. The decision is one ``lax.cond`` whose predicate is hoisted
over ``jax.vmap`` batches (:mod:`ftcal_jax._batch_cond`), so vmap does not run
both branches. Other backends get the plain compare-based arg-max, chosen at
trace time.
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

  Returns (bias2, iota_k, iota_b, factor, zeros): bias2 (2, C_pad) is 0 on the
  group's classes and -inf elsewhere (padding included); zeros (C,) finds
  non-finite rows (:func:`non_finite_rows`). They pass an
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
  zeros = jnp.zeros((c,), jnp.float32)
  return lax.optimization_barrier((bias2, iota_k, iota_b, jnp.float32(GAP_FACTOR), zeros))


def non_finite_rows(z, zeros):
  """(N,) bool: the row holds a NaN or ±inf (z @ 0 is NaN exactly then)."""
  return jnp.isnan(z @ zeros)


def group_argmax_fast(z, bias2, iota_k, iota_b, factor, zeros=None):
  """Max and first arg-max of z + bias2[g] per row and group g; (N, 2) each.

  Exact for rows without NaN or +inf. Returns (m, idx, ok): idx is exact
  wherever ok; ok is False where the fast path cannot decide (an all -inf
  group, +inf). zeros is not used (it lets callers pass *row_vectors(...)).
  """
  del zeros
  n = z.shape[0]
  k, b = iota_k.shape[0], iota_b.shape[0]
  if k * b != z.shape[1]:  # C has no good divisor: pad with -inf classes.
    z = jnp.pad(z, ((0, 0), (0, k * b - z.shape[1])), constant_values=-jnp.inf)
  block_max = jnp.max(z.reshape(n, 1, k, b) + bias2.reshape(1, 2, k, b), -1)
  # Keep the (N, 2, K) maxima as their own small array: fused into the
  # consumers below, XLA would rebuild the (N, 2, C) sum for each of them.
  block_max = lax.optimization_barrier(block_max)
  m = jnp.max(block_max, -1)  # (N, 2)
  k_pos = first_at(block_max, m, iota_k, factor)  # (N, 2)
  ok = jnp.isfinite(m) & (k_pos < k)
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


def _decided(m, idx, ok):
  # An all -inf group: jnp.argmax's answer is index 0.
  return m, jnp.where(ok, idx, 0)


def _reduce_clean(operands):
  z, vectors = operands
  return _decided(*group_argmax_fast(z, *vectors))


def chunk_rows(n, c):
  """Rows per chunk of the non-finite path: about 2 MB of float32 logits."""
  return max(1, min(n, (1 << 19) // max(c, 1)))


def _reduce_sanitised(operands):
  """The fast pass over sanitised chunks of rows; right for any logits."""
  z, vectors = operands
  n, c = z.shape
  r = chunk_rows(n, c)

  def chunk(i, out):
    start = jnp.minimum(i * r, n - r)  # the last chunk overlaps its neighbour
    clean = lax.optimization_barrier(sanitise(lax.dynamic_slice_in_dim(z, start, r)))
    m, idx = _decided(*group_argmax_fast(clean, *vectors))
    return (lax.dynamic_update_slice_in_dim(out[0], m, start,
                                            0), lax.dynamic_update_slice_in_dim(out[1], idx, start, 0))

  init = (jnp.zeros((n, 2), jnp.float32), jnp.zeros((n, 2), jnp.int32))
  return lax.fori_loop(0, -(-n // r), chunk, init)


# Under vmap, one predicate for the whole batch (see _batch_cond).
_reduce = _batch_cond.batch_cond(_reduce_sanitised, _reduce_clean)


def group_argmax(z, seen_cls, absent_cls):
  """(N, 2) max and first arg-max over S and over U of (N, C) float32 logits.

  NaN counts as -inf, +inf as the largest float; an all -inf group gives
  (-inf, 0), like ``jnp.argmax``.
  """
  if jax.default_backend() != "cpu":
    return group_argmax_exact(z, seen_cls, absent_cls)
  vectors = row_vectors(seen_cls, absent_cls)
  return _reduce(jnp.any(non_finite_rows(z, vectors[-1])), (z, vectors))


def order_key(x):
  """int32 keys ordered like the float32 values x (no NaN; -0 equals +0)."""
  bits = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def from_order_key(key):
  """Inverse of :func:`order_key`."""
  return lax.bitcast_convert_type(key ^ ((key >> 31) & 0x7FFFFFFF), jnp.float32)
