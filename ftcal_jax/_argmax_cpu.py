"""Per-group max and first arg-max of logit rows, fast on XLA:CPU.

On XLA:CPU only row reductions built from add/sub/mul/min/max run at vector
speed (a compare or select inside makes them ~20x slower). The reduction is
therefore two-level and compare-free: one pass gives per-block maxima of the S
and U logits (blocks of ~sqrt(C) consecutive classes); the first block at the
group max, then the first class inside that block, are found by
``min(index + gap * 2**100 * 2**100)``, which is exactly the first arg-max
because any nonzero float32 gap is >= 2**-149. Only the chosen block of each
row is gathered again, so z is read once. The curve sorts int32 order keys
(XLA:CPU sorts int32 ~4x faster than float32). Rows the fast path cannot decide
(NaN, ±inf, an empty class group) are flagged for the exact compare-based
:func:`group_argmax_exact`.
"""

import jax.numpy as jnp
from jax import lax

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
  penalty >= 2**51 (any float32 gap > 0 is >= 2**-149); NaN entries are
  ignored or make the result NaN, both caught by the caller's check.
  """
  return jnp.min(iota + ((m[..., None] - x) * factor) * factor, axis=-1)


def group_argmax_fast(z, bias2, iota_k, iota_b, factor):
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


def group_argmax_exact(z, seen_cls, absent_cls):
  """Compare-based (N, 2) max and first arg-max; NaN = -inf, +inf = max float."""
  z = jnp.where(jnp.isnan(z), -jnp.inf, z)
  z = jnp.minimum(z, jnp.finfo(z.dtype).max)
  out = []
  for keep in (seen_cls, absent_cls):
    zk = jnp.where(keep, z, -jnp.inf)
    out.append((jnp.max(zk, axis=1), jnp.argmax(zk, axis=1).astype(jnp.int32)))
  return (jnp.stack([out[0][0], out[1][0]], 1), jnp.stack([out[0][1], out[1][1]], 1))


def row_vectors(seen_cls, absent_cls):
  """The small (C,)-sized operands of :func:`group_argmax_fast`.

  Returns (bias2, iota_k, iota_b, factor): bias2 (2, C_pad) is 0 on the
  group's classes and -inf elsewhere (padding included).
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
  return bias2, iota_k, iota_b, jnp.float32(GAP_FACTOR)


def order_key(x):
  """int32 keys ordered like the float32 values x (no NaN; -0 equals +0)."""
  bits = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int32)
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def from_order_key(key):
  """Inverse of :func:`order_key`."""
  return lax.bitcast_convert_type(key ^ ((key >> 31) & 0x7FFFFFFF), jnp.float32)
