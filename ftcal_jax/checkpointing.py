"""Checkpoints: the one module that touches orbax, so an orbax API move changes one file.

A `Checkpointer` owns one directory. Beside orbax's step folders it stores `config_fingerprint.json`: a hash of
the run's config. Opening a directory that holds checkpoints written under a different config raises
`ConfigMismatchError` instead of silently resuming someone else's run.

Every checkpoint is verified on restore. Before a save, `checksums/<step>.json` records the sha256 of every array
(from the host values being saved) and the config fingerprint; once orbax has finished writing, the sha256 of every
file it wrote is added. On restore the files are checked first (so a missing or truncated file never reaches
orbax), then the restored arrays. A damaged step is moved aside to `corrupt-<step>` with a `DamagedFileWarning`
that names it, and the next older step is tried; with none left, `restore_latest` returns None (train from
scratch). Keep `max_to_keep >= 2` so that there is an older step. `fall_back=False` raises
`CorruptCheckpointError` instead.
"""

import hashlib
import json
import os
import sys
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from etils import epath

from ftcal_jax import atomic_write
from ftcal_jax import caches
from ftcal_jax import integrity

PyTree = Any

FINGERPRINT_FILE = "config_fingerprint.json"
CHECKSUM_DIR = "checksums"
_MAX_REASON = 300  # Orbax/tensorstore errors embed whole JSON specs: keep the message readable.


class ConfigMismatchError(ValueError):
  """The directory holds checkpoints of a run with another config."""


class CorruptCheckpointError(ValueError):
  """A checkpoint exists but cannot be restored."""


def fingerprint(config: Mapping[str, Any]) -> str:
  """A stable short hash of a JSON-able config dict (key order does not matter)."""
  text = json.dumps(config, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop_closed_loop_noise() -> None:
  """Silences tensorstore's late callbacks into orbax's closed asyncio loop after a failed read.

  When one array of a restore fails, asyncio.run closes its loop while tensorstore threads still finish the other
  reads; each then reports `RuntimeError: Event loop is closed` through sys.unraisablehook, hundreds of lines that
  bury the real error (often printed after it). Only that exact error is dropped; anything else goes to the hook
  that was installed before.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_ftcal_filter", False):
    return

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
      return
    previous(unraisable)

  hook._ftcal_filter = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


class Checkpointer:
  """Periodic saves and resume-from-latest-good for one training run.

  Args:
    directory: where the step folders live (created if missing).
    config: the JSON-able dict whose fingerprint guards the directory.
    save_interval_steps: `maybe_save` saves when step % interval == 0 (and always on `force`).
    max_to_keep: how many recent checkpoints to keep (>= 2 leaves an older one to fall back to).
    async_save: write in a background thread; `wait_until_finished` or `close` joins it.
  """

  def __init__(self, directory: str, config: Mapping[str, Any], *, save_interval_steps: int = 100, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self._fingerprint = fingerprint(config)
    os.makedirs(os.path.join(self.directory, CHECKSUM_DIR), exist_ok=True)
    self._check_fingerprint(config)
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_interval_steps, max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(epath.Path(self.directory), options=options)

  # -- the config guard -------------------------------------------------------------------------------------------

  def _steps_on_disk(self):
    return sorted(int(name) for name in os.listdir(self.directory) if name.isdigit())

  def _check_fingerprint(self, config):
    path = os.path.join(self.directory, FINGERPRINT_FILE)
    steps = self._steps_on_disk()
    stored = caches.read_json(path, required=("fingerprint",),
                              action="checking the checkpoints' own records instead and rewriting it")
    if stored is not None:
      if stored["fingerprint"] != self._fingerprint and steps:
        raise ConfigMismatchError(
            f"{self.directory} holds checkpoints from a different config (fingerprint {stored['fingerprint']}, "
            f"this run {self._fingerprint}). Use a fresh --workdir, or delete that directory to start over.")
    elif steps:
      # No readable fingerprint file: every step's checksum record names the config it was saved under.
      found = {(self._record(s) or {}).get("fingerprint") for s in steps}
      if found != {self._fingerprint}:
        what = "from a different config" if None not in found else f"but no readable {FINGERPRINT_FILE}"
        raise ConfigMismatchError(f"{self.directory} holds checkpoints {what}, so their config is unknown or "
                                  "another. Use a fresh --workdir, or delete that directory to start over.")
    if jax.process_index() == 0:
      atomic_write.write_json(path, {"fingerprint": self._fingerprint, "config": config}, indent=1, sort_keys=True,
                              default=str)

  # -- checksum records -------------------------------------------------------------------------------------------

  def _record_path(self, step: int) -> str:
    return os.path.join(self.directory, CHECKSUM_DIR, f"{step}.json")

  def _record(self, step: int) -> Optional[Dict[str, Any]]:
    return caches.read_json(self._record_path(step), required=("arrays", "fingerprint"),
                            action="restoring that step unverified")

  def _finish_pending(self) -> None:
    """Waits for the async save, then adds the sha256 of every file orbax wrote to each step's record."""
    self._manager.wait_until_finished()
    if jax.process_index() != 0:
      return
    kept = set(self._manager.all_steps())
    for name in os.listdir(os.path.join(self.directory, CHECKSUM_DIR)):
      step = int(name.split(".")[0]) if name.split(".")[0].isdigit() else None
      if step is not None and step not in kept and kept and step < max(kept):
        os.remove(os.path.join(self.directory, CHECKSUM_DIR, name))  # Its step was garbage-collected.
    for step in kept:
      record = self._record(step)
      if record is not None and "files" not in record:
        record["files"] = integrity.directory_manifest(os.path.join(self.directory, str(step)))
        atomic_write.write_json(self._record_path(step), record)

  # -- save and restore -------------------------------------------------------------------------------------------

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def maybe_save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Saves `state` at `step` if the interval says so (or `force`); returns whether it saved."""
    if not (force or self._manager.should_save(step)):
      return False
    self._finish_pending()
    if jax.process_index() == 0:  # Written before the step folder can exist, so every folder has its record.
      record = {"step": step, "fingerprint": self._fingerprint, "arrays": integrity.tree_checksums(state)}
      atomic_write.write_json(self._record_path(step), record)
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def _try_restore(self, step: int, abstract: PyTree) -> Tuple[Optional[str], Optional[PyTree]]:
    """(None, state) when step restores and matches its record, else (what is wrong, None)."""
    record = self._record(step)
    if record is not None and "files" in record:
      problem = integrity.check_manifest(os.path.join(self.directory, str(step)), record["files"])
      if problem:
        return problem, None
    _drop_closed_loop_noise()
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many types (ValueError, tensorstore...).
      reason = f"{type(e).__name__}: {e}"
      return f"orbax cannot read it: {reason[:_MAX_REASON]}{'...' if len(reason) > _MAX_REASON else ''}", None
    if record is not None:
      problem = integrity.compare_checksums(record["arrays"], integrity.tree_checksums(restored))
      if problem:
        return problem, None
    return None, restored

  def _set_aside(self, step: int, prefix: str = "corrupt") -> str:
    """Moves a step folder out of orbax's sight (process 0) to <prefix>-<step>, so that step can be saved again."""
    aside = os.path.join(self.directory, f"{prefix}-{step}")
    if jax.process_index() == 0:
      n = 1
      while os.path.exists(aside):
        n += 1
        aside = os.path.join(self.directory, f"{prefix}-{step}-{n}")
      os.replace(os.path.join(self.directory, str(step)), aside)
      if os.path.exists(self._record_path(step)):
        os.replace(self._record_path(step), os.path.join(aside, "ftcal_checksums.json"))
    multihost_utils.sync_global_devices(f"ftcal_checkpoint_set_aside_{step}")
    self._manager.reload()
    return aside

  def restore_latest(self, target: PyTree, *, fall_back: bool = True) -> Optional[PyTree]:
    """Restores the newest good checkpoint into the structure, dtypes and shardings of `target`; None if none.

    Args:
      target: a pytree like the saved state (arrays or jax.ShapeDtypeStruct with shardings).
      fall_back: move a damaged step aside and try the next older one (warning each time); False raises instead.

    Raises:
      CorruptCheckpointError: with fall_back=False, the newest checkpoint is damaged; the message names its folder.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(self._manager.all_steps(), reverse=True):
      problem, restored = self._try_restore(step, abstract)
      if problem is None:
        return restored
      step_dir = os.path.join(self.directory, str(step))
      if not fall_back:
        raise CorruptCheckpointError(f"The checkpoint at step {step} in {self.directory} is damaged ({problem}). "
                                     f"Delete {step_dir} to resume from an earlier step, or use a fresh --workdir.")
      aside = self._set_aside(step)
      older = self._manager.latest_step()
      then = f"resuming from step {older}" if older is not None else "no older checkpoint: training from scratch"
      caches.warn_damaged(step_dir, f"checkpoint at step {step}: {problem}",
                          f"moved it to {aside} (delete it once inspected); {then}")
    return None

  def set_aside_all(self, reason: str) -> None:
    """Moves every step folder to discarded-<step> (the run restarts from its first step), e.g. when its history
    is damaged; `reason` goes into a file beside each."""
    self._finish_pending()
    for step in sorted(self._manager.all_steps()):
      aside = self._set_aside(step, prefix="discarded")
      if jax.process_index() == 0:
        atomic_write.write_text(os.path.join(aside, "WHY.txt"), reason + "\n")

  def wait_until_finished(self) -> None:
    self._finish_pending()

  def close(self) -> None:
    self._finish_pending()
    self._manager.close()
