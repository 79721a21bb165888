"""Exact values of the analyses (head-update cosines, logit dynamics, feature movement), their report and files.

Every number below is worked out by hand from the small arrays in the comments.
"""

import json
import os

import jax
import numpy as np
import pytest

from ftcal_jax import analyses
from ftcal_jax import feature_movement
from ftcal_jax import head_geometry
from ftcal_jax import logit_dynamics
from ftcal_jax import report as report_lib
from ftcal_jax import report_markdown
from ftcal_jax import train_step
from ftcal_jax import training_dynamics
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.evaluation import Predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Head-weight changes (D = 2): S = {0, 1}, U = {2, 3}. c0 (1, 0), c1 (3, 4), c2 (2, 0), c3 (0, 2).
# cos: c0c1 .6, c0c2 1, c0c3 0, c1c2 .6, c1c3 .8, c2c3 0 -> within S .6, within U 0, across (1+0+.6+.8)/4 = .6.
DELTA = np.array([[1.0, 3.0, 2.0, 0.0], [0.0, 4.0, 0.0, 2.0]])
INIT = np.array([[0.5, -1.0, 2.0, 1.0], [1.0, 0.0, -3.0, 0.25]])


def test_update_cosine_matrix_and_block_means():
  m = head_geometry.update_cosine_matrix(INIT + DELTA, INIT, [0, 1, 2, 3])
  expected = np.array([[1, .6, 1, 0], [.6, 1, .6, .8], [1, .6, 1, 0], [0, .8, 0, 1]])
  np.testing.assert_allclose(m, expected, atol=1e-12)
  assert head_geometry.block_means(m, 2) == pytest.approx({"within_seen": .6, "within_absent": 0.0, "across": .6})
  # The order is the matrix's: U first here, so its "S block" is {3, 2}.
  m = head_geometry.update_cosine_matrix(INIT + DELTA, INIT, [3, 2, 1, 0])
  assert m[0, 2] == pytest.approx(.8) and m[1, 3] == pytest.approx(1.0)


def test_a_class_that_did_not_move_is_nan_and_skipped():
  delta = DELTA.copy()
  delta[:, 3] = 0.0  # c3 did not move: U has no pair left, across keeps (0, 2) and (1, 2).
  m = head_geometry.update_cosine_matrix(INIT + delta, INIT, [0, 1, 2, 3])
  assert np.isnan(m[3]).all() and np.isnan(m[:, 3]).all()
  means = head_geometry.block_means(m, 2)
  assert means["within_seen"] == pytest.approx(.6) and np.isnan(means["within_absent"])
  assert means["across"] == pytest.approx((1 + .6) / 2)


def test_section_uses_the_split_order_and_checks_the_shape():
  split = ClassSplit.from_lists(5, seen=[0, 1], absent=[2, 3], remaining=[4])  # Class 4 moved, but is not in S or U.
  kernel = np.concatenate([INIT + DELTA, np.ones((2, 1))], axis=1)
  init = np.concatenate([INIT, np.zeros((2, 1))], axis=1)
  record = head_geometry.run_record(kernel, init, split)
  sec = head_geometry.section({"finetune": record, "oracle": {"step": [0]}}, split)
  assert sec["classes"] == [0, 1, 2, 3] and sec["num_seen"] == 2 and list(sec["runs"]) == ["finetune"]
  assert sec["runs"]["finetune"]["across"] == pytest.approx(.6)
  assert sec["runs"]["finetune"]["matrix"][1][3] == pytest.approx(.8)  # c1 with c3.
  with pytest.raises(ValueError, match="shape"):
    head_geometry.section({"finetune": {head_geometry.MATRIX_KEY: np.eye(3).tolist()}}, split)


# C = 5, S = {0, 1}, U = {2, 3, 4}.
LOGITS = np.array([
    [1.0, 3.0, 2.0, 5.0, -1.0],  # label 2: GT 2, other U max(5, -1) = 5, S max 3
    [0.5, -2.0, 4.0, 1.0, 0.0],  # label 4: GT 0, other U max(4, 1) = 4, S max .5
])
LABELS = np.array([2, 4])
SEEN = np.array([1, 1, 0, 0, 0], bool)


def test_logit_statistics():
  gt, other_u, max_s = logit_dynamics.logit_statistics(LOGITS, LABELS, SEEN, ~SEEN)
  assert (float(gt), float(other_u), float(max_s)) == pytest.approx((1.0, 4.5, 1.75))
  # A single U class has no other U logit; a class in neither S nor U (4 here) is ignored.
  absent = np.array([0, 0, 1, 0, 0], bool)
  gt, other_u, max_s = logit_dynamics.logit_statistics(LOGITS[:1], LABELS[:1], SEEN, absent)
  assert float(gt) == 2.0 and np.isnan(float(other_u)) and float(max_s) == 3.0


class _LinearModel:
  """A stand-in for the ViT: logits = images @ params['head']['kernel']."""

  def apply(self, variables, images, train):
    assert not train
    return {"logits": images @ variables["params"]["head"]["kernel"]}


def test_logit_probe_runs_one_forward_on_its_samples():
  # Images are one-hot rows, so the logits are rows of the kernel: the kernel's rows are LOGITS.
  probe = logit_dynamics.LogitProbe(_LinearModel(), np.eye(2, dtype=np.float32), LABELS, SEEN, ~SEEN,
                                    train_step.make_mesh())
  params = {"params": {"head": {"kernel": jax.numpy.asarray(LOGITS, jax.numpy.float32)}}}  # The variables.
  assert probe(params) == pytest.approx(
      {"u_logit_gt": 1.0, "u_logit_max_other_u": 4.5, "u_logit_max_s": 1.75, "u_logit_samples": 2.0})
  # Recorded beside the head statistics, and resumed from a record that lacks the curves (analysis switched on).
  hist = training_dynamics.HeadHistory(np.zeros((2, 5)), SEEN, ~SEEN, probe=probe)
  hist.record(0, float("nan"), np.zeros((2, 5)), params=params)
  assert hist.values["u_logit_max_s"] == [pytest.approx(1.75)]
  assert set(hist.values) == set(training_dynamics.HISTORY_KEYS) | set(logit_dynamics.KEYS)


def test_history_resume_fills_missing_probe_keys_with_nan(tmp_path):
  plain = training_dynamics.HeadHistory(np.zeros((1, 2)), np.array([True, False]), np.array([False, True]))
  plain.record(0, 1.0, np.ones((1, 2)))
  plain.record(5, 0.5, np.ones((1, 2)))
  plain.save(str(tmp_path / "h.json"))

  class Probe:
    keys = logit_dynamics.KEYS

  resumed = training_dynamics.HeadHistory(np.zeros((1, 2)), np.array([True, False]), np.array([False, True]),
                                          probe=Probe())
  resumed.load(str(tmp_path / "h.json"), last_step=5)
  assert resumed.values["step"] == [0, 5] and np.isnan(resumed.values["u_logit_gt"]).all()
  assert len(resumed.values["u_logit_gt"]) == 2


class _FakeDataset:
  """Eval batches of 3 rows, labels cycling 2, 3, 2, 3, ...; image value = row index."""
  image_shape = (1,)

  def __init__(self, n):
    self.labels = np.array([2, 3] * (n // 2), np.int32)
    self.read = 0

  def eval_batches(self, split, *, global_batch, classes, process_index, process_count):
    assert (process_index, process_count) == (0, 1) and split == "target_train"
    for i in range(0, len(self.labels), 3):
      self.read += 1
      lab = self.labels[i:i + 3]
      yield {
          "image": np.arange(i, i + len(lab), dtype=np.float32)[:, None], "label": lab, "mask": np.ones(len(lab), bool)
      }


def test_held_out_samples_are_balanced_capped_and_read_once():
  data = _FakeDataset(20)
  images, labels = logit_dynamics.held_out_samples(data, "target_train", (2, 3), 5, 3)
  # ceil(5 / 2) = 3 per class: rows 0, 2, 4 of class 2 and 1, 3, 5 of class 3; capped at 5.
  assert labels.tolist() == [2, 2, 2, 3, 3] and images[:, 0].tolist() == [0, 2, 4, 1, 3]
  assert data.read == 2  # Stopped once every class had its share.
  logit_dynamics.held_out_samples(data, "target_train", (2, 3), 5, 3)
  assert data.read == 2  # The second run of the job reuses them.


# Feature movement, D = 2, S = {0, 1}, U = {2}; two samples per class.
# Pre-trained means: c0 (1, 0), c1 (0, 1), c2 (1, .1) -> nearest S of c2 is c0.
# Movements: c0 (0, 1), c1 (1, 0), c2 (0, 2) -> cos nearest 1, mean over S (1 + 0) / 2 = .5.
PRE = np.array([[1, 1], [1, -1], [0, 1], [0, 1], [1, .1], [1, .1]], np.float32)
FT = np.array([[1, 2], [1, 0], [1, 1], [1, 1], [1, 2.1], [1, 2.1]], np.float32)
FEAT_LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_movement_cosines():
  out = feature_movement.movement_cosines(PRE, FT, FEAT_LABELS, [0, 1], [2])
  assert out["nearest_seen"] == [0]
  assert out["cos_nearest"] == pytest.approx([1.0]) and out["cos_all_seen"] == pytest.approx([0.5])
  assert out["mean_cos_nearest"] == pytest.approx(1.0) and out["mean_cos_all_seen"] == pytest.approx(0.5)
  # Centred by the mean S movement (.5, .5): S0 (-.5, .5), S1 (.5, -.5), U2 (-.5, 1.5): cos 1 / sqrt(1.25) with S0,
  # its opposite with S1, mean 0.
  assert out["cos_nearest_centred"] == pytest.approx(
      [1 / np.sqrt(1.25)]) and out["cos_all_seen_centred"] == [pytest.approx(0.0, abs=1e-12)]
  # Swap the movements of S: now the nearest S class moved orthogonally to c2.
  ft = FT.copy()
  ft[:2] = PRE[:2] + [1, 0]
  ft[2:4] = PRE[2:4] + [0, 1]
  out = feature_movement.movement_cosines(PRE, ft, FEAT_LABELS, [0, 1], [2])
  assert out["cos_nearest"] == pytest.approx([0.0], abs=1e-7)


def test_tsne_embeds_one_subsample_in_both_spaces():
  pytest.importorskip("sklearn")  # The 'analysis' extra.
  rng = np.random.default_rng(0)
  pre = rng.normal(size=(40, 5)).astype(np.float32)
  labels = np.repeat(np.arange(4), 10)
  out = feature_movement.tsne(pre, pre + 1.0, labels, max_points=30, perplexity=30.0, seed=0)
  assert len(out["labels"]) == 30 and np.asarray(out["pretrained"]).shape == (30, 2)
  assert np.asarray(out["finetune"]).shape == (30, 2) and out["seconds"] > 0


def _report_inputs(analysis_options):
  split = ClassSplit.from_lists(3, seen=[0, 1], absent=[2])
  logits = np.array([[2, 0, 0], [0, 2, 0], [1, 0, 0], [0, 3, 1], [2, 0, 0], [0, 1, 0]], np.float32)
  test = {"pretrained": Predictions(logits, PRE, FEAT_LABELS), "finetune": Predictions(logits, FT, FEAT_LABELS)}
  kernel = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
  history = {
      "finetune": {
          "step": [0, 2], "loss": [float("nan"), 1.0], "head_norm_seen": [1.0, 1.0], "head_norm_absent": [1.0, 1.0],
          "absent_update_cos": [float("nan")] * 2, "u_logit_gt": [1.0, 2.0], "u_logit_max_other_u": [float("nan")] * 2,
          "u_logit_max_s": [0.5,
                            3.0], "u_logit_samples": [2.0,
                                                      2.0], **head_geometry.run_record(kernel, np.zeros((2, 3)), split)
      }
  }
  return dict(class_split=split, test=test, history=history, config={"seed": 0, "analyses": analysis_options})


def test_report_sections_and_files(tmp_path):
  rep = report_lib.build_report(**_report_inputs({"feature_movement": True, "feature_tsne": False}))
  # c0 (1, 0), c1 (0, 1), c2 (1, 1)/sqrt2: within S 0, across sqrt(.5); one U class has no pair.
  cos = rep["head_update_cosine"]["runs"]["finetune"]
  assert cos["within_seen"] == pytest.approx(0.0) and cos["across"] == pytest.approx(np.sqrt(.5))
  assert cos["within_absent"] is None  # NaN -> None in the strict JSON.
  assert head_geometry.MATRIX_KEY not in rep["history"]["finetune"]  # Stored once, in its section.
  dyn = rep["logit_dynamics"]["finetune"]
  assert dyn["u_logit_max_s"] == {"first": 0.5, "last": 3.0} and dyn["last_gt_minus_max_s"] == pytest.approx(-1.0)
  assert rep["feature_movement"]["mean_cos_nearest"] == pytest.approx(1.0)
  paths = report_markdown.write_report(rep, str(tmp_path))
  assert {"head_update_cosine", "logit_dynamics", "feature_movement"} <= set(paths)
  md = open(paths["markdown"]).read()
  for text in ("mean cos within U", "figures/logit_dynamics.png", "figures/feature_movement.png",
               "**1.000** with the nearest S class", "| FT | 0.000 | – | 0.707 |"):
    assert text in md, text
  with open(paths["json"]) as f:
    assert json.load(f)["head_update_cosine"]["classes"] == [0, 1, 2]


def test_analyses_switched_off_leave_no_section():
  off = {"head_update_cosine": False, "logit_dynamics": False, "feature_movement": False, "feature_tsne": False}
  rep = report_lib.build_report(**_report_inputs(off))
  assert not {"head_update_cosine", "logit_dynamics", "feature_movement"} & set(rep)
  # Without config.analyses, the feature movement (which needs no extra data) stays off.
  assert analyses.options(None)["feature_movement"] is False


class _Crash(Exception):
  pass


def test_the_job_records_the_analyses_and_a_resume_keeps_the_logit_curves(data_dir, tmp_path, monkeypatch):
  from ftcal_jax import checkpointing, recipes, train  # pylint: disable=g-import-not-at-top
  config = recipes.load_file(os.path.join(REPO, "configs", "testing.py")).get_config()
  with config.unlocked():
    config.dataset.data_dir = str(data_dir)
    config.pcv.enabled = False
    config.analyses.feature_movement = True
  first = train.train_and_evaluate(config, str(tmp_path / "a"))
  hist = first["history"]["finetune"]
  assert len(hist["u_logit_gt"]) == len(hist["step"]) == config.num_steps // config.log_every_steps + 1
  assert first["logit_dynamics"]["finetune"]["num_samples"] > 0
  k = len(first["class_split"]["seen"]) + len(first["class_split"]["absent"])
  assert np.asarray(first["head_update_cosine"]["runs"]["finetune"]["matrix"]).shape == (k, k)
  assert "feature_movement" in first and "tsne" not in first["feature_movement"]

  # A job killed right after its mid-run checkpoint (step 4), then rerun: the curves recorded before the
  # checkpoint come back from history.json, the rest are recorded again; both match the uninterrupted run.
  save = checkpointing.Checkpointer.maybe_save

  def save_then_crash(self, step, *args, **kwargs):
    saved = save(self, step, *args, **kwargs)
    if step == config.checkpoint_every_steps:
      self.close()  # Joins the async write, as a finished save would be.
      raise _Crash()
    return saved

  monkeypatch.setattr(checkpointing.Checkpointer, "maybe_save", save_then_crash)
  with pytest.raises(_Crash):
    train.train_and_evaluate(config, str(tmp_path / "b"))
  monkeypatch.undo()
  again = train.train_and_evaluate(config, str(tmp_path / "b"))
  with open(tmp_path / "b" / "summary.json") as f:
    assert json.load(f)["runs"]["finetune"]["resumed_from"] == config.checkpoint_every_steps
  for key in logit_dynamics.KEYS:
    np.testing.assert_allclose(again["history"]["finetune"][key], hist[key], rtol=1e-5)


def test_head_update_cosine_keeps_only_block_means_for_large_heads():
  """An ImageNet-sized split: the history and report hold the three block means, not a 10^6-entry matrix."""
  rng = np.random.default_rng(0)
  c = head_geometry.MAX_MATRIX_CLASSES + 44
  split = ClassSplit.random(c, 150, seed=0)
  init = rng.normal(size=(16, c))
  kernel = init + rng.normal(size=(16, c))
  record = head_geometry.run_record(kernel, init, split)
  assert set(record) == {head_geometry.BLOCKS_KEY}
  order = list(split.seen) + list(split.absent)
  expected = head_geometry.block_means(head_geometry.update_cosine_matrix(kernel, init, order), 150)
  stored = {k: np.asarray(v, np.float64) for k, v in record.items()}  # As predictions.npz stores history entries.
  section = head_geometry.section({"finetune": stored}, split)
  assert section["runs"]["finetune"]["matrix"] is None
  for key, value in expected.items():
    assert section["runs"]["finetune"][key] == pytest.approx(value, abs=1e-12)
  small = ClassSplit.random(10, 5, seed=0)
  assert set(head_geometry.run_record(kernel[:, :10], init[:, :10], small)) == {head_geometry.MATRIX_KEY}
