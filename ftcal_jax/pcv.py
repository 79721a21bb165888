"""PCV, pseudo cross-validation (paper.md): the absent-class γ chosen with seen-class data only.

The protocol, K times (k = 0 .. config.pcv.num_splits - 1):
  1. `pseudo_split`: S is halved at random into S1 (seen) and S2 (pseudo-absent); the real U is set aside.
  2. The pre-trained model is fine-tuned with the same recipe (same epochs) on the 'fit' part of S1's training
     data (train.py runs it as `pcv_<k>`, with the length of half of S's 'fit' data).
  3. Its seen-unseen curve is built on the 'heldout' training data of S1 ∪ S2 with S2 playing U: γ is added to
     the S2 logits only. The real U classes keep their head columns, unshifted, as competitors in every argmax
     (no U data are used; a sample predicted as a U class is simply wrong).
  4. `tau`: τ is the pre-trained model's accuracy on the same S2 samples, over all classes.
  5. `select`: γ_k is the curve point with the best overall accuracy among those whose S2 accuracy is >= τ;
     a split without such a point is skipped (found False).
Then `average`: γ = the mean of γ_k over the splits that found one; report.py applies it to FT's real U logits.

`run` drives the K splits; the fine-tuning itself is a function the caller (train.py) passes in. The curve and
the point selection are calibration.seen_unseen_curve and calibration.pcv_select.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ftcal_jax import calibration
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.evaluation import Predictions


def pseudo_split(split: ClassSplit, seed: int) -> ClassSplit:
  """Step 1: a random half S1 of S is seen, S2 = S \\ S1 is pseudo-absent, and U is set aside (`remaining`).

  S1 gets floor(|S| / 2) classes (at least one); S needs at least 2 classes.
  """
  if len(split.seen) < 2:
    raise ValueError(f"pseudo_split needs at least 2 seen classes to halve; S = {list(split.seen)}.")
  perm = np.random.default_rng(seed).permutation(np.asarray(split.seen))
  n1 = len(split.seen) // 2
  return ClassSplit(split.num_classes, tuple(perm[:n1].tolist()), tuple(perm[n1:].tolist()),
                    tuple(split.remaining) + tuple(split.absent),
                    provenance={"kind": "pseudo", "seed": int(seed), "parent": split.to_dict()})


def tau(logits: np.ndarray, labels: np.ndarray, pseudo_absent: np.ndarray) -> float:
  """Step 4: the pre-trained model's top-1 accuracy on the S2 samples, argmax over all C classes.

  Args:
    logits: (N, C) the pre-trained model's logits on the held-out data.
    labels: (N,) their labels.
    pseudo_absent: (C,) bool, True for S2.

  Returns:
    τ in [0, 1] (NaN when no sample is of S2).
  """
  on_s2 = pseudo_absent[labels]
  return float(np.mean(np.argmax(logits[on_s2], -1) == labels[on_s2]))


def select(heldout: Predictions, pseudo_absent: np.ndarray, threshold: float) -> Tuple[float, bool]:
  """Steps 3 and 5: γ_k on a pseudo-split model's held-out predictions (logits (N, C)), S2 playing U.

  Args:
    heldout: the pseudo-split model's Predictions on the held-out data of S1 ∪ S2.
    pseudo_absent: (C,) bool, True for S2 (the only columns γ shifts).
    threshold: τ in [0, 1] (see `tau`).

  Returns:
    (γ_k, found): γ_k is NaN when no curve point reaches τ.
  """
  curve = calibration.seen_unseen_curve(heldout.logits, heldout.labels, pseudo_absent)
  gamma, found = calibration.pcv_select(curve, threshold)
  return float(gamma), bool(found)


def average(gammas: Sequence[float], found: Sequence[bool]) -> float:
  """The PCV γ: the mean of the (K,) γ_k over the splits that found one; NaN when none did."""
  return float(calibration.pcv_gamma(np.asarray(gammas, np.float64), np.asarray(found, bool)))


def run(split: ClassSplit, pre_heldout: Predictions, fine_tune: Callable[[int, List[int]], Predictions], *,
        num_splits: int, seed: int, log: Callable[[str], None] = print) -> Dict[str, List]:
  """PCV's K pseudo-splits.

  Args:
    split: the job's S/U split.
    pre_heldout: the pre-trained model's Predictions (logits (N, C)) on the held-out training data of S.
    fine_tune: (k, S1 class ids) -> the k-th pseudo-split model's Predictions on the same held-out data.
    num_splits: K.
    seed: split k is drawn with seed + k.
    log: prints one line per split.

  Returns:
    {'gammas': K floats, 'found': K bools, 'taus': K floats in %} (report.build_report's `pcv`).
  """
  out = {"gammas": [], "found": [], "taus": []}
  for k in range(num_splits):
    pseudo = pseudo_split(split, seed=seed + k)
    held = fine_tune(k, list(pseudo.seen))
    t = tau(pre_heldout.logits, pre_heldout.labels, pseudo.absent_mask)
    gamma, found = select(held, pseudo.absent_mask, t)
    out["gammas"].append(gamma)
    out["found"].append(found)
    out["taus"].append(100.0 * t)  # The report's accuracies are in %.
    log(f"pcv_{k}: tau {100 * t:.1f}% (pre-trained on S2), gamma_k {gamma:.3f} (found {found})")
  return out
