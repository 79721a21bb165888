"""Training dynamics of the linear head: how the seen (S) and absent (U) class weights move during fine-tuning.

paper.md (Analyses) tracks the L2 norm of the head weights over S and over U during fine-tuning, and the cosine
similarity of the head-weight updates between U classes. `HeadHistory` records, every few steps of a run, the loss
and `head_statistics` (mean ||w_c|| over S and over U, mean pairwise cosine of the U-column updates) as lists under
HISTORY_KEYS; `summarize` condenses one history for the report's `head_norms` section.
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

HISTORY_KEYS = ("step", "loss", "head_norm_seen", "head_norm_absent", "absent_update_cos")


def head_statistics(kernel: np.ndarray, init_kernel: np.ndarray, seen: np.ndarray,
                    absent: np.ndarray) -> Tuple[float, float, float]:
  """Training-dynamics numbers of the linear head.

  Args:
    kernel: (D, C) head weights now; column c is w_c.
    init_kernel: (D, C) head weights before training.
    seen, absent: (C,) bool masks of S and U.

  Returns:
    (mean ||w_c|| over S, mean ||w_c|| over U (NaN when U is empty), mean pairwise cosine between the updates
    w_c - w_c(0) of the U classes; NaN when fewer than two U classes moved).
  """
  norms = np.linalg.norm(kernel, axis=0)
  mean = lambda x: float(x.mean()) if x.size else float("nan")
  delta = (kernel - init_kernel)[:, absent]
  dn = np.linalg.norm(delta, axis=0)
  moved = dn > 0
  cos = float("nan")
  if moved.sum() >= 2:
    unit = delta[:, moved] / dn[moved]
    gram = unit.T @ unit
    k = gram.shape[0]
    cos = float((gram.sum() - np.trace(gram)) / (k * (k - 1)))
  return mean(norms[seen]), mean(norms[absent]), cos


def class_masks(num_classes: int, classes: Optional[Sequence[int]], split: Any) -> Tuple[np.ndarray, np.ndarray]:
  """The (C,) bool masks (seen, absent) a run's head statistics compare.

  Args:
    num_classes: C, the head width.
    classes: the label ids the run trains on, or None for all.
    split: the job's `class_split.ClassSplit`, or None (pre-training).

  Returns:
    A run on `classes`: those against the rest. The Oracle (all classes, a split): the real S and U.
    Pre-training (no split): every class seen, none absent.
  """
  if classes is not None:  # Trained classes vs the rest.
    seen = np.isin(np.arange(num_classes), classes)
    return seen, ~seen
  if split is not None:  # The Oracle: still report the real S and U.
    return split.seen_mask, split.absent_mask
  return np.ones(num_classes, bool), np.zeros(num_classes, bool)  # Pre-training: every class is seen.


class HeadHistory:
  """The training-dynamics record of one run: {key: list} for each of HISTORY_KEYS, one entry per record.

  Args:
    init_kernel: (D, C) head weights before training (the updates are measured from them).
    seen, absent: (C,) bool masks (see `class_masks`).
  """

  def __init__(self, init_kernel: Any, seen: np.ndarray, absent: np.ndarray):
    self.init_kernel = np.asarray(jax.device_get(init_kernel), np.float64)
    self.seen, self.absent = seen, absent
    self.values: Dict[str, List[float]] = {k: [] for k in HISTORY_KEYS}

  def record(self, step: int, loss: float, kernel: Any) -> None:
    """Appends one entry; `kernel` (D, C) is the head now (a device array is fetched)."""
    kernel = np.asarray(jax.device_get(kernel), np.float64)
    s, u, cos = head_statistics(kernel, self.init_kernel, self.seen, self.absent)
    for k, v in zip(HISTORY_KEYS, (step, loss, s, u, cos)):
      self.values[k].append(v)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.values, f)

  def load(self, path: str, last_step: int) -> None:
    """Resumes from a saved record (if `path` exists), keeping the entries up to `last_step`, the checkpoint's."""
    if not os.path.exists(path):
      return
    with open(path) as f:
      saved = json.load(f)
    keep = [i for i, s in enumerate(saved["step"]) if s <= last_step]
    self.values = {k: [saved[k][i] for i in keep] for k in HISTORY_KEYS}


def summarize(hist: Mapping[str, Sequence[float]]) -> Dict[str, Any]:
  """First/last values of the head-norm history, and the mean U-update cosine."""
  out: Dict[str, Any] = {"num_records": len(hist.get("step", []))}
  if hist.get("step"):
    out["first_step"], out["last_step"] = int(hist["step"][0]), int(hist["step"][-1])
  for key in ("head_norm_seen", "head_norm_absent", "loss"):
    vals = np.asarray(hist.get(key, []), np.float64)
    if vals.size:
      out[key] = {"first": float(vals[0]), "last": float(vals[-1])}
  cos = np.asarray(hist.get("absent_update_cos", []), np.float64)
  cos = cos[np.isfinite(cos)]
  if cos.size:
    out["absent_update_cos"] = {"mean": float(cos.mean()), "last": float(cos[-1])}
  if "head_norm_seen" in out and "head_norm_absent" in out and out["head_norm_absent"]["last"] > 0:
    out["last_norm_ratio_seen_over_absent"] = out["head_norm_seen"]["last"] / out["head_norm_absent"]["last"]
  return out
