"""Tests for ftcal_jax.calibration: NaN/±inf at user sizes, exactness beyond float32, bad input."""

import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import _argmax_cpu
from ftcal_jax import calibration as cal
import curve_points  # pylint: disable=g-bad-import-order  (tests/curve_points.py)


def _toy():
  # Classes 0, 1 seen; 2 absent. Breakpoints: 3, 1, -3, 0.
  z = jnp.array([[3., 1., 0.], [0., 2., 1.], [1., 0., 4.], [2., 2., 2.]])
  y = jnp.array([0, 2, 2, 1])
  return z, y, jnp.array([False, False, True])


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("args, match", [
    ((np.zeros((3, 4), np.float32), np.zeros(2, np.int32), np.array([0, 0, 1, 1], bool)), "labels must have shape"),
    ((np.zeros((3, 4), np.float32), np.array([0, 1, 4]), np.array([0, 0, 1, 1], bool)), r"\[0, C\)"),
    ((np.zeros((3, 4), np.float32), np.array([0, -1, 2]), np.array([0, 0, 1, 1], bool)), r"\[0, C\)"),
    ((np.zeros((3, 4), np.float32), np.zeros(3, np.int32), np.array([0, 1, 1], bool)), "absent_mask must have shape"),
    ((np.zeros((3, 4), np.float32), np.zeros(3, np.int32), np.array([0, 0, 1, 1])), "must be bool"),
    ((np.zeros((3, 4), np.float32), np.zeros(3, np.int32), np.ones(4, bool)), "seen set S is empty"),
    ((np.zeros((3, 4), np.float32), np.zeros(3, np.int32), np.zeros(4, bool)), "absent set U is empty"),
    ((np.zeros((4,), np.float32), np.zeros(3, np.int32), np.zeros(4, bool)), r"\(N, C\)"),
])
def test_bad_inputs_raise(args, match):
  with pytest.raises(ValueError, match=match):
    cal.seen_unseen_curve(*args)


def test_bad_gammas_and_thresholds():
  z, y, absent = _toy()
  with pytest.raises(ValueError, match="finite"):
    cal.evaluate_gamma_grid(z, y, absent, jnp.array([0.0, jnp.inf]))
  with pytest.raises(ValueError, match="finite"):
    cal.shift_absent(z, absent, jnp.nan)
  with pytest.raises(ValueError, match="percentage"):
    cal.pcv_select(cal.seen_unseen_curve(z, y, absent), 45.0)
  with pytest.raises(ValueError, match="TRAINING"):
    cal.alg_gamma(z, y, absent)
  with pytest.raises(ValueError, match="finite logits"):
    cal.alg_gamma(z[:2].at[0, 1].set(jnp.nan), jnp.array([0, 1]), absent)


# ---------------------------------------------------------------------------
# NaN and ±inf at the sizes users have (issue 13, part 1).


def _np_group_stats(z, absent, chunk=4096):
  """Float64 NumPy max and first arg-max per group; NaN = -inf, +inf = max float32."""
  out = [[], [], [], []]
  for start in range(0, z.shape[0], chunk):
    zc = z[start:start + chunk].astype(np.float64)
    zc = np.minimum(np.where(np.isnan(zc), -np.inf, zc), np.finfo(np.float32).max)
    zs, zu = np.where(absent, -np.inf, zc), np.where(absent, zc, -np.inf)
    for lst, val in zip(out, (zs.max(1), zs.argmax(1), zu.max(1), zu.argmax(1))):
      lst.append(val)
  return [np.concatenate(v) for v in out]


def test_nan_reproducer_from_the_issue():
  # Every row: z[0] = 5, z[28] = NaN, 0 elsewhere; the last label is the absent class 29.
  z = np.zeros((100, 30), np.float32)
  z[:, 0], z[:, 28] = 5.0, np.nan
  y = np.zeros(100, np.int32)
  y[-1] = 29
  absent = np.arange(30) == 29
  assert float(cal.ausuc(cal.seen_unseen_curve(z, y, absent))) == 0.5
  assert float(cal.ausuc(cal.seen_unseen_curve(np.where(np.isnan(z), -np.inf, z), y, absent))) == 0.5


@pytest.mark.parametrize("n, c, with_inf", [(500, 30, False), (50_000, 100, False), (5_000, 1_000, False),
                                            (50_000, 1_000, False), (300, 21_843, False), (5_000, 1_000, True),
                                            (300, 21_843, True)])
def test_nan_and_inf_rows_at_user_sizes(n, c, with_inf):
  # NaN only is the case the old fast path got wrong; ±inf also sends the
  # batch through the sanitised second pass.
  rng = np.random.default_rng(n + c)
  z = rng.normal(size=(n, c)).astype(np.float32)
  rows = rng.random(n) < 0.2  # a fifth of the rows hold NaN (and ±inf) somewhere
  for value, frac in ((np.nan, 0.03), (np.inf, 0.005 * with_inf), (-np.inf, 0.01 * with_inf)):
    hit = (rng.random((n, c)) < frac) & rows[:, None]
    z[hit] = value
  if with_inf:
    z[0, :] = np.nan
    z[1, :-1] = np.nan  # one finite logit left
  absent = rng.random(c) < 0.4
  absent[:2] = [False, True]
  y = rng.integers(0, c, n).astype(np.int32)
  stats = cal.reduce_logits(z, y, absent)
  ms, ps, mu, pu = _np_group_stats(z, absent)
  np.testing.assert_array_equal(stats.max_s, ms)
  np.testing.assert_array_equal(stats.max_u, mu)
  np.testing.assert_array_equal(stats.s_correct, ps == y)
  np.testing.assert_array_equal(stats.u_correct, pu == y)
  np.testing.assert_array_equal(stats.s_first, ps < pu)


@pytest.mark.parametrize("n, c", [(50_000, 100), (10_000, 1_000), (200, 21_843)])
def test_non_finite_rows_are_found_one_entry_at_a_time(n, c):
  # One NaN, +inf or -inf at a random column of some rows: the matrix-vector
  # product with zeros must flag exactly those rows, whatever the column.
  rng = np.random.default_rng(n)
  z = rng.normal(size=(n, c)).astype(np.float32)
  rows = np.flatnonzero(rng.random(n) < 0.1)
  z[rows, rng.integers(0, c, rows.size)] = rng.choice([np.nan, np.inf, -np.inf], rows.size)
  vectors = _argmax_cpu.row_vectors(jnp.ones(c, bool), jnp.zeros(c, bool))
  got = jax.jit(_argmax_cpu.non_finite_rows)(z, vectors[-1])
  np.testing.assert_array_equal(got, ~np.isfinite(z).all(1))


def test_nan_rows_under_jit_and_vmap_match_single_calls():
  # One member of the batch has NaN: the hoisted fix must repair it and leave
  # the others as they are, in the caller's jit and under vmap.
  rng = np.random.default_rng(11)
  zs = rng.normal(size=(3, 400, 50)).astype(np.float32)
  zs[1, 5, 7] = np.nan
  zs[1, 9, :] = np.nan
  zs[2, 3, 1] = np.inf
  ys = rng.integers(0, 50, (3, 400)).astype(np.int32)
  absent = np.arange(50) % 3 == 0
  fn = lambda z, y: cal.seen_unseen_curve(z, y, absent)
  batched = jax.jit(jax.vmap(fn))(zs, ys)
  aus = jax.jit(jax.vmap(lambda z, y: cal.ausuc(fn(z, y))))(zs, ys)
  for i in range(3):
    ref = fn(np.where(np.isnan(zs[i]), -np.inf, zs[i]), ys[i])
    for a, b, c in zip(batched, ref, jax.jit(fn)(zs[i], ys[i])):
      np.testing.assert_array_equal(a[i], b)
      np.testing.assert_array_equal(b, c)
    np.testing.assert_allclose(aus[i], cal.ausuc(ref), atol=1e-7)  # summation order may differ
    stats = jax.vmap(cal.reduce_logits, in_axes=(0, 0, None))(zs, ys, absent)
    ms, ps, mu, pu = _np_group_stats(zs[i], absent)
    np.testing.assert_array_equal(stats.max_s[i], ms)
    np.testing.assert_array_equal(stats.s_correct[i], ps == ys[i])
    np.testing.assert_array_equal(stats.u_correct[i], pu == ys[i])


# ---------------------------------------------------------------------------
# Exactness beyond float32 rounding of the gaps (issue 13, part 2).


def test_gaps_equal_in_float32_stay_apart():
  # fl(0.2 - (-2.3)) == fl(4.5 - 2.0) == 2.5, but exactly the first gap is
  # 2.49999995...: the state where only the second sample flipped exists.
  z = np.array([[0.2, -2.3], [4.5, 2.0]], np.float32)
  y = np.array([0, 1])
  absent = np.array([False, True])
  curve = cal.seen_unseen_curve(z, y, absent)
  _, pts = curve_points.valid_points(curve)
  np.testing.assert_array_equal(pts[:, :2], [[0., 1.], [0., 0.], [1., 0.]])
  assert float(cal.ausuc(curve)) == 0.0


def _ref_curve_counts(z, y, absent):
  """Float64 NumPy reference: (P, 2) hit counts on S and U samples, state by state.

  Gaps of float32 logits are exact in float64 for these data (checked). In the
  interval below each distinct gap value g, a sample predicts its best S class
  iff its gap >= g; its best U class otherwise (np.argmax: first index wins).
  Also returns the (P + 1,) interval ends.
  """
  z = np.minimum(np.where(np.isnan(z), -np.inf, z.astype(np.float64)), np.finfo(np.float32).max)
  zs, zu = np.where(absent, -np.inf, z), np.where(absent, z, -np.inf)
  ms, mu = zs.max(1), zu.max(1)
  dead = np.isneginf(ms) & np.isneginf(mu)
  with np.errstate(invalid="ignore"):
    gap = np.where(dead, -np.inf, ms - mu)
  fin = np.isfinite(gap)
  assert np.all(gap[fin] + mu[fin] == ms[fin])  # exact in float64
  ends = np.unique(np.concatenate([[np.inf, -np.inf], gap]))[::-1]
  ps, pu = zs.argmax(1), zu.argmax(1)
  seen = ~absent[y]
  counts = []
  for upper in ends[:-1]:
    hit = np.where(gap >= upper, ps, pu) == y
    counts.append(((hit & seen).sum(), (hit & ~seen).sum()))
  return np.array(counts), ends


def _tie_heavy(kind, n, c, rng):
  z = rng.normal(size=(n, c)) * 2
  if kind == "rounded":
    z = np.round(z, 1)
  elif kind == "mixed":  # magnitudes 1 and 1e4 in the same rows, rounded
    z = np.round(z * np.where(rng.random(c) < 0.5, 1.0, 1e4), 1)
  z = z.astype(np.float32)
  if kind == "bf16":
    z = np.asarray(jnp.asarray(z, jnp.bfloat16))
  elif kind == "f16":
    z = z.astype(np.float16)
  return z


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(st.sampled_from(["rounded", "bf16", "f16", "mixed"]), st.sampled_from([(2000, 10), (4000, 30)]),
                  st.integers(0, 2**31 - 1))
def test_curve_counts_equal_float64_reference_on_tie_heavy_data(kind, shape, seed):
  rng = np.random.default_rng(seed)
  n, c = shape
  z = _tie_heavy(kind, n, c, rng)
  absent = rng.random(c) < 0.5
  absent[:2] = [False, True]
  y = rng.integers(0, c, n).astype(np.int32)
  curve = cal.seen_unseen_curve(z, y, absent)
  gammas, pts = curve_points.valid_points(curve)
  ref, ends = _ref_curve_counts(z, y, absent)
  seen = ~absent[y]
  got = np.stack([np.round(pts[:, 0] * seen.sum()), np.round(pts[:, 1] * (~seen).sum())], 1)
  np.testing.assert_array_equal(got, ref)  # every state, point for point
  # A point's γ reproduces it through shift_absent when its interval is wider
  # than the float32 rounding of z + γ.
  z32 = np.asarray(z, np.float32)
  ulp = np.spacing(np.float32(np.abs(z32).max() + np.abs(ends[np.isfinite(ends)]).max()))
  wide = np.flatnonzero((ends[:-1] - ends[1:]) > 8 * ulp)
  for j in rng.choice(wide, size=min(8, wide.size), replace=False):
    assert ends[j + 1] < gammas[j] < ends[j]
    hit = np.argmax(np.asarray(cal.shift_absent(z32, absent, gammas[j])), 1) == y
    assert ((hit & seen).sum(), (hit & ~seen).sum()) == tuple(ref[j])


# ---------------------------------------------------------------------------
# Smaller defects (issue 13, part 4).


def test_empty_inputs_raise():
  z, y, absent = _toy()
  curve = cal.seen_unseen_curve(z, y, absent)
  with pytest.raises(ValueError, match="empty curve"):
    cal.ausuc(curve._replace(valid=curve.valid & False))
  with pytest.raises(ValueError, match="empty curve"):
    cal.ausuc(cal.SeenUnseenCurve(*(f[:0] for f in curve)))
  with pytest.raises(ValueError, match="at least one training sample"):
    cal.alg_gamma(z[:0], y[:0], absent)
  for method in ("search", "vmap"):
    with pytest.raises(ValueError, match="gammas is empty"):
      cal.evaluate_gamma_grid(z, y, absent, jnp.zeros((0,)), method=method)


def test_shift_absent_refuses_integer_logits():
  with pytest.raises(ValueError, match="floating point"):
    cal.shift_absent(np.array([[1, 2, 3]]), np.array([False, False, True]), 2.7)


def test_array_likes_are_accepted():
  z, y, absent = (np.asarray(a) for a in _toy())
  curve = cal.seen_unseen_curve(z.tolist(), y.tolist(), absent.tolist())
  for a, b in zip(curve, cal.seen_unseen_curve(z, y, absent)):
    np.testing.assert_array_equal(a, b)
  grid = cal.evaluate_gamma_grid(z.tolist(), y.tolist(), absent.tolist(), [0.0, 1.0])
  np.testing.assert_array_equal(grid["acc_all"], cal.evaluate_gamma_grid(z, y, absent, np.array([0.0, 1.0]))["acc_all"])
  assert float(cal.alg_gamma(z[:2].tolist(), [0, 1], absent.tolist())) == 0.0
  assert float(cal.pcv_gamma([1., 5., 3.], [True, False, True])) == 2.0
  np.testing.assert_array_equal(cal.shift_absent(z.tolist(), absent.tolist(), 2.0), cal.shift_absent(z, absent, 2.0))


def test_core_imports_no_training_stack():
  code = ("import sys, ftcal_jax.calibration, ftcal_jax.metrics; "
          "print(sorted(m for m in ('tensorflow', 'flax', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_vmap_mixes_one_key_and_two_key_sorts():
  # Member 0 has float32-equal gaps that differ exactly (two-key sort), member
  # 1 has none; the batch takes the two-key sort for both and must agree.
  rng = np.random.default_rng(12)
  zs = np.stack([_tie_heavy("rounded", 600, 20, rng), rng.normal(size=(600, 20)).astype(np.float32)])
  ys = rng.integers(0, 20, (2, 600)).astype(np.int32)
  absent = np.arange(20) % 2 == 1
  batched = jax.vmap(cal.seen_unseen_curve, in_axes=(0, 0, None))(zs, ys, absent)
  for i in range(2):
    for a, b in zip(batched, cal.seen_unseen_curve(zs[i], ys[i], absent)):
      np.testing.assert_array_equal(a[i], b)


def test_plain_argmax_for_other_backends_matches_numpy():
  # The compare-based kernel that GPU/TPU get (chosen at trace time there).
  rng = np.random.default_rng(13)
  z = rng.normal(size=(300, 70)).astype(np.float32)
  z[rng.random(z.shape) < 0.05] = np.nan
  z[rng.random(z.shape) < 0.01] = np.inf
  z[0, :] = np.nan
  absent = np.arange(70) % 4 == 0
  m, idx = _argmax_cpu.group_argmax_exact(jnp.asarray(z), jnp.asarray(~absent), jnp.asarray(absent))
  ms, ps, mu, pu = _np_group_stats(z, absent)
  np.testing.assert_array_equal(m, np.stack([ms, mu], 1))
  np.testing.assert_array_equal(idx, np.stack([ps, pu], 1))
