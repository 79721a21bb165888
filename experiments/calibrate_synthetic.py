"""Calibration on synthetic biased logits: curve, AUSUC, ALG, PCV-style and γ*.

Run: .venv/bin/python experiments/calibrate_synthetic.py

A stand-in for a fine-tuned model: logits favour the true class, but absent
classes are pushed down by a bias, as fine-tuning on S alone does. The script
prints the accuracies before and after shifting U by ALG (from S-only
"training" logits) and by the oracle γ*, and the AUSUC.
"""

import numpy as np

from ftcal_jax import calibration as cal
from ftcal_jax import metrics


def biased_logits(rng, n, absent, bias=3.0, signal=2.5):
  c = absent.shape[0]
  labels = rng.integers(0, c, n).astype(np.int32)
  logits = rng.normal(size=(n, c)).astype(np.float32)
  logits[np.arange(n), labels] += signal
  logits[:, absent] -= bias
  return logits, labels


def main():
  rng = np.random.default_rng(0)
  num_classes = 20
  absent = np.arange(num_classes) >= 10
  test_logits, test_labels = biased_logits(rng, 4000, absent)
  train_logits, train_labels = biased_logits(rng, 4000, absent)
  keep = ~absent[train_labels]  # fine-tuning data hold S samples only
  train_logits, train_labels = train_logits[keep], train_labels[keep]

  curve = cal.seen_unseen_curve(test_logits, test_labels, absent)
  print(f"curve points: {int(curve.valid.sum())}, AUSUC = {float(cal.ausuc(curve)):.4f}")
  gamma_alg = float(cal.alg_gamma(train_logits, train_labels, absent))
  gamma_star, best = cal.oracle_gamma(test_logits, test_labels, absent)
  for name, gamma in [("no calibration", 0.0), ("ALG", gamma_alg), ("oracle γ*", float(gamma_star))]:
    acc = metrics.accuracies(cal.shift_absent(test_logits, absent, gamma), test_labels, absent)
    print(f"{name:15s} γ = {gamma:+.3f}: " + ", ".join(f"{k} {float(v):5.1f}" for k, v in acc.items()))
  grid = cal.evaluate_gamma_grid(test_logits, test_labels, absent, np.linspace(-2, 8, 11).astype(np.float32))
  print("γ grid -2..8, Acc_y/y %:", " ".join(f"{100 * float(a):.1f}" for a in grid["acc_all"]))


if __name__ == "__main__":
  main()
