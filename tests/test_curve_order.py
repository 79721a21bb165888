"""The exact (hi, lo) breakpoint order at users' sizes, in each of its three paths.

``_pair_order.pair_slots`` sorts only the hi keys, then refines hi groups whose
lo differs ("contested") in a small buffer, or falls back to one full two-key
sort when there are too many. Each test states which path its data take and
checks that it does, against float64 NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import _argmax_cpu
from ftcal_jax import _exact_curve
from ftcal_jax import _pair_order
from ftcal_jax import calibration as cal


def _np_slots(key_hi, key_lo):
  """Reference: position in decreasing (hi, lo) order; ties share the first slot."""
  hi, lo = key_hi.astype(np.int64), key_lo.astype(np.int64)
  order = np.lexsort((-lo, -hi))
  pos = np.empty(len(hi), np.int64)
  pos[order] = np.arange(len(hi))
  sorted_pairs = np.stack([hi[order], lo[order]], 1)
  new = np.ones(len(hi), bool)
  new[1:] = np.any(sorted_pairs[1:] != sorted_pairs[:-1], 1)
  first = np.maximum.accumulate(np.where(new, np.arange(len(hi)), 0))
  return first[pos]


def _contested(key_hi, key_lo):
  """How many samples share their hi key with a sample of another lo key."""
  hi, lo = np.asarray(key_hi), np.asarray(key_lo)
  order = np.argsort(hi, kind="stable")
  _, start, count = np.unique(hi[order], return_index=True, return_counts=True)
  lo_sorted = lo[order]
  varies = np.array([np.unique(lo_sorted[s:s + k]).size > 1 for s, k in zip(start, count)])
  return int(count[varies].sum())


def _keys(z, absent):
  """The curve's int32 order keys of the exact gaps of float32 logits."""
  stats = cal.reduce_logits(z, np.zeros(len(z), np.int32), absent)
  hi, lo, _ = _exact_curve.exact_gaps(stats.max_s, stats.max_u)
  return np.asarray(_argmax_cpu.order_key(hi)), np.asarray(_argmax_cpu.order_key(lo))


def _problem(kind, n, c, seed):
  """Fine-tuned-like logits (label boosted, U pushed down), or rounded ones."""
  rng = np.random.default_rng(seed)
  absent = rng.random(c) < 0.5
  absent[:2] = [False, True]
  y = rng.integers(0, c, n).astype(np.int32)
  z = rng.normal(size=(n, c))
  if kind == "rounded":
    z = np.round(z * 2, 1)
  else:
    z[np.arange(n), y] += 3.0
    z[:, absent] -= 2.0
  return z.astype(np.float32), y, absent


# (kind, N, C, which path): random logits at N=50,000 have a few dozen float32
# collisions of different exact gaps; rounded logits have thousands.
CASES = [("normal", 2_000, 50, "rank"), ("normal", 50_000, 100, "buffer"), ("rounded", 20_000, 30, "full")]


@pytest.mark.parametrize("kind,n,c,path", CASES)
def test_pair_slots_match_lexsort_in_each_path(kind, n, c, path):
  z, _, absent = _problem(kind, n, c, seed=n)
  key_hi, key_lo = _keys(z, absent)
  contested = _contested(key_hi, key_lo)
  capacity = _pair_order.contested_capacity(n)
  assert {"rank": contested == 0, "buffer": 0 < contested <= capacity, "full": contested > capacity}[path], contested
  slot, hi_sorted = jax.jit(_pair_order.pair_slots)(key_hi, key_lo)
  np.testing.assert_array_equal(slot, _np_slots(key_hi, key_lo))
  np.testing.assert_array_equal(hi_sorted, np.sort(key_hi)[::-1])


def test_pair_slots_under_vmap_mixing_paths_match_single_calls():
  # Three members, one per path; the batch takes the slowest path for all.
  keys = []
  for kind, seed in (("normal", 1), ("normal", 50_000), ("rounded", 3)):
    z, _, absent = _problem(kind, 50_000, 30 if kind == "rounded" else 100, seed)
    keys.append(_keys(z, absent))
  counts = [_contested(*k) for k in keys]
  assert counts[0] <= _pair_order.contested_capacity(50_000) < counts[2], counts
  key_hi, key_lo = (np.stack(k) for k in zip(*keys))
  slots, _ = jax.jit(jax.vmap(_pair_order.pair_slots))(key_hi, key_lo)
  for i in range(3):
    np.testing.assert_array_equal(slots[i], _np_slots(key_hi[i], key_lo[i]))


def _ref_counts_sorted(z, y, absent):
  """Float64 reference in O(N log N): (P, 2) S and U hit counts per state.

  States follow the distinct exact gaps (float64 differences of float32 logits
  are exact here; checked), largest first; samples with gap >= the state's
  upper end predict their best S class, the rest their best U class.
  """
  z = z.astype(np.float64)
  zs, zu = np.where(absent, -np.inf, z), np.where(absent, z, -np.inf)
  ms, mu = zs.max(1), zu.max(1)
  gap = ms - mu
  assert np.all(gap + mu == ms)
  seen = ~absent[y]
  s_hit, u_hit = zs.argmax(1) == y, zu.argmax(1) == y
  delta = s_hit.astype(np.int64) - u_hit
  order = np.argsort(-gap, kind="stable")
  ends = np.flatnonzero(np.append(np.diff(gap[order]) != 0, True))  # last index of each tie group
  cum_s = np.cumsum(np.where(seen, delta, 0)[order])[ends]
  cum_u = np.cumsum(np.where(seen, 0, delta)[order])[ends]
  base = np.array([(u_hit & seen).sum(), (u_hit & ~seen).sum()])
  return np.concatenate([base[None], base + np.stack([cum_s, cum_u], 1)])


@pytest.mark.parametrize("kind,n,c,path", CASES[1:])
def test_curve_counts_equal_float64_at_user_sizes(kind, n, c, path):
  z, y, absent = _problem(kind, n, c, seed=n + 1)
  curve = cal.seen_unseen_curve(z, y, absent)
  valid = np.asarray(curve.valid)
  seen = ~absent[y]
  got = np.stack([
      np.round(np.asarray(curve.acc_seen, np.float64)[valid] * seen.sum()),
      np.round(np.asarray(curve.acc_unseen, np.float64)[valid] * (~seen).sum())
  ], 1)
  np.testing.assert_array_equal(got, _ref_counts_sorted(z, y, absent))
  # The same curve inside a caller's jit.
  jitted = jax.jit(lambda z, y: cal.seen_unseen_curve(z, y, jnp.asarray(absent)))(z, y)
  for a, b in zip(jitted, curve):
    np.testing.assert_array_equal(a, b)
