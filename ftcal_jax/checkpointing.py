"""Checkpoints: the one module that touches orbax, so an orbax API move changes one file.

A `Checkpointer` owns one directory. Beside orbax's step folders it stores `config_fingerprint.json`: a hash of
the run's config. Opening a directory that holds checkpoints written under a different config raises
`ConfigMismatchError` instead of silently resuming someone else's run; a checkpoint that cannot be read raises
`CorruptCheckpointError` naming the step folder to delete.
"""

import hashlib
import json
import os
from typing import Any, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

PyTree = Any

FINGERPRINT_FILE = "config_fingerprint.json"


class ConfigMismatchError(ValueError):
  """The directory holds checkpoints of a run with another config."""


class CorruptCheckpointError(ValueError):
  """A checkpoint exists but cannot be restored."""


def fingerprint(config: Mapping[str, Any]) -> str:
  """A stable short hash of a JSON-able config dict (key order does not matter)."""
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
  """Periodic saves and resume-from-latest for one training run.

  Args:
    directory: where the step folders live (created if missing).
    config: the JSON-able dict whose fingerprint guards the directory.
    save_interval_steps: `maybe_save` saves when step % interval == 0 (and always on `force`).
    max_to_keep: how many recent checkpoints to keep.
    async_save: write in a background thread; `wait_until_finished` or `close` joins it.
  """

  def __init__(self, directory: str, config: Mapping[str, Any], *, save_interval_steps: int = 100, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self._fingerprint = fingerprint(config)
    os.makedirs(self.directory, exist_ok=True)
    self._check_fingerprint(config)
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_interval_steps, max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(epath.Path(self.directory), options=options)

  def _check_fingerprint(self, config):
    path = os.path.join(self.directory, FINGERPRINT_FILE)
    has_steps = any(name.isdigit() for name in os.listdir(self.directory))
    if os.path.exists(path):
      with open(path) as f:
        stored = json.load(f).get("fingerprint")
      if stored != self._fingerprint and has_steps:
        raise ConfigMismatchError(
            f"{self.directory} holds checkpoints from a different config (fingerprint {stored}, this run "
            f"{self._fingerprint}). Use a fresh --workdir, or delete that directory to start over.")
    elif has_steps:
      raise ConfigMismatchError(
          f"{self.directory} holds checkpoints but no {FINGERPRINT_FILE}, so their config is unknown. Use a "
          "fresh --workdir, or delete that directory to start over.")
    if jax.process_index() == 0:
      with open(path, "w") as f:
        json.dump({"fingerprint": self._fingerprint, "config": config}, f, indent=1, sort_keys=True, default=str)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def maybe_save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Saves `state` at `step` if the interval says so (or `force`); returns whether it saved."""
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore_latest(self, target: PyTree) -> Optional[PyTree]:
    """Restores the newest checkpoint into the structure, dtypes and shardings of `target`; None if none.

    Raises:
      CorruptCheckpointError: the newest checkpoint cannot be read (truncated or edited files).
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors).
      raise CorruptCheckpointError(
          f"The checkpoint at step {step} in {self.directory} cannot be restored ({type(e).__name__}: {e}). "
          f"Delete {os.path.join(self.directory, str(step))} to resume from an earlier step, or use a fresh "
          "--workdir.") from e

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
