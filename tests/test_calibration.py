"""Tests for ftcal_jax.calibration against hand values and a brute-force sweep."""

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import _argmax_cpu
from ftcal_jax import calibration as cal
import curve_points  # pylint: disable=g-bad-import-order  (tests/curve_points.py)

# ---------------------------------------------------------------------------
# Brute-force reference in NumPy: enumerate every interval between distinct
# breakpoints, shift at its midpoint and recompute the argmax.


def _np_argmax_acc(z, y, absent, gamma):
  pred = np.argmax(np.where(absent, z + gamma, z), axis=1)
  hit = pred == y
  seen = ~absent[y]
  with np.errstate(invalid="ignore"):
    return (hit[seen].mean() if seen.any() else np.nan, hit[~seen].mean() if (~seen).any() else np.nan, hit.mean())


def _brute_curve(z, y, absent):
  zs = np.where(absent, -np.inf, z).max(1)
  zu = np.where(absent, z, -np.inf).max(1)
  bps = np.unique(zs - zu)[::-1]  # distinct, decreasing
  edges = np.concatenate([[bps[0] + 1.0], bps, [bps[-1] - 1.0]])
  probes = [edges[0]] + [0.5 * (a + b) for a, b in zip(bps[:-1], bps[1:])] + [edges[-1]]
  pts = np.array([_np_argmax_acc(z, y, absent, g) for g in probes])
  return np.array(probes), pts


def _brute_ausuc(pts):
  x, u = pts[:, 0], pts[:, 1]
  return np.sum(0.5 * (x[1:] - x[:-1]) * (u[1:] + u[:-1]))


@st.composite
def _problems(draw, max_n=12, max_c=6, allow_nan=False):
  """Dyadic logits (exact float arithmetic), with many ties.

  Few distinct shapes, so the jitted functions compile only a few times.
  """
  c = draw(st.sampled_from([2, 3, max_c]))
  n = draw(st.sampled_from([1, 5, max_n]))
  ints = draw(hnp.arrays(np.int32, (n, c), elements=st.integers(-8, 8)))
  z = ints.astype(np.float32) / 4
  if allow_nan:
    nan = draw(hnp.arrays(np.bool_, (n, c)))
    z = np.where(nan, np.nan, z).astype(np.float32)
  absent = draw(hnp.arrays(np.bool_, (c,)))
  hypothesis.assume(absent.any() and (~absent).any())
  y = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, c - 1)))
  return z, y, absent


_SETTINGS = hypothesis.settings(max_examples=60, deadline=None)

# ---------------------------------------------------------------------------
# Exact values.


def _toy():
  # Classes 0, 1 seen; 2 absent. Breakpoints: 3, 1, -3, 0.
  z = jnp.array([[3., 1., 0.], [0., 2., 1.], [1., 0., 4.], [2., 2., 2.]])
  y = jnp.array([0, 2, 2, 1])
  return z, y, jnp.array([False, False, True])


def test_hand_built_curve_and_ausuc():
  curve = cal.seen_unseen_curve(*_toy())
  np.testing.assert_array_equal(curve.gammas, [4., 2., .5, -1.5, -4.])
  np.testing.assert_array_equal(curve.acc_seen, [0., .5, .5, .5, .5])
  np.testing.assert_array_equal(curve.acc_unseen, [1., 1., .5, .5, 0.])
  np.testing.assert_array_equal(curve.acc_all, [.5, .75, .5, .5, .25])
  assert curve.valid.all()
  # Path trapezoid: 0.5 * (1 + 1) * 0.5 from the first step, nothing after.
  assert float(cal.ausuc(curve)) == 0.5


def test_hand_built_gamma_choices():
  z, y, absent = _toy()
  gamma, acc = cal.oracle_gamma(z, y, absent)
  assert (float(gamma), float(acc)) == (2.0, 0.75)
  # ALG on S-only rows: non-true S means 1 and 0, U means 0 and 1.
  assert float(cal.alg_gamma(z[:2], jnp.array([0, 1]), absent)) == 0.0
  curve = cal.seen_unseen_curve(z, y, absent)
  g, found = cal.pcv_select(curve, 0.9)  # only points 0, 1 reach 0.9
  assert bool(found) and float(g) == 2.0
  g, found = cal.pcv_select(curve, 1.0)
  assert bool(found) and float(g) == 2.0
  assert float(cal.pcv_gamma(jnp.array([1., 5., 3.]), jnp.array([True, False, True]))) == 2.0
  assert np.isnan(cal.pcv_gamma(jnp.array([1.]), jnp.array([False])))


def test_pcv_select_not_found():
  curve = cal.seen_unseen_curve(*_toy())
  curve = curve._replace(acc_unseen=curve.acc_unseen * 0)
  g, found = cal.pcv_select(curve, 0.5)
  assert not bool(found) and np.isnan(g)


def test_shift_absent():
  z, _, absent = _toy()
  out = cal.shift_absent(z, absent, 2.0)
  np.testing.assert_array_equal(out[:, :2], z[:, :2])
  np.testing.assert_array_equal(out[:, 2], z[:, 2] + 2)
  neg = cal.shift_absent(jnp.full((1, 3), -jnp.inf), absent, 5.0)
  assert jnp.all(jnp.isneginf(neg))


def test_tie_group_is_one_point():
  # Three samples share breakpoint 0; tie states inside the group are invalid.
  z = jnp.array([[1., 1.], [2., 2.], [0., 0.]])
  y = jnp.array([0, 1, 1])
  absent = jnp.array([False, True])
  curve = cal.seen_unseen_curve(z, y, absent)
  np.testing.assert_array_equal(curve.valid, [True, False, False, True])
  np.testing.assert_array_equal(curve.acc_seen[curve.valid], [0., 1.])
  np.testing.assert_array_equal(curve.acc_unseen[curve.valid], [1., 0.])
  assert float(cal.ausuc(curve)) == 0.5
  # At γ = 0 exactly, argmax order decides: class 0 (S) comes first.
  grid = cal.evaluate_gamma_grid(z, y, absent, jnp.array([0.0]))
  assert float(grid["acc_seen"][0]) == 1.0 and float(grid["acc_unseen"][0]) == 0.0


# ---------------------------------------------------------------------------
# Property tests against the brute force.


@_SETTINGS
@hypothesis.given(_problems())
def test_curve_matches_brute_force(problem):
  z, y, absent = problem
  curve = cal.seen_unseen_curve(z, y, absent)
  gammas, pts = curve_points.valid_points(curve)
  ref_gammas, ref_pts = _brute_curve(z, y, absent)
  np.testing.assert_allclose(pts, ref_pts, atol=1e-6)
  np.testing.assert_allclose(gammas, ref_gammas, atol=1e-6)
  assert np.all(np.diff(np.asarray(curve.gammas)) <= 0)
  np.testing.assert_allclose(cal.ausuc(curve), _brute_ausuc(ref_pts), atol=1e-6)


@_SETTINGS
@hypothesis.given(_problems(), st.lists(st.integers(-40, 40), min_size=9, max_size=9))
def test_grid_matches_argmax_of_shift(problem, grid_ints):
  z, y, absent = problem
  gammas = np.asarray(grid_ints, np.float32) / 8  # hits breakpoints exactly too
  ref = np.array([_np_argmax_acc(z, y, absent, g) for g in gammas])
  for method in ("search", "vmap"):
    out = cal.evaluate_gamma_grid(z, y, absent, gammas, method=method)
    got = np.stack([out["acc_seen"], out["acc_unseen"], out["acc_all"]], 1)
    np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=method)


@_SETTINGS
@hypothesis.given(_problems(allow_nan=True))
def test_nan_logits_count_as_minus_inf(problem):
  z, y, absent = problem
  z_inf = np.where(np.isnan(z), -np.inf, z)
  curve = cal.seen_unseen_curve(z, y, absent)
  gammas, pts = curve_points.valid_points(curve)
  # Each valid point's γ reproduces its accuracies through argmax.
  for g, p in zip(gammas, pts):
    np.testing.assert_allclose(_np_argmax_acc(z_inf, y, absent, g), p, atol=1e-6)
  grid = cal.evaluate_gamma_grid(z, y, absent, gammas)
  np.testing.assert_allclose(grid["acc_all"], pts[:, 2], atol=1e-6)


def test_grid_equals_curve_at_curve_gammas():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(300, 20)).astype(np.float32)
  y = rng.integers(0, 20, 300)
  absent = np.arange(20) >= 12
  curve = cal.seen_unseen_curve(z, y, absent)
  grid = cal.evaluate_gamma_grid(z, y, absent, curve.gammas[curve.valid])
  for key, field in [("acc_seen", curve.acc_seen), ("acc_unseen", curve.acc_unseen), ("acc_all", curve.acc_all)]:
    np.testing.assert_allclose(grid[key], field[curve.valid], atol=1e-6)
  assert int(curve.valid.sum()) == 301  # continuous logits: no tied breakpoints


@pytest.mark.parametrize("which", ["seen", "unseen"])
def test_all_labels_one_side(which):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(30, 4)).astype(np.float32)
  absent = np.array([False, False, True, True])
  y = rng.integers(0, 2, 30) + (2 if which == "unseen" else 0)
  curve = cal.seen_unseen_curve(z, y, absent)
  _, ref = _brute_curve(z, y, absent)
  _, got = curve_points.valid_points(curve)
  np.testing.assert_allclose(got, ref, atol=1e-6)  # NaN side equal NaN
  assert np.isnan(cal.ausuc(curve))


def test_two_classes_and_infinities():
  # C = 2 with -inf: those rows never flip, leaving one finite breakpoint (1).
  z = np.array([[0., -np.inf], [-np.inf, 0.], [1., 0.], [-np.inf, -np.inf]], np.float32)
  y = np.array([0, 1, 1, 0])
  absent = np.array([False, True])
  curve = cal.seen_unseen_curve(z, y, absent)
  gammas, pts = curve_points.valid_points(curve)
  np.testing.assert_array_equal(gammas, [2.0, 0.0])
  for g, p in zip(gammas, pts):
    np.testing.assert_allclose(_np_argmax_acc(z, y, absent, g), p)


def test_plus_inf_is_largest_finite_float():
  z = np.array([[np.inf, 2., np.inf], [0., np.inf, 1.], [1., 0., 3.]], np.float32)
  y = np.array([2, 1, 0])
  absent = np.array([False, True, True])
  big = np.where(np.isinf(z), np.finfo(np.float32).max, z)
  for a, b in zip(cal.seen_unseen_curve(z, y, absent), cal.seen_unseen_curve(big, y, absent)):
    np.testing.assert_array_equal(a, b)


def test_class_mask_drops_classes():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(50, 8)).astype(np.float32)
  keep = np.array([1, 1, 1, 0, 1, 1, 0, 1], bool)
  absent = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
  y = rng.choice(np.flatnonzero(keep), 50)
  masked = cal.seen_unseen_curve(z, y, absent, class_mask=keep)
  dropped = cal.seen_unseen_curve(np.where(keep, z, -np.inf), y, absent)
  for a, b in zip(masked, dropped):
    np.testing.assert_array_equal(a, b)


def test_reduction_matches_numpy_on_both_paths():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(64, 10)).astype(np.float32)
  z[5, 3] = z[5, 6] = z[5].max() + 1  # exact tie at the max
  y = rng.integers(0, 10, 64)
  absent = np.arange(10) % 3 == 0
  z_bad = z.copy()
  z_bad[0, :] = np.nan  # all NaN: every logit -inf
  z_bad[1, 0] = np.nan
  z_bad[2, 4] = np.inf  # treated as the largest finite float
  for logits in (z, z_bad):  # clean: arithmetic path; else compare path
    got = cal.reduce_logits(logits, y, absent)
    zc = np.minimum(np.where(np.isnan(logits), -np.inf, logits), np.finfo(np.float32).max)
    zs, zu = np.where(absent, -np.inf, zc), np.where(absent, zc, -np.inf)
    np.testing.assert_array_equal(got.max_s, zs.max(1))
    np.testing.assert_array_equal(got.max_u, zu.max(1))
    np.testing.assert_array_equal(got.s_correct, zs.argmax(1) == y)
    np.testing.assert_array_equal(got.u_correct, zu.argmax(1) == y)
    np.testing.assert_array_equal(got.s_first, zs.argmax(1) < zu.argmax(1))
    np.testing.assert_array_equal(got.is_absent, absent[y])


def _assert_stats_match_numpy(stats, z, y, absent):
  """SampleStats equal NumPy's per-group max and first arg-max (NaN as -inf, +inf as the largest float)."""
  zc = np.minimum(np.where(np.isnan(z), -np.inf, z), np.finfo(np.float32).max)
  zs, zu = np.where(absent, -np.inf, zc), np.where(absent, zc, -np.inf)
  ps, pu = zs.argmax(1), zu.argmax(1)
  np.testing.assert_array_equal(stats.max_s, zs.max(1))
  np.testing.assert_array_equal(stats.max_u, zu.max(1))
  np.testing.assert_array_equal(stats.s_correct, ps == y)
  np.testing.assert_array_equal(stats.u_correct, pu == y)
  np.testing.assert_array_equal(stats.s_first, ps < pu)


@pytest.mark.parametrize("c", [1000, 67, 40])  # divisor blocks, padded, one block
def test_fast_path_resolves_ties_at_the_max_exactly(c):
  # Exact ties at the group max in the same block, across blocks, across
  # groups, tiny gaps (one ulp, the smallest normal): the two-level arg-max must pick
  # the first index like np.argmax, without falling back to the exact path.
  rng = np.random.default_rng(6)
  n = 200
  z = rng.normal(size=(n, c)).astype(np.float32)
  absent = rng.random(c) < 0.5
  absent[:2] = [False, True]
  top = np.float32(9.0)
  for i in range(n):
    cols = rng.choice(c, size=rng.integers(2, 5), replace=False)
    if i % 4 == 0:  # neighbours: often the same block
      start = rng.integers(0, c - 4)
      cols = np.arange(start, start + 4)
    z[i, cols] = top
    if i % 5 == 0:  # a runner-up one ulp below the max
      z[i, rng.integers(0, c)] = np.nextafter(top, np.float32(0))
  # Smallest normal max, tied, next to zeros. (XLA:CPU flushes subnormals to
  # zero in every op, jnp.argmax included, so they are not tested here.)
  z[-1] = 0.0
  z[-1, 3] = z[-1, 5] = np.finfo(np.float32).tiny
  y = np.where(
      rng.random(n) < 0.5, np.argmax(np.where(absent, -np.inf, z), 1), np.argmax(np.where(absent, z, -np.inf),
                                                                                 1)).astype(np.int32)
  y[::3] = rng.integers(0, c, n)[::3]  # some labels at a tied non-first max
  vectors = _argmax_cpu.row_vectors(jnp.asarray(~absent), jnp.asarray(absent))
  _, _, ok = _argmax_cpu.group_argmax_fast(jnp.asarray(z), *vectors)
  assert bool(ok.all())
  stats = cal.reduce_logits(z, y, absent)
  _assert_stats_match_numpy(stats, z, y, absent)
  # The curve equals the brute force on the tie-heavy rows. (Rows with 1-ulp
  # gaps are left out: the brute force's float z + γ can round them together.)
  keep = (np.arange(n) % 5 != 0) & (np.arange(n) < n - 1)
  _, ref = _brute_curve(z[keep], y[keep], absent)
  _, got = curve_points.valid_points(cal.seen_unseen_curve(z[keep], y[keep], absent))
  np.testing.assert_allclose(got, ref, atol=1e-6)


def test_nan_and_inf_inside_wide_rows():
  # NaN/inf in the middle of vectorised rows (not just short tails) must give
  # NaN = -inf and +inf = max float, whichever path handles them.
  rng = np.random.default_rng(7)
  z = rng.normal(size=(50, 1000)).astype(np.float32)
  absent = np.arange(1000) % 2 == 1
  y = rng.integers(0, 1000, 50).astype(np.int32)
  for i, j in enumerate([17, 499, 500, 998, 64]):
    z[i, j] = np.nan
    z[10 + i, j] = np.inf
    z[20 + i, j:j + 2] = np.inf
  for i, j in enumerate([2, 33, 501, 998]):
    # The row max just before a NaN: a reduction whose NaN handling were not
    # sticky (max(acc, NaN) = NaN, then max(NaN, x) = x) would lose it.
    z[40 + i, j - 2:j] = 50.0
    z[40 + i, j] = np.nan
  z[30, :] = np.nan
  z[31, ::2] = -np.inf  # every S logit -inf
  got = cal.reduce_logits(z, y, absent)
  _assert_stats_match_numpy(got, z, y, absent)


def test_curve_tie_groups_and_signed_zero():
  # Many samples share a breakpoint (also -0 vs +0): the int32-key sort must
  # keep each group together and report the counts after the whole group.
  z = np.array([[0., 0.], [-0., 0.], [0., -0.], [1., 0.], [1., 0.], [0., 1.]], np.float32)
  y = np.array([0, 1, 0, 0, 1, 1])
  absent = np.array([False, True])
  curve = cal.seen_unseen_curve(z, y, absent)
  np.testing.assert_array_equal(curve.valid, [1, 0, 1, 0, 0, 1, 1])
  gammas, pts = curve_points.valid_points(curve)
  ref_gammas, ref_pts = _brute_curve(z, y, absent)
  np.testing.assert_array_equal(gammas, ref_gammas)
  np.testing.assert_allclose(pts, ref_pts, atol=1e-7)
  # Invalid points inside a group repeat the counts after the group.
  np.testing.assert_array_equal(curve.acc_all[3:5], curve.acc_all[5])


# ---------------------------------------------------------------------------
# jit / vmap / retracing.


def test_no_retracing_and_jit_of_public_api():

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(z, y, absent):
    curve = cal.seen_unseen_curve(z, y, absent)
    grid = cal.evaluate_gamma_grid(z, y, absent, jnp.linspace(-2, 2, 5))
    return cal.ausuc(curve), grid["acc_all"]

  rng = np.random.default_rng(4)
  absent = np.arange(6) >= 3
  for _ in range(3):
    z = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 6, 20).astype(np.int32)
    run(z, y, absent)
  # The library's own jitted cores compile once per shape too.
  cal.seen_unseen_curve(z, y, absent)
  before = cal._reduce_jit._cache_size()
  for _ in range(3):
    z = rng.normal(size=(20, 6)).astype(np.float32)
    cal.seen_unseen_curve(z, y, absent)
  assert cal._reduce_jit._cache_size() == before


def test_vmap_over_logit_sets():
  rng = np.random.default_rng(5)
  zs = rng.normal(size=(4, 25, 5)).astype(np.float32)
  ys = rng.integers(0, 5, (4, 25)).astype(np.int32)
  absent = np.array([False, True, False, True, False])
  batched = jax.vmap(cal.seen_unseen_curve, in_axes=(0, 0, None))(zs, ys, absent)
  aus = jax.vmap(cal.ausuc)(batched)
  for i in range(4):
    one = cal.seen_unseen_curve(zs[i], ys[i], absent)
    np.testing.assert_allclose(aus[i], cal.ausuc(one), atol=1e-7)
    np.testing.assert_array_equal(batched.acc_all[i], one.acc_all)
