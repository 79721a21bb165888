"""Checkpoints: round trip, periodic saves, the config guard and corrupted files."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import checkpointing


def _state(x=1.0):
  return {
      "step": jnp.array(3, jnp.int32), "params": {"w": x * jnp.arange(6.0).reshape(2, 3)},
      "opt_state": (jnp.zeros(2), {"mu": jnp.ones(3)})
  }


def test_round_trip_and_latest_step(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1}, save_interval_steps=2)
  assert ck.latest_step() is None and ck.restore_latest(_state()) is None
  assert ck.maybe_save(2, _state(2.0))
  assert not ck.maybe_save(3, _state(3.0))  # Not on the interval.
  assert ck.maybe_save(3, _state(3.0), force=True)
  ck.wait_until_finished()
  ck.close()
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1}, save_interval_steps=2)
  assert ck.latest_step() == 3
  restored = ck.restore_latest(_state(0.0))
  np.testing.assert_array_equal(restored["params"]["w"], _state(3.0)["params"]["w"])
  assert isinstance(restored["params"]["w"], jax.Array)
  ck.close()


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1})
  ck.maybe_save(1, _state(), force=True)
  ck.close()
  with pytest.raises(checkpointing.ConfigMismatchError, match="different config.*fresh --workdir"):
    checkpointing.Checkpointer(tmp_path, {"lr": 0.2})
  # The same config (any key order) is accepted.
  checkpointing.Checkpointer(tmp_path, {"lr": 0.1}).close()


def test_an_empty_directory_adopts_the_new_config(tmp_path):
  checkpointing.Checkpointer(tmp_path, {"lr": 0.1}).close()
  checkpointing.Checkpointer(tmp_path, {"lr": 0.2}).close()  # Nothing saved yet: nothing to protect.


def test_corrupted_checkpoint_raises_a_clear_error(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1})
  ck.maybe_save(5, _state(), force=True)
  ck.close()
  step_dir = tmp_path / "5"
  corrupted = 0
  for root, _, files in os.walk(step_dir):
    for name in files:
      if name.endswith(".txt") or name.startswith("_CHECKPOINT_METADATA"):
        continue
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
      corrupted += 1
  assert corrupted
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1})
  with pytest.raises(checkpointing.CorruptCheckpointError, match="step 5.*Delete"):
    ck.restore_latest(_state(), fall_back=False)  # The default falls back instead (tests below).


def test_fingerprint_ignores_key_order():
  assert checkpointing.fingerprint({"a": 1, "b": [1, 2]}) == checkpointing.fingerprint({"b": [1, 2], "a": 1})
  assert checkpointing.fingerprint({"a": 1}) != checkpointing.fingerprint({"a": 2})


# -- content verification and fall-back ------------------------------------------------------------------------------


def _two_steps(tmp_path):
  """Saves steps 1 (values x1) and 2 (values x2); returns the closed directory's step-2 data files, largest first."""
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1}, save_interval_steps=1)
  ck.maybe_save(1, _state(1.0))
  ck.maybe_save(2, _state(2.0))
  ck.close()
  data = [os.path.join(r, n) for r, _, fs in os.walk(tmp_path / "2") for n in fs if os.sep + "d" + os.sep in r + os.sep]
  assert data, "no orbax data files found under step 2"
  return sorted(data, key=os.path.getsize, reverse=True)


def _assert_restores_step_1(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1}, save_interval_steps=1)
  with pytest.warns(checkpointing.caches.DamagedFileWarning,
                    match=f"{tmp_path / '2'} is damaged.*resuming from step 1"):
    restored = ck.restore_latest(_state(0.0))
  np.testing.assert_array_equal(restored["params"]["w"], _state(1.0)["params"]["w"])
  # The damaged step is out of orbax's way: the resumed run can save step 2 again, and restore it.
  assert ck.latest_step() == 1 and (tmp_path / "corrupt-2").is_dir()
  assert ck.maybe_save(2, _state(5.0))
  ck.close()
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1}, save_interval_steps=1)
  np.testing.assert_array_equal(ck.restore_latest(_state(0.0))["params"]["w"], _state(5.0)["params"]["w"])
  ck.close()


def test_one_flipped_bit_falls_back_to_the_earlier_step(tmp_path):
  path = _two_steps(tmp_path)[0]
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  _assert_restores_step_1(tmp_path)


def test_random_bytes_fall_back_to_the_earlier_step(tmp_path):
  path = _two_steps(tmp_path)[0]
  with open(path, "r+b") as f:
    f.write(np.random.default_rng(0).bytes(4096))
  _assert_restores_step_1(tmp_path)


def test_changed_arrays_are_caught_by_their_checksums_without_the_file_manifest(tmp_path):
  _two_steps(tmp_path)
  # A step killed before its file manifest was written still has the array checksums; make them disagree.
  record_path = tmp_path / checkpointing.CHECKSUM_DIR / "2.json"
  with open(record_path) as f:
    record = json.load(f)
  assert "files" in record and record["fingerprint"] == checkpointing.fingerprint({"lr": 0.1})
  del record["files"]
  key = next(k for k in record["arrays"] if "params" in k)
  record["arrays"][key] = "0" * 64
  with open(record_path, "w") as f:
    json.dump(record, f)
  _assert_restores_step_1(tmp_path)


def test_a_sole_damaged_checkpoint_means_training_from_scratch(tmp_path):
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1})
  ck.maybe_save(3, _state(), force=True)
  ck.close()
  os.remove(next(os.path.join(r, n) for r, _, fs in os.walk(tmp_path / "3") for n in fs if n == "manifest.ocdbt"))
  ck = checkpointing.Checkpointer(tmp_path, {"lr": 0.1})
  with pytest.warns(checkpointing.caches.DamagedFileWarning, match="step 3.*missing.*training from scratch"):
    assert ck.restore_latest(_state()) is None
  assert ck.latest_step() is None
  ck.close()


def test_a_damaged_fingerprint_file_is_rebuilt_from_the_step_records(tmp_path):
  _two_steps(tmp_path)
  with open(tmp_path / checkpointing.FINGERPRINT_FILE, "w") as f:
    f.write('{"fingerprint": "ab')  # Truncated.
  with pytest.warns(checkpointing.caches.DamagedFileWarning, match=checkpointing.FINGERPRINT_FILE):
    checkpointing.Checkpointer(tmp_path, {"lr": 0.1}).close()
  with open(tmp_path / checkpointing.FINGERPRINT_FILE) as f:
    assert json.load(f)["fingerprint"] == checkpointing.fingerprint({"lr": 0.1})
  # The records still guard against another config.
  os.remove(tmp_path / checkpointing.FINGERPRINT_FILE)
  with pytest.raises(checkpointing.ConfigMismatchError, match="different config"):
    checkpointing.Checkpointer(tmp_path, {"lr": 0.2})


_MISSING_FILE_SCRIPT = r"""
import os, sys, json
import jax, jax.numpy as jnp
from ftcal_jax import checkpointing
d, mode = sys.argv[1], sys.argv[2]
mesh = jax.sharding.Mesh(jax.devices(), ("data",))
rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
# Many small leaves, like ViT-testing's state: one failed read leaves others in flight.
shapes = [(16,)] * 30 + [(2, 8)] * 12 + [(16, 2, 8)] * 12 + [(32,), (16, 32), (32, 16), (2, 8, 16)] * 4
state = jax.device_put({f"w{i}": jnp.full(shape, float(i)) for i, shape in enumerate(shapes)}, rep)
if mode == "save":
  ck = checkpointing.Checkpointer(d, {"a": 1})
  ck.maybe_save(1, state, force=True)
  ck.close()
else:  # A fresh process, as a resumed run: nothing cached.
  ck = checkpointing.Checkpointer(d, {"a": 1})
  ck.restore_latest(state, **({"fall_back": False} if mode == "strict" else {}))
"""


def test_a_missing_file_error_is_the_last_line(tmp_path):
  script = tmp_path / "missing.py"
  script.write_text(_MISSING_FILE_SCRIPT)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "PYTHONPATH": repo, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  run = lambda mode: subprocess.run([sys.executable, str(
      script), str(tmp_path / "ck"), mode], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert run("save").returncode == 0
  record = tmp_path / "ck" / checkpointing.CHECKSUM_DIR / "1.json"
  if record.exists():  # Drop the file manifest so that orbax itself meets the missing files.
    r = json.loads(record.read_text())
    r.pop("files", None)
    record.write_text(json.dumps(r))
  for root, _, files in os.walk(tmp_path / "ck" / "1"):
    if os.path.basename(root) == "d":  # The data files (not the metadata orbax reads first).
      for name in files:
        os.remove(os.path.join(root, name))
  proc = run("strict")
  assert proc.returncode != 0
  out = proc.stderr
  assert "Event loop is closed" not in out
  last = out.strip().splitlines()[-1]
  assert last.startswith("ftcal_jax.checkpointing.CorruptCheckpointError: The checkpoint at step 1"), last
  assert len(last) < 1000  # Not the whole tensorstore spec.
