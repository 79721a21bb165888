"""Content hashes and sanity checks: of files (the init checkpoint, checkpoint folders) and of parameter trees.

Caches are keyed by what a file holds, not by its path (`file_sha256`); a checkpoint is checked against the hashes
of the arrays it was saved from (`tree_checksums`) and of the files orbax wrote (`directory_manifest`); initial
weights are checked for NaN/inf before training (`check_finite`), so a NaN loss is not blamed on the learning rate.
"""

import hashlib
import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
  """The sha256 hex digest of a file's bytes, read in 1 MiB chunks (constant memory for any size)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      h.update(chunk)
  return h.hexdigest()


def _host_value(x: Any) -> Optional[np.ndarray]:
  """The whole value of a leaf on this host, or None when no host holds it whole (sharded across hosts)."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:  # Multi-host, replicated: every host has a full copy.
      return np.asarray(x.addressable_data(0))
    return None
  return np.asarray(x)


def array_sha256(x: np.ndarray) -> str:
  """sha256 of an array's dtype, shape and bytes (C order)."""
  x = np.ascontiguousarray(x)
  h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
  h.update(x.view(np.uint8).reshape(-1).data if x.size else b"")
  return h.hexdigest()


def tree_checksums(tree: Any) -> Dict[str, Optional[str]]:
  """{leaf path (jax.tree_util.keystr): sha256 of the leaf}; None for a leaf sharded across hosts."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host_value(leaf)
    out[jax.tree_util.keystr(path)] = None if value is None else array_sha256(value)
  return out


def compare_checksums(stored: Dict[str, Optional[str]], actual: Dict[str, Optional[str]]) -> Optional[str]:
  """None when the two agree (leaves hashed None on either side are skipped), else what differs, in words."""
  if set(stored) != set(actual):
    return (f"the leaves differ: missing {sorted(set(stored) - set(actual))[:5]}, "
            f"unexpected {sorted(set(actual) - set(stored))[:5]}")
  bad = [k for k in sorted(stored) if stored[k] is not None and actual[k] is not None and stored[k] != actual[k]]
  if bad:
    return f"{len(bad)} array(s) differ from what was saved, e.g. {bad[0]}"
  return None


def directory_manifest(directory: str) -> Dict[str, Tuple[int, str]]:
  """{relative path: (size in bytes, sha256)} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = (os.path.getsize(path), file_sha256(path))
  return out


def check_manifest(directory: str, manifest: Dict[str, Any]) -> Optional[str]:
  """None when every file of `manifest` is under `directory` with its size and hash, else the first problem."""
  for rel, (size, digest) in sorted(manifest.items()):
    path = os.path.join(directory, rel)
    if not os.path.exists(path):
      return f"file {rel} is missing"
    if os.path.getsize(path) != size:
      return f"file {rel} has {os.path.getsize(path)} bytes, {size} were written"
    if file_sha256(path) != digest:
      return f"file {rel} does not match its sha256 at save time"
  return None


def first_nonfinite(tree: Any) -> Optional[Tuple[str, int]]:
  """(leaf path, count of NaN/inf values) of the first floating leaf with non-finite values; None if all finite."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _host_value(leaf)
    if value is None or not jnp.issubdtype(value.dtype, jnp.inexact):
      continue
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    if bad:
      return jax.tree_util.keystr(path), bad
  return None


def check_finite(params: Any, source: str) -> None:
  """Raises ValueError naming the first parameter with NaN/inf values and where the parameters came from.

  Args:
    params: a parameter tree (numpy or jax arrays).
    source: where it came from, e.g. the init checkpoint's path or 'a random initialisation'.
  """
  found = first_nonfinite(params)
  if found is not None:
    path, count = found
    raise ValueError(f"The initial parameters from {source} are not finite: {path} has {count} NaN/inf value(s). "
                     "Training would give a NaN loss whatever the learning rate; re-create or re-download the "
                     "checkpoint.")
