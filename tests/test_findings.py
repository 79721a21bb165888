"""Tests for ftcal_jax.findings: hand values, the weighted curve against calibration's, and the bootstrap."""

import numpy as np
import pytest

from ftcal_jax import calibration as cal
from ftcal_jax import findings
from ftcal_jax import metrics

# Hand-made test set: classes 0, 1 in S and 2, 3 in U; samples s1, s2 (labels 0, 1) and u1, u2 (labels 2, 3).
ABSENT = np.array([False, False, True, True])
LABELS = np.array([0, 1, 2, 3], np.int32)
# FT: breakpoints max_S − max_U = 2, -1, -1, 1. Its curve along decreasing γ: all U (Acc_s/y 0, Acc_u/y 1);
# s1 flips (½, 1); u2 flips (½, ½); s2 and u1 flip together (1, 0). AUSUC = ½·1 + 0 + ½·¼ = 0.625. At γ = 0:
# s1 and u1 right, Acc_s/y = Acc_u/y = ½.
FT = np.array([[3, 0, 1, 0], [0, 2, 3, 0], [1, 0, 2, 0], [2, 0, 0, 1]], np.float32)
# Pre-trained: breakpoints -1, 1, -1, -1. Curve: (0, ½) (u1 right), s2 flips (½, ½), then s1, u1, u2 (1, 0).
# AUSUC = ½·½ + ½·¼ = 0.375. At γ = 0: s2 and u1 right, Acc_s/y = Acc_u/y = ½.
PRE = np.array([[1, 0, 2, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 2, 0]], np.float32)


def _stats(z, labels=LABELS, absent=ABSENT):
  return cal.reduce_logits(z, labels, absent)


def _by_key(out):
  return {f["key"]: f for f in out["findings"]}


def _random_problem(rng, n, c, shift=0.0, decimals=None):
  absent = np.zeros(c, bool)
  absent[rng.permutation(c)[:c // 2]] = True
  labels = rng.integers(0, c, n).astype(np.int32)
  z = rng.normal(size=(n, c)).astype(np.float32)
  z[np.arange(n), labels] += 1.5
  z[:, ~absent] += shift
  if decimals is not None:  # coarse logits: many tied breakpoints
    z = np.round(z, decimals).astype(np.float32)
  return z, labels, absent


def test_hand_values():
  ncm = {"pretrained": np.array([1, 0, 0, 0], bool), "finetune": np.array([1, 0, 1, 0], bool)}
  # ALG's γ̂ = 0.5 lies in (-1, 1): s1 and u2 predict S, 2 of 4 right. γ* lies in (1, 2): 3 of 4 right.
  out = findings.compute_findings(_stats(PRE), _stats(FT), ncm_correct=ncm,
                                  calibrated_gammas={"ALG": 0.5, "PCV": 1.8, "none": None}, num_replicates=50)
  f = _by_key(out)
  assert list(f) == [
      "collapse", "ncm_features", "ausuc", "dominance_at_seen", "dominance_at_unseen", "recovery_ALG", "recovery_PCV"
  ]
  assert f["collapse"]["estimate"] == 0.0 and f["collapse"]["holds"] is False
  assert f["ncm_features"]["estimate"] == 50.0
  assert f["ausuc"]["estimate"] == pytest.approx(0.25, abs=1e-12)
  # At Acc_s/y >= ½ FT reaches Acc_u/y 1 (state "s1 flipped"): +50 points. At Acc_u/y >= ½ it reaches ½: +0.
  assert f["dominance_at_seen"]["estimate"] == 50.0
  assert f["dominance_at_unseen"]["estimate"] == 0.0
  assert f["recovery_ALG"]["estimate"] == 0.0 and f["recovery_PCV"]["estimate"] == 1.0
  assert out["skipped"] == ["none"]
  assert out["gamma_star"] == pytest.approx(1.5)
  assert out["points"]["pretrained"] == {"acc_s/y": 50.0, "acc_u/y": 50.0}
  assert out["points"]["at_seen"] == {"gamma": 1.5, "acc_s/y": 50.0, "acc_u/y": 100.0}
  assert out["points"]["at_unseen"] == {"gamma": 1.5, "acc_s/y": 50.0, "acc_u/y": 100.0}
  for row in out["findings"]:
    lo, hi = row["interval"]
    assert lo <= hi
    assert row["holds"] == (lo > row["threshold"] if row["direction"] == "above" else hi < row["threshold"])


def test_hand_curve_and_ausuc():
  order = findings.curve_order(_stats(FT))
  hs, hu = findings.weighted_curve_hits(order, ABSENT[LABELS], np.ones((1, 4), np.int32))
  np.testing.assert_array_equal(hs[0], [0, 1, 1, 2])
  np.testing.assert_array_equal(hu[0], [2, 2, 1, 0])
  np.testing.assert_allclose(findings.weighted_ausuc(_stats(FT), np.ones((1, 4), np.int32)), [0.625])
  np.testing.assert_allclose(findings.weighted_ausuc(_stats(PRE), np.ones((1, 4), np.int32)), [0.375])


def _dedup(points):
  keep = np.ones(len(points), bool)
  keep[1:] = np.any(points[1:] != points[:-1], axis=1)
  return points[keep]


def test_weights_equal_duplicated_rows():
  rng = np.random.default_rng(1)
  z, labels, absent = _random_problem(rng, 300, 10, decimals=1)
  w = rng.integers(0, 4, 300).astype(np.int32)  # 0 drops a row, 2 duplicates it
  dup = np.repeat(np.arange(300), w)
  stats, dup_stats = _stats(z, labels, absent), _stats(z[dup], labels[dup], absent)
  hs, hu = findings.weighted_curve_hits(findings.curve_order(stats), absent[labels], w[None])
  hs1, hu1 = findings.weighted_curve_hits(findings.curve_order(dup_stats), absent[labels[dup]],
                                          np.ones((1, dup.size), np.int32))
  # A dropped row's breakpoint adds a state equal to its neighbour; otherwise the curves are the same.
  np.testing.assert_array_equal(_dedup(np.stack([hs[0], hu[0]], 1)), _dedup(np.stack([hs1[0], hu1[0]], 1)))
  area = findings.weighted_ausuc(stats, w[None])[0]
  assert area == findings.weighted_ausuc(dup_stats, np.ones((1, dup.size), np.int32))[0]
  assert area == pytest.approx(float(cal.ausuc(cal.curve_from_stats(dup_stats))), abs=1e-6)


def test_matches_calibration_curve_at_realistic_size():
  rng = np.random.default_rng(2)
  z, labels, absent = _random_problem(rng, 5000, 100, shift=1.0)
  stats = _stats(z, labels, absent)
  curve = cal.curve_from_stats(stats)
  valid = np.asarray(curve.valid)
  ones = np.ones((1, 5000), np.int32)
  hs, hu = findings.weighted_curve_hits(findings.curve_order(stats), absent[labels], ones)
  n_s, n_u = (~absent[labels]).sum(), absent[labels].sum()
  np.testing.assert_allclose(hs[0] / n_s, np.asarray(curve.acc_seen)[valid], atol=1e-6)
  np.testing.assert_allclose(hu[0] / n_u, np.asarray(curve.acc_unseen)[valid], atol=1e-6)
  assert findings.weighted_ausuc(stats, ones)[0] == pytest.approx(float(cal.ausuc(curve)), abs=1e-6)


def test_correct_at_matches_shift_absent():
  rng = np.random.default_rng(3)
  z, labels, absent = _random_problem(rng, 400, 12, decimals=1)
  stats = _stats(z, labels, absent)
  for gamma in (-1.0, 0.0, 0.3, 0.35, 2.0):
    pred = np.argmax(np.asarray(cal.shift_absent(z, absent, gamma)), axis=1)
    np.testing.assert_array_equal(findings.correct_at(stats, gamma), pred == labels)


def test_dominance_points_and_gammas_are_reachable():
  rng = np.random.default_rng(4)
  pre, labels, absent = _random_problem(rng, 2000, 20)
  # FT: sharper on the labels, and biased towards S (the collapse).
  ft = (rng.normal(size=pre.shape) + 2.5 * np.eye(20)[labels] + 2.0 * ~absent).astype(np.float32)
  out = findings.compute_findings(_stats(pre, labels, absent), _stats(ft, labels, absent), num_replicates=20)
  f, pts = _by_key(out), out["points"]
  curve = cal.curve_from_stats(_stats(ft, labels, absent))
  valid = np.asarray(curve.valid)
  xs, ys = 100 * np.asarray(curve.acc_seen, np.float64)[valid], 100 * np.asarray(curve.acc_unseen, np.float64)[valid]
  # Brute force over calibration's curve (float32 accuracies, hence the tolerance).
  best_u = ys[xs >= pts["pretrained"]["acc_s/y"] - 1e-4].max()
  best_s = xs[ys >= pts["pretrained"]["acc_u/y"] - 1e-4].max()
  assert f["dominance_at_seen"]["estimate"] == pytest.approx(best_u - pts["pretrained"]["acc_u/y"], abs=1e-3)
  assert f["dominance_at_unseen"]["estimate"] == pytest.approx(best_s - pts["pretrained"]["acc_s/y"], abs=1e-3)
  for name in ("at_seen", "at_unseen"):  # each reported γ gives its point when applied to the logits
    acc = metrics.accuracies(np.asarray(cal.shift_absent(ft, absent, pts[name]["gamma"])), labels, absent)
    assert float(acc["acc_s/y"]) == pytest.approx(pts[name]["acc_s/y"], abs=1e-3)
    assert float(acc["acc_u/y"]) == pytest.approx(pts[name]["acc_u/y"], abs=1e-3)
  assert pts["at_seen"]["acc_s/y"] >= pts["pretrained"]["acc_s/y"]
  assert pts["at_unseen"]["acc_u/y"] >= pts["pretrained"]["acc_u/y"]


def test_dominance_unreachable_is_minus_inf():
  # FT gets every S sample wrong, so no γ reaches the pre-trained Acc_s/y of 1/2.
  ft = FT.copy()
  ft[0] = [0, 3, 1, 0]
  ft[1] = [2, 0, 3, 0]
  f = _by_key(findings.compute_findings(_stats(PRE), _stats(ft), num_replicates=20))
  assert f["dominance_at_seen"]["estimate"] == -np.inf and f["dominance_at_seen"]["holds"] is False


def test_identical_models_give_zero_and_a_zero_interval():
  rng = np.random.default_rng(6)
  z, labels, absent = _random_problem(rng, 1000, 10)
  s = _stats(z, labels, absent)
  ncm = {"pretrained": rng.random(1000) < 0.5}
  ncm["finetune"] = ncm["pretrained"]
  f = _by_key(findings.compute_findings(s, s, ncm_correct=ncm, num_replicates=200))
  for key in ("collapse", "ncm_features", "ausuc"):
    assert f[key]["estimate"] == 0.0 and f[key]["interval"] == [0.0, 0.0] and f[key]["holds"] is False


def test_pairing_narrows_the_interval():
  # FT = pre-trained, but 10 of the ~1,000 U samples it got wrong become right: every paired resample gains,
  # so the interval of the Acc_u/y margin is >= 0 and narrow (unpaired it would span about ±4 points).
  rng = np.random.default_rng(7)
  pre, labels, absent = _random_problem(rng, 2000, 10)
  ft = pre.copy()
  wrong_u = np.flatnonzero(absent[labels] & (np.argmax(pre, 1) != labels))[:10]
  ft[wrong_u, labels[wrong_u]] += 100.0
  f = _by_key(findings.compute_findings(_stats(pre, labels, absent), _stats(ft, labels, absent)))
  lo, hi = f["collapse"]["interval"]
  assert f["collapse"]["estimate"] == pytest.approx(1000.0 / absent[labels].sum())
  assert 0.0 <= lo < hi < 2.0


def test_bootstrap_covers_the_population_margin():
  # A population where the truth is known: correctness of both models drawn per sample with fixed rates.
  # Coverage of the 95% interval over 200 independent test sets must be near 95%.
  rng = np.random.default_rng(8)
  n, trials, p_pre, p_ft, p_ncm_pre, p_ncm_ft = 400, 200, 0.40, 0.33, 0.50, 0.55
  covered = {"collapse": 0, "ncm_features": 0}
  for t in range(trials):
    labels = np.zeros(n, np.int32)
    labels[n // 2:] = 2  # half S (class 0), half U (class 2)
    z_pre, z_ft = np.zeros((n, 4), np.float32), np.zeros((n, 4), np.float32)
    for z, p in ((z_pre, p_pre), (z_ft, p_ft)):
      right = rng.random(n) < p
      z[np.arange(n), np.where(right, labels, labels + 1)] = 1.0
    ncm = {"pretrained": rng.random(n) < p_ncm_pre, "finetune": rng.random(n) < p_ncm_ft}
    f = _by_key(
        findings.compute_findings(_stats(z_pre, labels), _stats(z_ft, labels), ncm_correct=ncm, num_replicates=300,
                                  seed=t))
    for key, truth in (("collapse", 100 * (p_ft - p_pre)), ("ncm_features", 100 * (p_ncm_ft - p_ncm_pre))):
      lo, hi = f[key]["interval"]
      covered[key] += lo <= truth <= hi
  for key, hits in covered.items():
    assert 0.89 <= hits / trials <= 0.99, (key, hits)


def test_deterministic_given_the_seed():
  rng = np.random.default_rng(9)
  pre, labels, absent = _random_problem(rng, 800, 10)
  ft = (rng.normal(size=pre.shape) + 2.0 * np.eye(10)[labels] + 1.0 * ~absent).astype(np.float32)
  args = (_stats(pre, labels, absent), _stats(ft, labels, absent))
  a = findings.compute_findings(*args, calibrated_gammas={"ALG": 0.7}, num_replicates=300, seed=3)
  b = findings.compute_findings(*args, calibrated_gammas={"ALG": 0.7}, num_replicates=300, seed=3)
  c = findings.compute_findings(*args, calibrated_gammas={"ALG": 0.7}, num_replicates=300, seed=4)
  assert a == b
  assert [f["interval"] for f in a["findings"]] != [f["interval"] for f in c["findings"]]
  strata = absent[labels]
  counts = findings.resample_counts(800, 300, seed=3, strata=strata)
  assert counts.shape == (300, 800) and np.all(counts.sum(1) == 800)
  np.testing.assert_array_equal(counts[:, strata].sum(1), np.full(300, strata.sum()))  # stratum sizes kept
  np.testing.assert_array_equal(counts, findings.resample_counts(800, 300, seed=3, strata=strata))
  assert np.all(findings.resample_counts(800, 300, seed=3).sum(1) == 800)


def test_rejects_mismatched_samples():
  with pytest.raises(ValueError, match="same test samples"):
    findings.compute_findings(_stats(PRE), _stats(FT, np.array([0, 1, 2, 0], np.int32)))


def test_from_predictions():
  rng = np.random.default_rng(10)
  pre, labels, absent = _random_problem(rng, 600, 8)
  ft = (rng.normal(size=pre.shape) + 2.0 * np.eye(8)[labels] + 1.0 * ~absent).astype(np.float32)

  class Preds:  # the fields of evaluation.Predictions

    def __init__(self, logits, labels):
      self.logits, self.labels = logits, labels
      self.features = rng.normal(size=(labels.size, 5)).astype(np.float32) + np.eye(8, 5)[labels]

  test = {"pretrained": Preds(pre, labels), "finetune": Preds(ft, labels)}
  train_labels = np.arange(80, dtype=np.int32) % 8
  train = {k: Preds(np.zeros((80, 8), np.float32), train_labels) for k in test}
  out = findings.from_predictions(test, absent, ncm_train=train, num_replicates=100)
  ncm = {k: findings.ncm_correctness(test[k].features, labels, train[k].features, train_labels, 8) for k in test}
  want = findings.compute_findings(_stats(pre, labels, absent), _stats(ft, labels, absent), ncm_correct=ncm,
                                   num_replicates=100)
  assert out == want
  # NCM correctness agrees with metrics' NCM accuracy on U samples.
  means = metrics.ncm_class_means(train["finetune"].features, train_labels, 8)
  acc = metrics.accuracies(np.asarray(metrics.ncm_logits(test["finetune"].features, means)), labels, absent)
  assert float(acc["acc_u/y"]) == pytest.approx(100 * ncm["finetune"][absent[labels]].mean(), abs=1e-4)
