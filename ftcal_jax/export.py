"""A deployable calibrated model: the FT parameters with γ folded into the head bias.

Calibration predicts argmax_c z_c + γ·1[c ∈ U]. The head computes z = x·W + b, so adding γ to b_c for every absent
class c gives a plain model whose logits are the calibrated ones: nothing but the weights has to ship. The file is a
vit_jax-style flat `.npz` (models.weights.save_npz), read back like any checkpoint:

  model = get_model("ViT-glyphs/8", num_classes=C)
  init = model.init(rng, jnp.zeros((1, 32, 32, 1)))["params"]  # Glyphs: 32x32 grey images
  params = weights.restore_into(init, weights.load_npz("calibrated.npz"))
  pred = jnp.argmax(model.apply({"params": params}, images)["logits"], axis=-1)

A JSON sidecar (same name, `.json`) records γ, the rule that chose it and the absent classes; the `.npz` holds only
parameters, so `restore_into` sees no unexpected keys.
"""

import json
import math
import os
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np

from ftcal_jax.models import weights

_BIAS = "head/bias"


def fold_gamma(params: Mapping[str, Any], absent_mask: np.ndarray, gamma: float) -> weights.Params:
  """Returns a copy of `params` with head/bias[c] += γ for every c in U; the input is not changed.

  Args:
    params: the model's parameter tree (no {'params': ...} wrapper), with a 'head' of bias (C,).
    absent_mask: (C,) bool, True for classes in U.
    gamma: finite scalar.

  Returns:
    nested dict of numpy arrays, the bias in its own dtype (float32: the same rounding as calibration.shift_absent
    up to the order of the two additions).
  """
  if set(params) == {"params"}:
    raise ValueError("params is a variables dict: pass variables['params'].")
  if not (np.ndim(gamma) == 0 and math.isfinite(float(gamma))):
    raise ValueError(f"gamma must be a finite scalar; got {gamma!r}. A NaN γ means the rule found none (PCV with "
                     "no pseudo-split meeting τ): choose ALG instead.")
  flat = {k: np.asarray(jax.device_get(v)) for k, v in weights.flatten(params).items()}
  if _BIAS not in flat:
    raise ValueError(f"params has no {_BIAS!r}: export needs a model with a classification head.")
  bias = flat[_BIAS]
  absent = np.asarray(absent_mask, bool)
  if absent.shape != bias.shape:
    raise ValueError(f"absent_mask has shape {absent.shape}; the head bias has shape {bias.shape}.")
  flat[_BIAS] = np.where(absent, bias + np.asarray(gamma, bias.dtype), bias).astype(bias.dtype)
  return weights.unflatten(flat)


def export_calibrated(params: Mapping[str, Any], absent_mask: np.ndarray, gamma: float, path: str, *, rule: str,
                      metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
  """Writes the calibrated model as `.npz` (load_npz / restore_into read it) and its `.json` sidecar.

  Args:
    params: the fine-tuned model's parameter tree, or for a model with BatchNorm {'params', 'batch_stats'} (the
      npz then holds 'params/...' and 'batch_stats/...', as a ResNet pre-training npz does).
    absent_mask: (C,) bool, True for classes in U.
    gamma: the chosen γ (finite).
    path: the `.npz` to write; the sidecar is the same path with `.json`.
    rule: how γ was chosen, e.g. 'ALG' or 'PCV'.
    metadata: more JSON-able fields for the sidecar (model name, class names, ...).

  Returns:
    {'npz': path, 'json': sidecar path}.
  """
  if set(params) == {"params", "batch_stats"}:  # A BatchNorm model: γ goes into params, the statistics as they are.
    tree = {"params": fold_gamma(params["params"], absent_mask, gamma), "batch_stats": params["batch_stats"]}
  else:
    tree = fold_gamma(params, absent_mask, gamma)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  weights.save_npz(tree, path)
  sidecar = os.path.splitext(path)[0] + ".json"
  info = {
      "gamma": float(gamma), "rule": rule, "absent_classes": np.flatnonzero(absent_mask).tolist(),
      "note": "head/bias of the absent classes already includes +gamma: predict with a plain argmax.",
      **dict(metadata or {})
  }
  with open(sidecar, "w") as f:
    json.dump(info, f, indent=1)
  return {"npz": path, "json": sidecar}
