"""Tests for ftcal_jax.metrics: accuracy splits, softmax decomposition, NCM."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import metrics


def _np_topk_hit(z, y, cand, k):
  """Stable descending sort over candidate classes; label within the first k."""
  z = np.where(np.isnan(z), -np.inf, z)
  hits = []
  for row, label in zip(z, y):
    order = [c for c in np.argsort(-row, kind="stable") if cand[c]]
    hits.append(label in order[:k])
  return np.array(hits)


def _np_accuracies(z, y, absent, k):
  seen_rows, absent_rows = ~absent[y], absent[y]
  every = np.ones(len(absent), bool)
  hit_all = _np_topk_hit(z, y, every, k)
  with np.errstate(invalid="ignore"):
    mean = lambda h, r: 100 * h[r].mean() if r.any() else np.nan
    return {
        "acc_y/y": 100 * hit_all.mean(),
        "acc_s/y": mean(hit_all, seen_rows),
        "acc_u/y": mean(hit_all, absent_rows),
        "acc_s/s": mean(_np_topk_hit(z, y, ~absent, k), seen_rows),
        "acc_u/u": mean(_np_topk_hit(z, y, absent, k), absent_rows),
    }


def test_hand_built_accuracies():
  # Classes 0, 1 seen; 2, 3 absent.
  z = jnp.array([
      [5., 1., 2., 0.],  # y=0: right everywhere
      [0., 1., 2., 3.],  # y=1: wrong over all, right over S
      [0., 0., 1., 2.],  # y=2: wrong top-1 (3 wins), right top-2
      [jnp.nan, 0., 0., 0.]
  ])  # y=3: NaN is -inf; tie 1,2,3 -> 1
  y = jnp.array([0, 1, 2, 3])
  absent = jnp.array([False, False, True, True])
  top1 = metrics.accuracies(z, y, absent)
  assert {k: float(v) for k, v in top1.items()
         } == {"acc_y/y": 25.0, "acc_s/y": 50.0, "acc_u/y": 0.0, "acc_s/s": 100.0, "acc_u/u": 0.0}
  top2 = metrics.accuracies(z, y, absent, k=2)
  # Row 3 over all classes: order 1, 2, 3 (index order) -> label 3 is third.
  assert {k: float(v) for k, v in top2.items()
         } == {"acc_y/y": 50.0, "acc_s/y": 50.0, "acc_u/y": 50.0, "acc_s/s": 100.0, "acc_u/u": 100.0}


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.sampled_from([2, 3, 6]), st.sampled_from([1, 4, 9]), st.sampled_from([1, 2, 3]), st.data())
def test_accuracies_match_stable_sort(c, n, k, data):
  ints = data.draw(hnp.arrays(np.int32, (n, c), elements=st.integers(-3, 3)))
  z = ints.astype(np.float32)
  nan = data.draw(hnp.arrays(np.bool_, (n, c)))
  z = np.where(nan, np.nan, z).astype(np.float32)
  absent = data.draw(hnp.arrays(np.bool_, (c,)))
  hypothesis.assume(absent.any() and (~absent).any())
  y = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, c - 1)))
  got = metrics.accuracies(z, y, absent, k=k)
  ref = _np_accuracies(z, y, absent, k)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], atol=1e-4, err_msg=key)


def test_class_mask_in_accuracies():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(40, 6)).astype(np.float32)
  keep = np.array([1, 0, 1, 1, 0, 1], bool)
  absent = np.array([0, 0, 0, 1, 1, 1], bool)
  y = rng.choice(np.flatnonzero(keep), 40)
  got = metrics.accuracies(z, y, absent, class_mask=keep)
  ref = metrics.accuracies(np.where(keep, z, -np.inf), y, absent)
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key])
  with pytest.raises(ValueError, match="class_mask drops"):
    metrics.accuracies(z, np.array([1] * 40), absent, class_mask=keep)


def test_bad_k_and_shapes():
  z = np.zeros((3, 4), np.float32)
  absent = np.array([0, 0, 1, 1], bool)
  with pytest.raises(ValueError, match="positive int"):
    metrics.accuracies(z, np.zeros(3, np.int32), absent, k=0)
  with pytest.raises(ValueError, match="labels must have shape"):
    metrics.accuracies(z, np.zeros(4, np.int32), absent)


def test_softmax_decomposition():
  z = np.log(np.array([[0.1, 0.3, 0.2, 0.4], [0.5, 0.25, 0.2, 0.05]], np.float32))
  y = np.array([2, 0])
  absent = np.array([False, False, True, True])
  out = metrics.softmax_decomposition(z, y, absent)
  np.testing.assert_allclose(out["p_absent"], [0.6, 0.25], rtol=1e-6)
  np.testing.assert_allclose(out["p_within_absent"], [[0, 0, 1 / 3, 2 / 3], [0, 0, 0.8, 0.2]], rtol=1e-6)
  np.testing.assert_allclose(out["mean_p_absent_on_absent"], 0.6, rtol=1e-6)
  np.testing.assert_allclose(out["mean_p_absent_on_seen"], 0.25, rtol=1e-6)
  assert float(out["acc_u/u"]) == 0.0  # class 3 beats class 2 within U
  # p(c|x) = p(U|x) p(c|x,U) on absent classes.
  p = jax.nn.softmax(z, axis=1)
  np.testing.assert_allclose(p[:, 2:], out["p_absent"][:, None] * out["p_within_absent"][:, 2:], rtol=1e-6)


def test_softmax_decomposition_stable_when_absent_underflows():
  z = np.array([[200., -200., -210.]], np.float32)
  out = metrics.softmax_decomposition(z, np.array([0]), np.array([False, True, True]))
  assert np.all(np.isfinite(out["p_within_absent"]))
  np.testing.assert_allclose(out["p_within_absent"][0, 1:], jax.nn.softmax(jnp.array([-200., -210.])), rtol=1e-6)


def test_ncm():
  feats = np.array([[2., 0.], [0., 3.], [1., 1.], [4., 0.]], np.float32)
  labels = np.array([0, 1, 1, 0])
  means = metrics.ncm_class_means(feats, labels, num_classes=3)
  s = np.sqrt(0.5)
  # Class 1: mean of (0,1) and (s,s) normalised.
  m1 = np.array([s, 1 + s]) / np.linalg.norm([s, 1 + s])
  np.testing.assert_allclose(means, [[1, 0], m1, [0, 0]], rtol=1e-6)
  scores = metrics.ncm_logits(np.array([[1., 1.]], np.float32), means)
  np.testing.assert_allclose(scores[0, :2], [s, np.dot([s, s], m1)], rtol=1e-6)
  assert np.isneginf(scores[0, 2])  # empty class is never predicted
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    metrics.ncm_class_means(feats, np.array([0, 1, 3, 0]), num_classes=3)


def test_metrics_jit_and_vmap():
  rng = np.random.default_rng(1)
  zs = rng.normal(size=(3, 10, 4)).astype(np.float32)
  ys = rng.integers(0, 4, (3, 10)).astype(np.int32)
  absent = np.array([0, 1, 0, 1], bool)
  batched = jax.vmap(metrics.accuracies, in_axes=(0, 0, None))(zs, ys, absent)
  for i in range(3):
    one = metrics.accuracies(zs[i], ys[i], absent)
    np.testing.assert_allclose(batched["acc_y/y"][i], one["acc_y/y"])
  jitted = jax.jit(metrics.softmax_decomposition)(zs[0], ys[0], absent)
  np.testing.assert_allclose(jitted["p_absent"], metrics.softmax_decomposition(zs[0], ys[0], absent)["p_absent"])


@pytest.mark.parametrize("n", [3, 7, 9, 31, 41])
def test_all_right_is_exactly_100_percent(n):
  # Float sums scaled by 100.0 gave 100.0000076 or 99.9999924 at these N.
  z = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
  y = np.arange(n) % 4
  out = metrics.accuracies(z, y, np.array([0, 0, 1, 1], bool))
  assert {key: float(v) for key, v in out.items()} == dict.fromkeys(out, 100.0)


def test_array_likes_numpy_k_and_integral_num_classes():
  z = np.array([[5., 1., 2., 0.], [0., 1., 2., 3.]], np.float32)
  y = np.array([0, 3])
  absent = np.array([False, False, True, True])
  ref = metrics.accuracies(z, y, absent, k=2)
  got = metrics.accuracies(z.tolist(), y.tolist(), absent.tolist(), k=np.int64(2))
  assert {key: float(v) for key, v in got.items()} == {key: float(v) for key, v in ref.items()}
  feats = np.array([[2., 0.], [0., 3.]], np.float32)
  np.testing.assert_array_equal(metrics.ncm_class_means(feats.tolist(), [0, 1], num_classes=3.0),
                                metrics.ncm_class_means(feats, np.array([0, 1]), num_classes=3))
  with pytest.raises(ValueError, match="num_classes must be a positive int"):
    metrics.ncm_class_means(feats, np.array([0, 1]), num_classes=2.5)
  with pytest.raises(ValueError, match="k must be a positive int"):
    metrics.accuracies(z, y, absent, k=1.5)
