"""Runs you can trust (issue 10), end to end on the tiny testing config: each case failed on the code before it."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import caches
from ftcal_jax import checkpointing
from ftcal_jax import train
from ftcal_jax import workdir_lock
from ftcal_jax.models import get_model
from ftcal_jax.models import weights

import config_overrides  # pylint: disable=g-bad-import-order  (tests/config_overrides.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_config = config_overrides.testing


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
  """One complete run (no PCV), copied by the tests that damage it."""
  workdir = tmp_path_factory.mktemp("finished")
  config = _config(data_dir)
  return config, workdir, train.train_and_evaluate(config, str(workdir))


def _copy(workdir, tmp_path):
  shutil.copytree(workdir, tmp_path / "copy")
  return tmp_path / "copy"


def _test_logits(workdir):
  with np.load(os.path.join(workdir, "finetune", "predictions.npz")) as f:
    return f["test/logits"]


# -- 1. damaged checkpoints and caches ---------------------------------------------------------------------------------


def test_a_damaged_latest_checkpoint_resumes_from_the_earlier_one(finished, tmp_path):
  config, workdir, first = finished
  copy = _copy(workdir, tmp_path)
  os.remove(copy / "finetune" / "predictions.npz")  # Force a restore.
  steps = sorted(int(n) for n in os.listdir(copy / "finetune") if n.isdigit())
  assert len(steps) >= 2, f"max_to_keep keeps an earlier step: {steps}"
  data = [os.path.join(r, n) for r, _, fs in os.walk(copy / "finetune" / str(steps[-1])) for n in fs if "/d" in r]
  with open(max(data, key=os.path.getsize), "r+b") as f:
    f.write(np.random.default_rng(0).bytes(4096))
  with pytest.warns(caches.DamagedFileWarning, match=f"{copy / 'finetune' / str(steps[-1])} is damaged.*resuming "
                    f"from step {steps[-2]}"):
    again = train.train_and_evaluate(config, str(copy))
  assert again["methods"] == first["methods"]
  np.testing.assert_array_equal(_test_logits(copy), _test_logits(workdir))


@pytest.mark.parametrize("name", ["finetune/predictions.npz", "pretrained/predictions.npz", "finetune/history.json"])
def test_a_damaged_cache_is_recomputed_with_a_warning_naming_it(finished, tmp_path, name):
  config, workdir, first = finished
  copy = _copy(workdir, tmp_path)
  path = copy / name
  path.write_bytes(path.read_bytes()[:100])  # Truncated.
  if name.endswith(".json"):
    os.remove(copy / "finetune" / "predictions.npz")  # The history is read when the run restores.
  with pytest.warns(caches.DamagedFileWarning, match=f"{path} is damaged"):
    again = train.train_and_evaluate(config, str(copy))
  assert again["methods"] == first["methods"]


# -- 2. one run per workdir --------------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_pid(data_dir, tmp_path):
  holder = subprocess.Popen([
      sys.executable, "-c", "import sys, time\nfrom ftcal_jax import workdir_lock\n"
      "with workdir_lock.hold(sys.argv[1], process_index=0):\n  print('locked', flush=True)\n  time.sleep(300)\n",
      str(tmp_path)
  ], cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"PID {holder.pid}"):
      train.train_and_evaluate(_config(data_dir), str(tmp_path))
    assert not (tmp_path / "finetune").exists()
  finally:
    holder.kill()
    holder.wait()


# -- 3. caches keyed by the init checkpoint's content ------------------------------------------------------------------


def _write_init(path, scale):
  model = get_model("ViT-testing", 47)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))["params"]
  weights.save_npz(jax.tree.map(lambda x: np.asarray(x) * scale, params), str(path))


def test_overwriting_the_init_checkpoint_invalidates_the_workdir(data_dir, tmp_path):
  init = tmp_path / "init.npz"
  _write_init(init, 1.0)
  config = _config(data_dir, init_checkpoint=str(init))
  train.train_and_evaluate(config, str(tmp_path / "w"))
  _write_init(init, 0.5)  # Same path, other weights.
  with pytest.raises(checkpointing.ConfigMismatchError, match="different config"):
    train.train_and_evaluate(config, str(tmp_path / "w"))


def test_non_finite_initial_weights_are_named_before_training(data_dir, tmp_path):
  init = tmp_path / "init.npz"
  _write_init(init, np.nan)
  with pytest.raises(ValueError, match=f"from {init} are not finite: .* NaN/inf"):
    train.train_and_evaluate(_config(data_dir, init_checkpoint=str(init)), str(tmp_path / "w"))
  assert not (tmp_path / "w" / "finetune").exists()


# -- 4. numbers checked before anything is built -----------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ({"num_steps": -5}, "num_steps = -5: must be an integer >= 0"),
    ({"optimizer.lr": -0.01}, "optimizer.lr = -0.01: must be a number > 0"),
    ({"batch_size": 0}, "batch_size = 0: must be an integer >= 1"),
    ({"eval_batch_size": 0}, "eval_batch_size = 0: must be an integer >= 1"),
    ({"log_every_steps": 0}, "log_every_steps = 0"),
    ({"checkpoint_every_steps": 0}, "checkpoint_every_steps = 0"),
    ({"pcv.enabled": True, "pcv.num_splits": 0}, "pcv.num_splits = 0: must be an integer >= 1"),
    ({"class_split.num_seen": 1.0}, r"gives \|S\| = 1; ALG"),
])
def test_bad_numbers_fail_before_any_data_is_built(tmp_path, overrides, message):
  # A data_dir that does not exist: the config error must come first.
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(_config(tmp_path / "no_data", **overrides), str(tmp_path / "w"))
  assert not (tmp_path / "no_data").exists()
  assert not (tmp_path / "w" / "finetune").exists()


# -- 9. stale outputs --------------------------------------------------------------------------------------------------


def test_a_rerun_writing_fewer_outputs_leaves_none_of_the_old_ones(finished, tmp_path):
  config, workdir, _ = finished
  copy = _copy(workdir, tmp_path)
  (copy / "report.md").write_text("old report")
  (copy / "figures").mkdir()
  (copy / "figures" / "curves.png").write_bytes(b"old figure")
  train.train_and_evaluate(config, str(copy))  # write_figures=False: report.json only.
  assert not (copy / "report.md").exists() and not (copy / "figures").exists()
  with open(copy / "report.json") as f:
    json.load(f)
  leftovers = [n for _, _, fs in os.walk(copy) for n in fs if ".tmp" in n]
  assert not leftovers


# -- 5. class splits from the command line -----------------------------------------------------------------------------

_PARSE = """
from absl import app, flags
from ml_collections import config_flags
from ftcal_jax import config_validation
from ftcal_jax.class_split import ClassSplit
config_flags.DEFINE_config_file("config", None, "", lock_config=True)
def main(_):  # What main.py and train_and_evaluate do with the flag.
  config_validation.validate_config(flags.FLAGS.config, num_classes=47)
  split = ClassSplit.from_config(flags.FLAGS.config.class_split, 47)
  print(len(split.seen), len(split.absent), list(split.seen)[:3], list(split.absent)[:2])
app.run(main)
"""


@pytest.mark.parametrize("args,expected", [
    (["--config.class_split.num_seen=24"], "24 23 "),
    (["--config.class_split.num_seen=0.25"], "12 35 "),
    (["--config.class_split.kind=explicit", "--config.class_split.seen=0,1,2"], "3 44 [0, 1, 2] [3, 4]"),
    ([
        "--config.class_split.kind=explicit", "--config.class_split.seen=(5,6)",
        "--config.class_split.remaining=(0,1,2,3,4)"
    ], "2 40 [5, 6] [7, 8]"),
])
def test_class_splits_from_the_command_line(tmp_path, args, expected):
  script = tmp_path / "parse.py"
  script.write_text(_PARSE)
  proc = subprocess.run([sys.executable, str(script), f"--config={REPO}/configs/glyphs.py", *args], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1].startswith(expected)


@pytest.mark.slow
@pytest.mark.parametrize("args,seen,absent", [
    (["--config.class_split.num_seen=24"], 24, 23),
    (["--config.class_split.kind=explicit", "--config.class_split.seen=0,1,2,3,4"], [0, 1, 2, 3, 4], 42),
])
def test_the_main_job_runs_the_class_split_given_on_the_command_line(data_dir, tmp_path, args, seen, absent):
  """The whole job, as a user launches it: the split the flags give is the one trained on and reported."""
  workdir = tmp_path / "w"
  cmd = [
      sys.executable, "-m", "ftcal_jax.main", f"--config={REPO}/configs/testing.py", f"--workdir={workdir}",
      f"--config.dataset.data_dir={data_dir}", "--config.pcv.enabled=False", "--config.num_steps=2", *args
  ]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO},
                        timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  report = json.loads((workdir / "report.json").read_text())
  split = report["class_split"]
  assert (len(split["seen"]) if isinstance(seen, int) else split["seen"]) == seen
  assert len(split["absent"]) == absent and not set(split["seen"]) & set(split["absent"])
  assert report["test_samples"]["seen"] > 0 and report["test_samples"]["absent"] > 0
