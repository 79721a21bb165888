"""The training job end to end on the tiny testing config: determinism, resume after SIGKILL, clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ftcal_jax import caches
from ftcal_jax import checkpointing
from ftcal_jax import train

import config_overrides  # pylint: disable=g-bad-import-order  (tests/config_overrides.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_testing_config = config_overrides.testing


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
  """One complete run of the testing config (with PCV), shared by the tests that only read or copy it."""
  workdir = tmp_path_factory.mktemp("finished")
  config = _testing_config(data_dir, **{"pcv.enabled": True})
  return config, workdir, train.train_and_evaluate(config, str(workdir))


def _finetune_test_logits(workdir):
  with np.load(os.path.join(workdir, "finetune", "predictions.npz")) as f:
    return f["test/logits"]


def test_same_config_and_seed_twice_gives_identical_metrics(finished_run, tmp_path):
  config, workdir_a, a = finished_run
  b = train.train_and_evaluate(config, str(tmp_path))
  assert a["methods"] == b["methods"]
  assert a["gammas"] == b["gammas"]
  np.testing.assert_array_equal(_finetune_test_logits(workdir_a), _finetune_test_logits(tmp_path))
  # The training-dynamics history reaches the report, and PCV ran its split.
  hist = a["history"]["finetune"]
  assert hist["step"][0] == 0 and hist["step"][-1] == config.num_steps
  assert len(a["gammas"]["pcv"]["per_split"]) == config.pcv.num_splits
  with open(workdir_a / "summary.json") as f:
    assert "finetune" in json.load(f)["runs"]


def test_the_job_writes_the_calibrated_model(finished_run):
  # The exported model, loaded as any checkpoint and run on the test split, predicts what shift_absent predicts
  # from FT's cached test logits with the ALG γ (config.export_calibration's default).
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ftcal_jax import calibration, evaluation, train_step  # pylint: disable=g-import-not-at-top
  from ftcal_jax.datasets import registry  # pylint: disable=g-import-not-at-top
  from ftcal_jax.models import get_model, weights  # pylint: disable=g-import-not-at-top
  config, workdir, rep = finished_run
  gamma = rep["gammas"]["alg"]["finetune"]
  with open(workdir / "finetune_calibrated.json") as f:
    info = json.load(f)
  assert info["rule"] == "ALG" and info["gamma"] == pytest.approx(gamma) and info["model"] == config.model.name
  dataset = registry.get_dataset({**config.dataset.to_dict(), "holdout_fraction": config.pcv.holdout_fraction})
  # The .json says how to build the model (configs/testing.py inherits the demo's cosine head).
  assert info["get_model_overrides"] == {"head": "cosine", "cosine_scale": config.model.cosine_scale}
  model = get_model(config.model.name, dataset.num_classes, dtype=jnp.dtype(config.model.dtype),
                    **info["get_model_overrides"])
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + tuple(dataset.image_shape)))["params"]
  params = weights.restore_into(shapes, weights.load_npz(str(workdir / "finetune_calibrated.npz")))
  batches = dataset.eval_batches(dataset.test_split, global_batch=config.eval_batch_size)
  got = evaluation.predict(model, params, batches, train_step.make_mesh()).logits
  absent = np.zeros(dataset.num_classes, bool)
  absent[rep["class_split"]["absent"]] = True
  want = np.argmax(np.asarray(calibration.shift_absent(_finetune_test_logits(workdir), absent, gamma)), axis=1)
  np.testing.assert_array_equal(np.argmax(got, axis=1), want)
  assert np.any(want != np.argmax(_finetune_test_logits(workdir), axis=1))  # γ changes some predictions


def test_a_completed_method_is_not_trained_again(finished_run, tmp_path, capsys):
  config, workdir, first = finished_run
  shutil.copytree(workdir, tmp_path / "copy")
  capsys.readouterr()
  again = train.train_and_evaluate(config, str(tmp_path / "copy"))
  out = capsys.readouterr().out
  assert "finetune: complete in an earlier run" in out and "pcv_0: complete in an earlier run" in out
  assert "steps/s" not in out  # No training step ran.
  assert first["methods"] == again["methods"]


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(data_dir, tmp_path):
  overrides = {"num_steps": 150, "checkpoint_every_steps": 25, "log_every_steps": 25}
  reference = train.train_and_evaluate(_testing_config(data_dir, **overrides), str(tmp_path / "reference"))

  workdir = tmp_path / "killed"
  cmd = [
      sys.executable, "-m", "ftcal_jax.main", f"--config={REPO}/configs/testing.py", f"--workdir={workdir}",
      f"--config.dataset.data_dir={data_dir}", "--config.pcv.enabled=False"
  ]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = workdir / "finetune"
  deadline = time.time() + 240
  killed_at = None
  while time.time() < deadline and proc.poll() is None:
    steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()] if ckpt_dir.exists() else []
    steps = [s for s in steps if 0 < s < 150] if steps else []
    if steps:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
      killed_at = max(steps)
      at_kill = sorted(os.listdir(ckpt_dir))  # What the kill left, for the messages below.
      break
    time.sleep(0.02)
  assert killed_at is not None, "the run finished (or hung) before a mid-training checkpoint appeared"
  assert not (ckpt_dir / "predictions.npz").exists()

  resumed = train.train_and_evaluate(_testing_config(data_dir, **overrides), str(workdir))
  with open(workdir / "summary.json") as f:
    resumed_from = json.load(f)["runs"]["finetune"]["resumed_from"]
  where = f"killed with {at_kill} in {ckpt_dir}, resumed from step {resumed_from}"
  assert resumed_from >= killed_at, where
  # The logits first: they tell a different training trajectory from a different report computation.
  np.testing.assert_array_equal(_finetune_test_logits(workdir), _finetune_test_logits(tmp_path / "reference"),
                                err_msg=where)
  differ = sorted(k for k in set(resumed["methods"]) | set(reference["methods"])
                  if resumed["methods"].get(k) != reference["methods"].get(k))
  assert not differ, f"method rows {differ} differ ({where})"


def test_a_workdir_from_another_config_is_refused(finished_run, tmp_path):
  config, workdir, _ = finished_run
  shutil.copytree(workdir, tmp_path / "copy")
  other = _testing_config(config.dataset.data_dir, **{"pcv.enabled": True, "optimizer.lr": 0.5})
  with pytest.raises(checkpointing.ConfigMismatchError, match="different config.*fresh --workdir"):
    train.train_and_evaluate(other, str(tmp_path / "copy"))
  # The same guard protects a run's checkpoints when its cached predictions are gone.
  os.remove(tmp_path / "copy" / "pretrained" / "predictions.npz")
  os.remove(tmp_path / "copy" / "finetune" / "predictions.npz")
  with pytest.raises(checkpointing.ConfigMismatchError, match="holds checkpoints from a different config"):
    train.train_and_evaluate(other, str(tmp_path / "copy"))


def test_a_corrupted_checkpoint_is_reported(finished_run, tmp_path):
  # Issue 10: a damaged checkpoint is named and the run falls back on the step before it (it used to raise here).
  config, workdir, first = finished_run
  shutil.copytree(workdir, tmp_path / "copy")
  tmp_path = tmp_path / "copy"
  os.remove(tmp_path / "finetune" / "predictions.npz")  # Force a restore from the checkpoint.
  step_dir = tmp_path / "finetune" / str(config.num_steps)
  for root, _, files in os.walk(step_dir):
    for name in files:
      if not name.endswith(".txt") and not name.startswith("_CHECKPOINT_METADATA"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"\x00not a checkpoint")
  earlier = config.num_steps - config.checkpoint_every_steps
  with pytest.warns(caches.DamagedFileWarning, match=f"step {config.num_steps}.*resuming from step {earlier}"):
    again = train.train_and_evaluate(config, str(tmp_path))
  assert again["methods"] == first["methods"]


def test_nan_loss_stops_the_run_and_names_the_step(data_dir, tmp_path):
  config = _testing_config(data_dir, **{"optimizer.lr": 1e30, "optimizer.backbone_lr_mult": 1.0})
  with pytest.raises(FloatingPointError, match=r"the loss is (nan|inf|-inf) at step \d+ \(finetune\)"):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("overrides,message", [
    ({"methods": ("finetune", "fine_tune")}, "Unknown method 'fine_tune'. Valid names:"),
    ({"model.name": "ViT-huge"}, "Unknown model 'ViT-huge'. Valid names:"),
    ({"dataset.name": "mnist"}, "Unknown dataset 'mnist'. Valid names:"),
    ({"batch_size": 12}, "Global batch size 12 is not divisible by the 8 devices"),
    ({"export_calibration": "gamma*"}, "export_calibration must be one of"),
    ({"export_calibration": "PCV"}, "needs config.pcv.enabled"),
])
def test_clear_errors(data_dir, tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_testing_config(data_dir, **overrides), str(tmp_path))


def test_seen_classes_without_training_data_are_an_error(data_dir, tmp_path):
  from ftcal_jax.datasets import array_source, glyphs, registry  # pylint: disable=g-import-not-at-top

  def load(split):
    images, labels = glyphs.load_glyphs_arrays(split, config="small", data_dir=str(data_dir))
    if split == "target_train":  # Classes 0 and 1 have test data but no training data.
      keep = ~np.isin(labels, [0, 1])
      images, labels = images[keep], labels[keep]
    return images, labels

  registry.register_dataset(
      "glyphs_without_0",
      lambda cfg: array_source.ArrayDataset(name="glyphs_without_0", load_split=load, num_classes=47, class_names=tuple(
          str(c) for c in range(47)), train_split="target_train", test_split="target_test"))
  config = _testing_config(
      data_dir, **{"dataset.name": "glyphs_without_0", "class_split.kind": "explicit", "class_split.seen": (0, 1)})
  with pytest.raises(ValueError, match=r"finetune: split 'target_train' has no training examples of classes \[0, 1\]"):
    train.train_and_evaluate(config, str(tmp_path))
