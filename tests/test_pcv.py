"""PCV's protocol (pcv.py): pseudo-splits, τ, the γ_k selection, the averaging, and the K-split driver."""

import numpy as np
import pytest

from ftcal_jax import pcv
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.evaluation import Predictions


def test_pseudo_split_halves_seen_and_sets_absent_aside():
  s = ClassSplit.random(47, 23, seed=0)
  p = pcv.pseudo_split(s, seed=1)
  assert len(p.seen) == 11 and len(p.absent) == 12
  assert set(p.seen) | set(p.absent) == set(s.seen)
  assert set(p.remaining) == set(s.absent)
  assert p == pcv.pseudo_split(s, seed=1)
  assert p.seen != pcv.pseudo_split(s, seed=2).seen
  assert p.provenance["parent"] == s.to_dict()
  with pytest.raises(ValueError, match="at least 2 seen"):
    pcv.pseudo_split(ClassSplit.from_lists(3, seen=[0]), 0)


def test_tau_is_the_accuracy_on_pseudo_absent_samples_over_all_classes():
  pseudo_absent = np.array([False, False, True, True])  # S2 = {2, 3}
  labels = np.array([0, 2, 2, 3, 3])
  logits = np.array([
      [0.0, 9.0, 0.0, 0.0],  # An S1 sample, wrong: not counted.
      [0.0, 0.0, 5.0, 1.0],  # Right.
      [6.0, 0.0, 5.0, 1.0],  # Sent to S1: wrong.
      [0.0, 0.0, 1.0, 2.0],  # Right.
      [0.0, 3.0, 1.0, 2.0],  # Sent to S1 class 1: wrong.
  ])
  assert pcv.tau(logits, labels, pseudo_absent) == 0.5


# S1 = {0}, S2 = {1, 2}. Adding γ to the S2 logits: b is right for γ < 2.5, a for γ < 2, c for γ > 1, d for γ > 3,
# and e never (class 1 beats its class 2 within S2). Overall accuracy: 3/5 on (1, 2), where S2 accuracy is 1/3;
# on γ > 3 S2 accuracy is 2/3 but overall accuracy 2/5.
_HELD = Predictions(np.array([[2.0, 0.0, -9.0], [2.5, 0.0, -9.0], [1.0, 0.0, -9.0], [3.0, 0.0, -9.0], [0.0, 5.0, 0.0]]),
                    np.zeros((5, 1)), np.array([0, 0, 1, 1, 2]))
_S2 = np.array([False, True, True])


@pytest.mark.parametrize("threshold,low,high", [(0.3, 1.0, 2.0), (0.5, 3.0, np.inf)])
def test_select_takes_the_best_point_whose_pseudo_absent_accuracy_reaches_tau(threshold, low, high):
  gamma, found = pcv.select(_HELD, _S2, threshold)
  assert found and low < gamma < high


def test_select_skips_a_split_where_no_point_reaches_tau():
  gamma, found = pcv.select(_HELD, _S2, 0.9)  # S2 accuracy never exceeds 2/3.
  assert not found and np.isnan(gamma)


def test_average_over_the_splits_that_found_a_gamma():
  assert pcv.average([1.0, 5.0, 3.0], [True, False, True]) == 2.0
  assert np.isnan(pcv.average([1.0], [False]))


def test_run_fine_tunes_each_pseudo_split_and_records_tau_in_percent():
  split = ClassSplit.from_lists(4, seen=[0, 1, 2])  # U = {3}: a competitor that takes no part in PCV.
  held = Predictions(np.c_[_HELD.logits, np.full(5, -9.0)], _HELD.features, _HELD.labels)
  calls, lines = [], []

  def fine_tune(k, s1):
    calls.append((k, s1))
    return held

  out = pcv.run(split, held, fine_tune, num_splits=2, seed=7, log=lines.append)
  assert calls == [(k, list(pcv.pseudo_split(split, seed=7 + k).seen)) for k in range(2)]
  for k in range(2):
    s2 = pcv.pseudo_split(split, seed=7 + k).absent_mask
    t = pcv.tau(held.logits, held.labels, s2)
    assert out["taus"][k] == 100.0 * t
    gamma, found = pcv.select(held, s2, t)
    assert out["found"][k] is found and out["gammas"][k] == pytest.approx(gamma, nan_ok=True)
  assert len(lines) == 2 and lines[0].startswith("pcv_0: tau ")
