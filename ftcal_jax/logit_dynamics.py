"""Logit dynamics over training: where the logits of held-out absent-class (U) samples go while FT trains on S.

At every record of a run's history (the log_every_steps cadence, training_dynamics.HeadHistory), a `LogitProbe`
runs the model once, jitted, over a small fixed set of U samples and appends three means over those samples:

  u_logit_gt           the ground-truth logit z_y(x),
  u_logit_max_other_u  the largest logit among the OTHER U classes, max_{c in U, c != y} z_c(x),
  u_logit_max_s        the largest S logit, max_{c in S} z_c(x),

and u_logit_samples, the number of samples (constant over a run). When u_logit_max_s rises above u_logit_gt, U
samples are sent to S; the gap between u_logit_gt and u_logit_max_other_u is how well U classes stay apart.

The samples: the first ceil(n / |U|) samples of each U class, in the dataset's order, of the FINE-TUNING split
(config.dataset.train_split), at most config.analyses.logit_samples in all. The runs that train on S only never
see them, so they are held out for those runs without touching the test set. A run that trains on U (the Oracle,
pre-training) or on another class set (PCV's pseudo-splits) gets no probe. The curves are stored in the run's
history, so they survive a resume like the head norms do.
"""

import functools
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from ftcal_jax import input_pipeline

KEYS = ("u_logit_gt", "u_logit_max_other_u", "u_logit_max_s", "u_logit_samples")


def logit_statistics(logits: Any, labels: Any, seen: np.ndarray, absent: np.ndarray) -> Tuple[Any, Any, Any]:
  """The three means over samples of U classes (works on numpy and on traced arrays).

  Args:
    logits: (N, C) logits of N samples whose labels are all in U.
    labels: (N,) int labels.
    seen, absent: (C,) bool masks of S and U (classes in neither are ignored).

  Returns:
    (mean z_y, mean max_{c in U, c != y} z_c, mean max_{c in S} z_c), () float32 each; the second is NaN when U has
    a single class.
  """
  logits = jnp.asarray(logits, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  gt = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  other_u = jnp.asarray(absent, bool)[None, :] & (jnp.arange(logits.shape[1])[None, :] != labels[:, None])
  max_other_u = jnp.max(jnp.where(other_u, logits, -jnp.inf), axis=1)
  max_s = jnp.max(jnp.where(jnp.asarray(seen, bool)[None, :], logits, -jnp.inf), axis=1)
  mean_other_u = jnp.where(other_u.any(), jnp.mean(jnp.where(other_u.any(axis=1), max_other_u, 0.0)), jnp.nan)
  return gt.mean(), mean_other_u, max_s.mean()


@functools.partial(jax.jit, static_argnums=0)
def _probe_statistics(model: Any, variables: Any, images: jax.Array, labels: jax.Array, seen: jax.Array,
                      absent: jax.Array):
  # Module-level and keyed by the (hashable) model: every run of a job shares one compilation.
  logits = model.apply(variables, images, train=False)["logits"]
  return logit_statistics(logits, labels, seen, absent)


class LogitProbe:
  """params -> {KEYS: float}: one jitted forward over fixed U samples, placed once, replicated on the mesh.

  Args:
    model: the Flax model (apply(..., train=False) returns {'logits', ...}); hashable, as Linen modules are.
    images: (N, H, W, ch) float32 samples of U classes.
    labels: (N,) their labels.
    seen, absent: (C,) bool masks of S and U.
    mesh: the job's device mesh.
  """
  keys = KEYS

  def __init__(self, model: Any, images: np.ndarray, labels: np.ndarray, seen: np.ndarray, absent: np.ndarray,
               mesh: Any):
    replicated = NamedSharding(mesh, P())
    self.num_samples = int(labels.shape[0])
    self._model = model
    self._inputs = jax.device_put((np.asarray(images, np.float32), np.asarray(labels, np.int32), np.asarray(
        seen, bool), np.asarray(absent, bool)), replicated)

  def __call__(self, variables: Any) -> Dict[str, float]:
    """`variables`: {'params'} and, with BatchNorm, {'batch_stats'} (trainer.variables_of)."""
    values = [float(v) for v in jax.device_get(_probe_statistics(self._model, dict(variables), *self._inputs))]
    return dict(zip(KEYS, values + [float(self.num_samples)]))


# The last job's samples: {'key': (split, absent, max_samples), 'dataset': the dataset, 'samples': (images, labels)}.
# FT and every S-only baseline of a job share them, read once (datasets are not hashable, so no lru_cache).
_LAST: Dict[str, Any] = {}


def held_out_samples(dataset: Any, split: str, absent: Tuple[int, ...], max_samples: int,
                     batch: int) -> Tuple[np.ndarray, np.ndarray]:
  """The probe's samples, read once per (dataset, split, U, max_samples); see `_read_samples`."""
  key = (split, absent, max_samples)
  if _LAST.get("dataset") is not dataset or _LAST.get("key") != key:
    _LAST.update(dataset=dataset, key=key, samples=_read_samples(dataset, split, absent, max_samples, batch))
  return _LAST["samples"]


def _read_samples(dataset: Any, split: str, absent: Tuple[int, ...], max_samples: int,
                  batch: int) -> Tuple[np.ndarray, np.ndarray]:
  """The first ceil(max_samples / |U|) samples of each U class of `split`, at most max_samples in all.

  Returns:
    (images (N, H, W, ch) float32, labels (N,) int32), grouped by class in the order of `absent`.
  """
  per_class = math.ceil(max_samples / len(absent))
  kept: Dict[int, list] = {c: [] for c in absent}
  # Every host reads the same samples (process 0 of 1), since the probe's inputs are replicated.
  for b in dataset.eval_batches(split, global_batch=batch, classes=list(absent), process_index=0, process_count=1):
    mask = np.asarray(b.get("mask", np.ones(len(b["label"]), bool)), bool)
    for image, label in zip(np.asarray(b["image"])[mask], np.asarray(b["label"])[mask]):
      if len(kept[int(label)]) < per_class:
        kept[int(label)].append(image)
    if all(len(v) >= per_class for v in kept.values()):
      break
  labels = np.concatenate([np.full(len(kept[c]), c, np.int32) for c in absent])[:max_samples]
  if not labels.size:  # U has no samples in this split (e.g. species only in the test split).
    return np.zeros((0,) + tuple(dataset.image_shape), np.float32), labels
  images = np.stack([im for c in absent for im in kept[c]])[:max_samples]
  return images.astype(np.float32), labels


def make_probe(ctx: Any, classes: Optional[Sequence[int]]) -> Optional[LogitProbe]:
  """The probe of one run (trainer.JobContext `ctx`), or None: analysis off, or the run does not train on S only."""
  split, cfg = ctx.split, ctx.config.analyses
  if not cfg.logit_dynamics or split is None or classes is None or not len(split.absent):
    return None
  if sorted(int(c) for c in classes) != sorted(int(c) for c in split.seen):
    return None  # Only S-only runs: their U samples are held out.
  images, labels = held_out_samples(ctx.dataset, ctx.dataset.train_split, tuple(int(c) for c in split.absent),
                                    int(cfg.logit_samples), int(ctx.config.eval_batch_size))
  if not labels.size:
    ctx.progress(f"logit dynamics: no samples of U in {ctx.dataset.train_split}; not recorded")
    return None
  # The checkpoint's input normalisation, once on the host: the samples are fixed.
  images = np.asarray(input_pipeline.apply_input_affine(images, ctx.input_affine), np.float32)
  return LogitProbe(ctx.model, images, labels, split.seen_mask, split.absent_mask, ctx.mesh)


def summarize(history: Mapping[str, Mapping[str, Sequence[float]]]) -> Dict[str, Any]:
  """The report's `logit_dynamics` section: per run with curves, the first and last value of each mean.

  Returns:
    {run: {'num_samples', 'first_step', 'last_step', KEY: {'first', 'last'} for the three means,
    'last_gt_minus_max_s'}}; runs without the curves are skipped.
  """
  out: Dict[str, Any] = {}
  for name, hist in history.items():
    if not hist.get(KEYS[0]):
      continue
    row: Dict[str, Any] = {
        "num_samples": int(hist[KEYS[3]][-1]), "first_step": int(hist["step"][0]), "last_step": int(hist["step"][-1])
    }
    for key in KEYS[:3]:
      row[key] = {"first": float(hist[key][0]), "last": float(hist[key][-1])}
    row["last_gt_minus_max_s"] = row[KEYS[0]]["last"] - row[KEYS[2]]["last"]
    out[name] = row
  return out
