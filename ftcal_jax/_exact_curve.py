"""The seen-unseen curve from per-sample stats, exact for float32 inputs.

Breakpoints γ_i = max_S z − max_U z are kept as unevaluated pairs (hi, lo) of
float32 with hi = fl(γ_i) and hi + lo = γ_i exactly (Knuth's two-sum), so two
breakpoints tie only when they are truly equal. Because hi is the rounded
value, pairs order exactly like the reals they stand for when compared
lexicographically (hi first, then lo); :mod:`ftcal_jax._pair_order` finds
that order from int32 order keys.

Limits, all outside float32's normal range: XLA:CPU flushes subnormal results
to zero, so an error term below 2**-126 is lost; a gap whose magnitude exceeds
the largest float (logits near ±3.4e38 of opposite signs) becomes ±inf.
"""

import jax
import jax.numpy as jnp
from jax import lax

from ftcal_jax import _argmax_cpu
from ftcal_jax import _pair_order


def exact_gaps(max_s, max_u):
  """(N,) pairs (hi, lo) with hi + lo = max_s − max_u exactly, and dead rows.

  Rows with every logit -inf never flip: their gap is (-inf, 0). Infinite
  gaps get lo = 0.
  """
  dead = jnp.isneginf(max_s) & jnp.isneginf(max_u)
  hi = max_s - max_u
  # Two-sum of max_s and -max_u: the rounding error of hi, exactly.
  back = hi - max_s
  lo = (max_s - (hi - back)) + (-max_u - back)
  lo = jnp.where(jnp.isfinite(hi), lo, 0.0)
  return jnp.where(dead, -jnp.inf, hi), lo, dead


def _end_margin(g):
  return jnp.maximum(1.0, jnp.abs(g) * 2.0**-16)


def _representatives(hi, lo, valid):
  """(N+1,) γ per point from the (N+2,) extended sorted pairs (see curve)."""
  up_h, up_l, dn_h, dn_l = hi[:-1], lo[:-1], hi[1:], lo[1:]
  finite_up, finite_dn = jnp.isfinite(up_h), jnp.isfinite(dn_h)
  # The midpoint of the exact interval, rounded once more to float32.
  mid = (0.5 * up_h + 0.5 * dn_h) + 0.5 * (up_l + dn_l)
  rep = jnp.where(finite_up & finite_dn, mid,
                  jnp.where(finite_dn, dn_h + _end_margin(dn_h), jnp.where(finite_up, up_h - _end_margin(up_h), 0.0)))
  rep = jnp.where(valid, rep, jnp.where(jnp.isposinf(up_h), dn_h, up_h))
  # A midpoint can round past its neighbour's breakpoint by an ulp; the curve
  # promises non-increasing γ.
  return _pair_order.cummin(rep)


def _ordered(key_hi, key_lo, delta, seen):
  """Sorted pairs and (N+1,) cumulative S and U count changes along them."""
  n = key_hi.shape[0]
  slot, hi_sorted = _pair_order.pair_slots(key_hi, key_lo)
  bins = jax.ops.segment_sum(jnp.stack([jnp.where(seen, delta, 0), jnp.where(seen, 0, delta)], 1), slot, n)
  cum = jnp.concatenate([jnp.zeros((1, 2), jnp.int32), _pair_order.cumsum(bins)])
  # Each slot takes the lo of its tie group, written at the group's first slot.
  iota = jnp.arange(n, dtype=jnp.int32)
  lo_at = jnp.zeros((n,), jnp.int32).at[slot].set(key_lo)
  first = jnp.zeros((n,), bool).at[slot].set(True)
  return hi_sorted, lo_at[_pair_order.cummax(jnp.where(first, iota, 0))], cum[:, 0], cum[:, 1]


def curve_fields(stats):
  """(gammas, acc_seen, acc_unseen, acc_all, valid), each (N+1,); see SeenUnseenCurve."""
  hi, lo, dead = exact_gaps(stats.max_s, stats.max_u)
  n = hi.shape[0]
  # A flip to S changes the counts by s_correct - u_correct (0 for dead rows).
  delta = jnp.where(dead, 0, stats.s_correct.astype(jnp.int32) - stats.u_correct.astype(jnp.int32))
  seen = ~stats.is_absent
  # Sort by decreasing (hi, lo) on int32 keys (XLA:CPU sorts int32 ~4x faster
  # than float32).
  key_hi, key_lo = _argmax_cpu.order_key(hi), _argmax_cpu.order_key(lo)
  k_hi, k_lo, cum_seen, cum_unseen = _ordered(key_hi, key_lo, delta, seen)
  inf = jnp.full((1,), jnp.inf, jnp.float32)
  zero = jnp.zeros((1,), jnp.float32)
  # Extended pairs: +inf, the N sorted breakpoints, -inf. Point k (k = 0..N)
  # holds for γ between pair k and pair k+1, and exists iff they differ.
  hi_x = jnp.concatenate([inf, _argmax_cpu.from_order_key(k_hi), -inf])
  lo_x = jnp.concatenate([zero, _argmax_cpu.from_order_key(k_lo), zero])
  valid = (hi_x[:-1] != hi_x[1:]) | (lo_x[:-1] != lo_x[1:])
  # Points inside a tie group repeat the counts after the whole group: each
  # point reads the cumulative sum at the next group end (or the curve's end).
  idx = jnp.arange(n + 1)
  group_end = _pair_order.cummin(jnp.where(valid | (idx == 0) | (idx == n), idx, n), reverse=True)
  cum_seen, cum_unseen = cum_seen[group_end], cum_unseen[group_end]
  u_ok = stats.u_correct
  right_seen = jnp.sum(u_ok & seen) + cum_seen
  right_unseen = jnp.sum(u_ok & ~seen) + cum_unseen
  # The barrier keeps the divisions true divisions: XLA turns a division by a
  # constant (N is one) into a multiply by its rounded reciprocal.
  n_seen, n_unseen, n_all = lax.optimization_barrier((jnp.sum(seen), jnp.sum(~seen), jnp.int32(n)))
  return (_representatives(hi_x, lo_x, valid), (right_seen / n_seen).astype(jnp.float32),
          (right_unseen / n_unseen).astype(jnp.float32), ((right_seen + right_unseen) / n_all).astype(jnp.float32),
          valid)
