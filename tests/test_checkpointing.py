"""Checkpoints: round trip, periodic saves, the config guard and corrupted files."""

import os

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
    ck.restore_latest(_state())


def test_fingerprint_ignores_key_order():
  assert checkpointing.fingerprint({"a": 1, "b": [1, 2]}) == checkpointing.fingerprint({"b": [1, 2], "a": 1})
  assert checkpointing.fingerprint({"a": 1}) != checkpointing.fingerprint({"a": 2})
