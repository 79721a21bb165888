"""Head-weight statistics, their per-run history (record, save, resume) and the report's summary of it."""

import json

import numpy as np
import pytest

from ftcal_jax import training_dynamics
from ftcal_jax.class_split import ClassSplit


def test_head_statistics():
  init = np.zeros((2, 4))
  kernel = np.array([[3.0, 0.0, 1.0, 2.0], [4.0, 1.0, 0.0, 0.0]])
  seen = np.array([True, True, False, False])
  s, u, cos = training_dynamics.head_statistics(kernel, init, seen, ~seen)
  assert s == pytest.approx((5.0 + 1.0) / 2)
  assert u == pytest.approx((1.0 + 2.0) / 2)
  assert cos == pytest.approx(1.0)  # Both U columns moved along the same direction.
  kernel[1, 3] = -2.0
  assert training_dynamics.head_statistics(kernel, init, seen, ~seen)[2] == pytest.approx(np.sqrt(0.5))


def test_class_masks():
  split = ClassSplit.from_lists(4, seen=[0, 1], absent=[3], remaining=[2])
  seen, absent = training_dynamics.class_masks(4, [1], split)  # A PCV-style run: trained classes vs the rest.
  assert seen.tolist() == [False, True, False, False] and absent.tolist() == [True, False, True, True]
  seen, absent = training_dynamics.class_masks(4, None, split)  # The Oracle: the real S and U.
  assert seen.tolist() == [True, True, False, False] and absent.tolist() == [False, False, False, True]
  seen, absent = training_dynamics.class_masks(4, None, None)  # Pre-training.
  assert seen.all() and not absent.any()


def test_head_history_records_saves_and_resumes_up_to_the_checkpoint(tmp_path):
  seen = np.array([True, False])
  hist = training_dynamics.HeadHistory(np.zeros((1, 2)), seen, ~seen)
  for step in (0, 2, 4, 6):
    hist.record(step, float(step), np.array([[step, 2.0 * step]]))
  assert hist.values["head_norm_seen"] == [0.0, 2.0, 4.0, 6.0]
  assert hist.values["head_norm_absent"] == [0.0, 4.0, 8.0, 12.0]
  path = str(tmp_path / "history.json")
  hist.save(path)
  with open(path) as f:
    assert list(json.load(f)) == list(training_dynamics.HISTORY_KEYS)
  resumed = training_dynamics.HeadHistory(np.zeros((1, 2)), seen, ~seen)
  resumed.load(path, last_step=4)  # Entries after the restored checkpoint are dropped.
  assert resumed.values["step"] == [0, 2, 4] and resumed.values["loss"] == [0.0, 2.0, 4.0]
  fresh = training_dynamics.HeadHistory(np.zeros((1, 2)), seen, ~seen)
  fresh.load(str(tmp_path / "missing.json"), last_step=4)
  assert fresh.values == {k: [] for k in training_dynamics.HISTORY_KEYS}


def test_summarize():
  nan = float("nan")
  out = training_dynamics.summarize({
      "step": [0, 4, 8], "loss": [nan, 1.0, 0.5], "head_norm_seen": [1.0, 2.0, 4.0],
      "head_norm_absent": [1.0, 1.0, 2.0], "absent_update_cos": [nan, 0.5, 1.0]
  })
  assert out["num_records"] == 3 and (out["first_step"], out["last_step"]) == (0, 8)
  assert out["head_norm_seen"] == {"first": 1.0, "last": 4.0}
  assert out["loss"]["last"] == 0.5 and np.isnan(out["loss"]["first"])
  assert out["absent_update_cos"] == {"mean": 0.75, "last": 1.0}  # NaN entries are skipped.
  assert out["last_norm_ratio_seen_over_absent"] == 2.0
  assert training_dynamics.summarize({}) == {"num_records": 0}
