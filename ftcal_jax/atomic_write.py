"""Outputs written whole or not at all: a temporary file in the same directory, then `os.replace`.

A job killed while writing report.json used to leave it truncated, and the previous good report was lost. Every
writer here writes a temporary file beside the target (same directory, so the same filesystem) and renames it over
the target, which POSIX makes atomic: a reader sees the old file or the new one, never half of one.

  atomic_write.write_json(os.path.join(workdir, "report.json"), report, indent=1)
  with atomic_write.atomic_path(os.path.join(workdir, "figures", "curve.png")) as tmp:
    fig.savefig(tmp)  # The temporary name keeps the suffix, so matplotlib picks the format from it.
"""

import contextlib
import json
import os
import secrets
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path` (same suffix); on success it replaces `path`, on error it is removed."""
  path = os.fspath(path)
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(name)[1]
  # Not tempfile.mkstemp: its 0600 mode would outlive the rename; open(..., 'x') keeps the umask's mode.
  tmp = os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")
  with open(tmp, "xb"):
    pass
  try:
    yield tmp
    with open(tmp, "rb+") as f:  # Flush to disk before the rename, so a crash cannot leave an empty target.
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, **json_kwargs: Any) -> None:
  """json.dump(obj) to `path` atomically; `json_kwargs` go to json.dumps (indent, sort_keys, default, ...)."""
  write_text(path, json.dumps(obj, **json_kwargs))


def save_npz(path: str, **arrays: Any) -> None:
  """np.savez(path, **arrays) atomically; `path` is used as given (no '.npz' is appended)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:  # An open file keeps numpy from appending '.npz' to the name.
      np.savez(f, **arrays)
