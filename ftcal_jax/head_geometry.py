"""The cosine similarity matrix of the head-weight changes w_c(after) - w_c(before), S first, then U.

paper.md (Analyses) tracks the cosine of the head-weight updates between U classes. This module gives the whole
picture behind that number: the (K, K) matrix of cosines between every pair of update vectors over the K = |S| + |U|
classes of the split (S first, then U, each in the split's order), and its three block means:

  within_seen     mean over pairs c != c' of S,
  within_absent   mean over pairs c != c' of U,
  across          mean over the |S| x |U| pairs (one of S, one of U).

`update_cosine_matrix` runs once at the end of a run (train.py stores its result in the run's history under
MATRIX_KEY, so a cached run keeps it); `section` turns the stored matrices into the report's `head_update_cosine`.
Above MAX_MATRIX_CLASSES classes (an ImageNet head: 10^6 entries per run, tens of MB of JSON) only the block means are
stored (under BLOCKS_KEY) and reported, and the report says so.
A class whose weights did not move has no direction: its row and column are NaN and the means skip them.
"""

from typing import Any, Dict, Mapping, Sequence

import numpy as np

MATRIX_KEY = "head_update_cos_matrix"  # The run-history key of the (K, K) matrix (not a per-step curve).
BLOCKS_KEY = "head_update_cos_blocks"  # The run-history key of the block means alone (K > MAX_MATRIX_CLASSES).
_BLOCKS = ("within_seen", "within_absent", "across")  # The order of BLOCKS_KEY's list.
MAX_MATRIX_CLASSES = 256  # Up to this K the matrix itself is kept in history.json and report.json, and drawn.
_DIGITS = 4  # The report's copy of the matrix is rounded (the means use the full one): it is there to be drawn.


def update_cosine_matrix(kernel: np.ndarray, init_kernel: np.ndarray, order: Sequence[int]) -> np.ndarray:
  """Cosines between the head-weight changes of the classes in `order`.

  Args:
    kernel: (D, C) head weights after training; column c is w_c.
    init_kernel: (D, C) head weights before training.
    order: the K class ids, in the matrix's order (S first, then U).

  Returns:
    (K, K) float64: entry (i, j) is cos(w_a - w_a(0), w_b - w_b(0)) for a = order[i], b = order[j]; NaN in the rows
    and columns of classes whose weights did not move.
  """
  delta = (np.asarray(kernel, np.float64) - np.asarray(init_kernel, np.float64))[:, np.asarray(order, int)]
  norms = np.linalg.norm(delta, axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    unit = np.where(norms > 0, delta / norms, np.nan)
  return np.clip(unit.T @ unit, -1.0, 1.0)


def _mean(values: np.ndarray) -> float:
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else float("nan")


def block_means(matrix: np.ndarray, num_seen: int) -> Dict[str, float]:
  """The off-diagonal means of a (K, K) matrix whose first `num_seen` rows are S and the rest U.

  Returns:
    {'within_seen', 'within_absent', 'across'}; NaN where a block has no finite pair (e.g. one U class).
  """
  matrix = np.asarray(matrix, np.float64)
  k = matrix.shape[0]
  is_seen = np.arange(k) < num_seen
  off_diag = ~np.eye(k, dtype=bool)
  return {
      "within_seen": _mean(matrix[np.outer(is_seen, is_seen) & off_diag]),
      "within_absent": _mean(matrix[np.outer(~is_seen, ~is_seen) & off_diag]),
      "across": _mean(matrix[np.outer(is_seen, ~is_seen)]),
  }


def run_record(kernel: Any, init_kernel: Any, class_split: Any) -> Dict[str, Any]:
  """The history entry of one finished run: {MATRIX_KEY: (K, K) nested list}, S then U of `class_split`; above
  MAX_MATRIX_CLASSES classes {BLOCKS_KEY: [within_seen, within_absent, across]} instead."""
  order = list(class_split.seen) + list(class_split.absent)
  matrix = update_cosine_matrix(np.asarray(kernel), np.asarray(init_kernel), order)
  if len(order) > MAX_MATRIX_CLASSES:  # A list, as every history entry (predictions.npz stores them as arrays).
    blocks = block_means(matrix, len(class_split.seen))
    return {BLOCKS_KEY: [blocks[k] for k in _BLOCKS]}
  return {MATRIX_KEY: matrix.tolist()}


def section(history: Mapping[str, Mapping[str, Any]], class_split: Any) -> Dict[str, Any]:
  """The report's `head_update_cosine` section: per run, the matrix and its block means.

  Args:
    history: run name -> its history; runs without MATRIX_KEY (recorded with the analysis off) are skipped.
    class_split: the job's ClassSplit (the matrix rows are its S, then its U).

  Returns:
    {'classes': the K class ids in order, 'num_seen': |S|, 'runs': {name: {'matrix', 'within_seen',
    'within_absent', 'across'}}}, or {} when no run has a matrix. 'matrix' is None for runs that stored only
    the block means (K > MAX_MATRIX_CLASSES).
  """
  order = [int(c) for c in list(class_split.seen) + list(class_split.absent)]
  runs = {}
  for name, hist in history.items():
    matrix = hist.get(MATRIX_KEY)
    if matrix is None:
      if hist.get(BLOCKS_KEY) is not None:
        runs[name] = {"matrix": None, **{k: float(v) for k, v in zip(_BLOCKS, hist[BLOCKS_KEY])}}
      continue
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (len(order), len(order)):
      raise ValueError(f"history[{name!r}][{MATRIX_KEY!r}] has shape {matrix.shape}; the split has {len(order)} "
                       "classes in S and U.")
    runs[name] = {"matrix": np.round(matrix, _DIGITS).tolist(), **block_means(matrix, len(class_split.seen))}
  return {"classes": order, "num_seen": len(class_split.seen), "runs": runs} if runs else {}
