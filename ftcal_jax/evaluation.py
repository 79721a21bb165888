"""One prediction pass: logits and features for a model, cached as host numpy arrays.

Prediction is kept apart from evaluation (big_vision's habit): the model runs once over the test or training
split, and every metric, curve and calibration then works on the cached `Predictions`, never re-running the model.

The pass is data-parallel: images are sharded on P('data') over a `Mesh`, params are replicated, and the padded
rows that the eval iterator adds to fill the last batch are dropped on the host with `batch['mask']`.

`cached_predictions` keeps a run's passes in one `predictions.npz` (guarded by a config fingerprint), so a rerun
of a finished job evaluates nothing again.
"""

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from ftcal_jax import atomic_write
from ftcal_jax import caches
from ftcal_jax import checkpointing
from ftcal_jax import input_pipeline

History = Dict[str, List[float]]


@dataclasses.dataclass(frozen=True)
class Predictions:
  """A model's outputs on one split, padding removed.

  Attributes:
    logits: (N, C) float32 logits over the whole head.
    features: (N, D) float32 pre-logits features (what NCM uses).
    labels: (N,) int32 ground-truth labels.
  """
  logits: np.ndarray
  features: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    # Frozen dataclass: normalise dtypes through object.__setattr__ once, at construction.
    object.__setattr__(self, "logits", np.asarray(self.logits, np.float32))
    object.__setattr__(self, "features", np.asarray(self.features, np.float32))
    object.__setattr__(self, "labels", np.asarray(self.labels, np.int32))
    n = self.labels.shape[0]
    if self.labels.ndim != 1 or self.logits.ndim != 2 or self.features.ndim != 2:
      raise ValueError(f"Predictions wants logits (N, C), features (N, D), labels (N,); got "
                       f"{self.logits.shape}, {self.features.shape}, {self.labels.shape}.")
    if self.logits.shape[0] != n or self.features.shape[0] != n:
      raise ValueError(f"Predictions rows disagree: logits {self.logits.shape[0]}, features "
                       f"{self.features.shape[0]}, labels {n}.")

  @property
  def num_examples(self) -> int:
    return int(self.labels.shape[0])

  @property
  def num_classes(self) -> int:
    return int(self.logits.shape[1])

  def restrict_classes(self, class_mask: np.ndarray) -> "Predictions":
    """Keeps only the head classes in `class_mask` (C,) bool, re-indexing labels to the kept columns.

    Used when the head covers classes the dataset lacks and the config masks them out: dropping the columns is
    the same as setting them to -inf for every argmax, and keeps means (ALG) finite.
    """
    class_mask = np.asarray(class_mask, bool)
    if class_mask.shape != (self.num_classes,):
      raise ValueError(f"class_mask has shape {class_mask.shape}; the head has {self.num_classes} classes.")
    if not class_mask[self.labels].all():
      bad = sorted(set(self.labels[~class_mask[self.labels]].tolist()))
      raise ValueError(f"Labels {bad[:10]} fall in head classes that class_mask excludes; the mask must keep "
                       f"every class the dataset has.")
    new_index = np.cumsum(class_mask) - 1
    return Predictions(self.logits[:, class_mask], self.features, new_index[self.labels])


@functools.lru_cache(maxsize=8)
def make_predict_fn(model: Any,
                    input_affine: input_pipeline.InputAffine = None) -> Callable[..., Tuple[jax.Array, jax.Array]]:
  """Returns a jitted `(params, images, batch_stats=None) -> (logits, pre_logits)` for a Flax model.

  The function carries no shardings of its own: called with images sharded on P('data') and replicated params
  (as `predict` places them), XLA runs it data-parallel and the outputs stay sharded on P('data'). Cached per
  model (Linen modules hash by their fields), so repeated passes do not retrace.

  Args:
    model: a Flax module whose `apply(..., train=False)` returns {'logits', 'pre_logits', ...}.
    input_affine: the checkpoint's input normalisation of the [-1, 1] images (input_pipeline.model_input_affine).

  Returns:
    fn(params, images (B, H, W, ch), batch_stats) -> (logits (B, C) f32, pre_logits (B, D) f32); batch_stats are
    the BatchNorm running statistics of a model that has them (eval mode uses them), else None.
  """

  @jax.jit
  def predict_fn(params, images, batch_stats=None):
    variables = {"params": params} if batch_stats is None else {"params": params, "batch_stats": batch_stats}
    out = model.apply(variables, input_pipeline.apply_input_affine(images, input_affine), train=False)
    return out["logits"], out["pre_logits"]

  return predict_fn


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  pad = (-x.shape[0]) % multiple
  if not pad:
    return x
  return np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)


def _to_host(x: jax.Array) -> np.ndarray:
  # On several hosts the global array is not addressable from one process: gather it (tiled on the batch axis).
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def predict(model: Any, params: Any, batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh, *,
            batch_stats: Any = None, input_affine: input_pipeline.InputAffine = None) -> Predictions:
  """Runs `model` over host-local eval batches and returns the concatenated, unpadded predictions.

  Args:
    model: Flax model (see `make_predict_fn`).
    params: the model's params pytree (placed replicated over `mesh` here).
    batches: iterable of host-local dicts {'image': (B, H, W, ch), 'label': (B,), 'mask': (B,) bool}. 'mask'
      marks real rows (padding is False); without it every row counts. B may vary and need not divide the device
      count: rows are zero-padded to a multiple of the local devices on the 'data' axis and then dropped.
    mesh: a Mesh with a 'data' axis.
    batch_stats: the BatchNorm running statistics of a model that has them (a ResNet), else None.
    input_affine: the checkpoint's input normalisation of the [-1, 1] images (input_pipeline.model_input_affine).

  Returns:
    Predictions with logits (N, C), features (N, D), labels (N,), N = number of real rows, in input order.
  """
  if "data" not in mesh.axis_names:
    raise ValueError(f"predict needs a mesh with a 'data' axis; got axes {mesh.axis_names}.")
  replicated = NamedSharding(mesh, P())
  # Each host feeds its own devices: local rows must split evenly over the local share of the 'data' axis.
  local_shards = max(1, mesh.shape["data"] // jax.process_count())
  params, batch_stats = jax.device_put((params, batch_stats), replicated)
  predict_fn = make_predict_fn(model, input_affine)

  logits, features, labels = [], [], []
  for batch in batches:
    images = np.asarray(batch["image"], np.float32)
    n = images.shape[0]
    mask = np.asarray(batch.get("mask", np.ones((n,), bool)), bool)
    if mask.shape != (n,):
      raise ValueError(f"batch['mask'] has shape {mask.shape}, expected ({n},).")
    host = {
        "image": _pad_rows(images, local_shards),
        "label": _pad_rows(np.asarray(batch["label"], np.int32), local_shards), "mask": _pad_rows(mask, local_shards)
    }
    glob = input_pipeline.shard_batch(host, mesh)
    out_logits, out_features = predict_fn(params, glob["image"], batch_stats)
    keep = _to_host(glob["mask"])
    logits.append(_to_host(out_logits)[keep])
    features.append(_to_host(out_features)[keep])
    labels.append(_to_host(glob["label"])[keep])
  if not labels:
    raise ValueError("predict got no batches: check the eval iterator (split name, class filter).")
  return Predictions(np.concatenate(logits), np.concatenate(features), np.concatenate(labels))


def _save_predictions(path: str, preds: Mapping[str, Predictions], fingerprint: str,
                      history: Optional[Mapping[str, List[float]]] = None) -> None:
  if jax.process_index() != 0:
    return
  arrays = {"fingerprint": np.asarray(fingerprint)}
  for kind, p in preds.items():
    arrays.update({f"{kind}/logits": p.logits, f"{kind}/features": p.features, f"{kind}/labels": p.labels})
  for k, v in (history or {}).items():
    arrays[f"history/{k}"] = np.asarray(v, np.float64)
  atomic_write.save_npz(path, **arrays)  # A killed job never leaves a half-written cache.


def _load_predictions(path: str, fingerprint: str) -> Optional[Tuple[Dict[str, Predictions], History]]:
  """(predictions by kind, history) from a cache; None when there is none, or (with a warning) when it is damaged."""
  f = caches.read_npz(path, required=("fingerprint",))
  if f is None:
    return None
  stored = str(f["fingerprint"])
  if stored != fingerprint:
    raise checkpointing.ConfigMismatchError(
        f"{path} was written under a different config (fingerprint {stored}, this run {fingerprint}). Use a "
        "fresh --workdir, or delete that directory to start over.")
  kinds = sorted({k.split("/")[0] for k in f if k.endswith("/logits")})
  missing = [f"{k}/{part}" for k in kinds for part in ("features", "labels") if f"{k}/{part}" not in f]
  if missing or not kinds:
    caches.warn_damaged(path, f"missing arrays {missing or ['*/logits']}")
    return None
  preds = {k: Predictions(f[f"{k}/logits"], f[f"{k}/features"], f[f"{k}/labels"]) for k in kinds}
  history = {k.split("/", 1)[1]: f[k].tolist() for k in f if k.startswith("history/")}
  return preds, history


def cached_predictions(
    path: str, fingerprint: str, compute: Callable[[], Tuple[Mapping[str, Predictions], Optional[History]]]
) -> Tuple[Dict[str, Predictions], History, bool]:
  """A run's prediction passes from its cache file, or computed once and cached there.

  Args:
    path: the cache, an .npz file (its directory is created if missing).
    fingerprint: a hash of everything the passes depend on (checkpointing.fingerprint of the run's config).
    compute: () -> ({kind: Predictions}, history or None); called only when there is no cache yet. The history
      ({name: list of floats}, e.g. the training-dynamics record) is cached beside the predictions.

  Returns:
    (predictions by kind, history, cached): cached is True when they came from the file.

  Raises:
    checkpointing.ConfigMismatchError: the file was written under another fingerprint.
  """
  loaded = _load_predictions(path, fingerprint)
  if loaded is not None:
    return loaded[0], loaded[1], True
  preds, history = compute()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  # Only process 0 writes; the file is replaced atomically.
  _save_predictions(path, preds, fingerprint, history)
  return dict(preds), history if history is not None else {}, False
