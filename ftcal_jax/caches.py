"""Reading cached artefacts (predictions.npz, history.json, fingerprints) that may be damaged.

A cache is only an optimisation: when it is damaged (a truncated write from an older version, a disk error, a
stray edit), the right move is to warn, naming the file, and recompute it. These readers return None in that case
(and when the file does not exist) instead of raising BadZipFile or JSONDecodeError from deep inside a run.
"""

import json
import os
import warnings
import zipfile
import zlib
from typing import Any, Dict, Optional, Sequence

import numpy as np

# What numpy, zipfile and json raise on truncated, empty or garbage files.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, UnicodeDecodeError, OSError)


class DamagedFileWarning(UserWarning):
  """A cached file or checkpoint was damaged and is being ignored (recomputed, or restored from an earlier step)."""


def warn_damaged(path: str, reason: str, action: str = "ignoring it and recomputing") -> None:
  """Emits the one warning format for damaged files: the path, what is wrong, and what happens next."""
  warnings.warn(f"{path} is damaged ({reason}); {action}.", DamagedFileWarning, stacklevel=3)


def _reason(e: BaseException) -> str:
  return f"{type(e).__name__}: {e}"


def read_json(path: str, *, required: Sequence[str] = (), action: str = "ignoring it and recomputing") -> Optional[Any]:
  """The parsed JSON in `path`; None if it does not exist, or (with a warning) if it is damaged.

  Args:
    path: the file.
    required: keys the top-level object must have; a file without them counts as damaged.
    action: what the caller does instead, for the warning.
  """
  if not os.path.exists(path):
    return None
  try:
    with open(path, "rb") as f:
      obj = json.loads(f.read().decode("utf-8"))
  except _DAMAGE as e:
    warn_damaged(path, _reason(e), action)
    return None
  missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
  if missing:
    warn_damaged(path, f"missing keys {missing}", action)
    return None
  return obj


def read_npz(path: str, *, required: Sequence[str] = ()) -> Optional[Dict[str, np.ndarray]]:
  """Every array of the `.npz` at `path`, read now; None if it does not exist, or (with a warning) if damaged.

  Reading every member in full makes zip's CRC-32 check each one, so a flipped bit is caught here, not later.

  Args:
    path: the file. Pickled objects are refused.
    required: array names the file must hold; a file without them counts as damaged.

  Returns:
    {name: np.ndarray} or None.
  """
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except _DAMAGE as e:
    warn_damaged(path, _reason(e))
    return None
  missing = [k for k in required if k not in arrays]
  if missing:
    warn_damaged(path, f"missing arrays {missing}")
    return None
  return arrays
