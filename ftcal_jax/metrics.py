"""Accuracy splits, softmax decomposition and the NCM classifier (paper.md).

Accuracies here are percentages, as in the paper; :mod:`ftcal_jax.calibration`
works on [0, 1]. Shapes and conventions (``absent_mask``, ``class_mask``, NaN
as -inf, first index wins ties, NaN for an empty sample group) are those of
:mod:`ftcal_jax.calibration`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ftcal_jax import validation

Array = jax.Array


def _clean(logits, class_mask):
  z = jnp.where(jnp.isnan(logits), -jnp.inf, logits)
  return jnp.where(class_mask, z, -jnp.inf)


def _rank(z, labels, candidates):
  """(N,) position of the label in a stable descending sort over candidates."""
  z_true = jnp.take_along_axis(z, labels[:, None], axis=1)
  idx = jnp.arange(z.shape[1])
  ahead = (z > z_true) | ((z == z_true) & (idx < labels[:, None]))
  return jnp.sum(ahead & candidates, axis=1)


def _mean_pct(hit, rows):
  # Integer counts, one correctly rounded division. The barrier keeps XLA from
  # turning division by a count it can fold into a constant into a multiply by
  # its rounded reciprocal (that gave 100.0000076 %).
  count = lax.optimization_barrier(jnp.sum(rows, dtype=jnp.int32))
  return (100 * jnp.sum(hit & rows, dtype=jnp.int32)) / count


@functools.partial(jax.jit, static_argnames="k")
def _accuracies(logits, labels, absent_mask, class_mask, k):
  z = _clean(logits, class_mask)
  seen_cls, absent_cls = validation.class_rows(absent_mask, class_mask)
  rank_s = _rank(z, labels, seen_cls)
  rank_u = _rank(z, labels, absent_cls)
  # Over all kept classes the rank is the sum: S and U partition them.
  hit_all = rank_s + rank_u < k
  seen_rows = seen_cls[labels]
  absent_rows = absent_cls[labels]
  every = jnp.ones_like(seen_rows)
  return {
      "acc_y/y": _mean_pct(hit_all, every),
      "acc_s/y": _mean_pct(hit_all, seen_rows),
      "acc_u/y": _mean_pct(hit_all, absent_rows),
      "acc_s/s": _mean_pct(rank_s < k, seen_rows),
      "acc_u/u": _mean_pct(rank_u < k, absent_rows),
  }


def _positive_int(value, name):
  """value as a Python int >= 1 (ints, NumPy integers, integral floats), or ValueError."""
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be a positive int; got the bool {value!r}.")
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    value = int(value)
  if not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int; got {value!r} ({type(value).__name__}).")
  return int(value)


def accuracies(logits, labels, absent_mask, k=1, class_mask=None) -> dict:
  """The paper's five accuracies, top-k, in percent.

  Top-k counts a sample correct when its label ranks among the k best
  candidate classes, ties broken by index (the lower index ranks first).

  Args:
    logits: (N, C) float; NaN counts as -inf.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    k: int >= 1 (a NumPy integer or an integral float is accepted).
    class_mask: optional (C,) bool; False drops a class from every argmax
      (e.g. the 200 ImageNet-R classes of a 1000-way head). Default: keep all.

  Returns:
    dict of scalars 'acc_y/y', 'acc_s/y', 'acc_u/y' (argmax over all kept
    classes, on all / S / U samples) and 'acc_s/s', 'acc_u/u' (S samples over
    S classes, U samples over U classes). NaN for an empty sample group.
  """
  k = _positive_int(k, "k")
  logits, labels, absent_mask, class_mask = validation.checked_inputs(logits, labels, absent_mask, class_mask)
  keep = jnp.ones_like(absent_mask) if class_mask is None else class_mask
  return _accuracies(logits, labels, absent_mask, keep, k)


@jax.jit
def _softmax_decomposition(logits, labels, absent_mask, class_mask):
  z = _clean(logits.astype(jnp.float32), class_mask)
  _, absent_cls = validation.class_rows(absent_mask, class_mask)
  z_absent = jnp.where(absent_cls, z, -jnp.inf)
  log_total = jax.nn.logsumexp(z, axis=1)
  log_absent = jax.nn.logsumexp(z_absent, axis=1)
  p_absent = jnp.exp(log_absent - log_total)
  # p(c | x, U) as a softmax over U alone: stable even when p(U|x) underflows.
  p_within = jnp.where(absent_cls, jax.nn.softmax(z_absent, axis=1), 0.0)
  rows = absent_cls[labels]
  return {
      "p_absent": p_absent,
      "p_within_absent": p_within,
      "mean_p_absent_on_absent": jnp.sum(jnp.where(rows, p_absent, 0.0)) / jnp.sum(rows),
      "mean_p_absent_on_seen": jnp.sum(jnp.where(rows, 0.0, p_absent)) / jnp.sum(~rows & class_mask[labels]),
  }


def softmax_decomposition(logits, labels, absent_mask, class_mask=None) -> dict:
  """Splits p(c|x) = p(U|x)·p(c|x, U) for absent classes c.

  Args:
    logits: (N, C) float; NaN counts as -inf.
    labels: (N,) int in [0, C).
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool; dropped classes leave the softmax.

  Returns:
    dict with 'p_absent' (N,) p(U|x); 'p_within_absent' (N, C) p(c|x, U), 0
    for c not in U; 'mean_p_absent_on_absent' and 'mean_p_absent_on_seen',
    mean p(U|x) over U / S samples (NaN if there are none); and 'acc_u/u' in
    percent. A row whose kept logits are all -inf gives NaN probabilities.
  """
  logits, labels, absent_mask, class_mask = validation.checked_inputs(logits, labels, absent_mask, class_mask)
  keep = jnp.ones_like(absent_mask) if class_mask is None else class_mask
  out = _softmax_decomposition(logits, labels, absent_mask, keep)
  out["acc_u/u"] = _accuracies(logits, labels, absent_mask, keep, 1)["acc_u/u"]
  return out


def _l2_normalise(x, axis=-1, eps=1e-12):
  norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, eps)


@functools.partial(jax.jit, static_argnames="num_classes")
def _ncm_class_means(features, labels, num_classes):
  f = _l2_normalise(features.astype(jnp.float32))
  sums = jax.ops.segment_sum(f, labels, num_segments=num_classes)
  # Normalising the mean makes dividing by the count redundant; an empty
  # class keeps a zero row.
  return _l2_normalise(sums)


def ncm_class_means(features, labels, num_classes: int) -> Array:
  """Class means for the nearest-class-mean (NCM) classifier.

  Features are L2-normalised, averaged per class, and the means normalised
  again. Note paper.md: means from the FULL target training set (absent
  classes included) make NCM a feature-quality diagnostic, not a method.

  Args:
    features: (N, D) float.
    labels: (N,) int in [0, num_classes).
    num_classes: C, a positive int (an integral float such as 5.0 is accepted).

  Returns:
    (C, D) unit rows; a class with no samples gets a zero row, which
    :func:`ncm_logits` scores -inf so it is never predicted.
  """
  num_classes = _positive_int(num_classes, "num_classes")
  features, labels = validation.as_arrays(features, labels)
  if jnp.ndim(features) != 2 or jnp.shape(labels) != jnp.shape(features)[:1]:
    raise ValueError(f"features must be (N, D) and labels (N,); got "
                     f"{jnp.shape(features)} and {jnp.shape(labels)}.")
  lab = validation.concrete(labels)
  if lab is not None and lab.size and (lab.min() < 0 or lab.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes}); got range "
                     f"[{lab.min()}, {lab.max()}].")
  return _ncm_class_means(features, labels, num_classes)


def ncm_logits(features, class_means) -> Array:
  """Cosine similarity of each sample to each class mean.

  Args:
    features: (N, D) float (normalised here).
    class_means: (C, D) from :func:`ncm_class_means`.

  Returns:
    (N, C) in [-1, 1]; -inf for classes whose mean is a zero row.
  """
  features, class_means = validation.as_arrays(features, class_means)
  if jnp.shape(features)[-1:] != jnp.shape(class_means)[-1:]:
    raise ValueError(f"feature size {jnp.shape(features)} does not match "
                     f"class_means {jnp.shape(class_means)}.")
  return _ncm_logits(features, class_means)


@jax.jit
def _ncm_logits(features, class_means):
  f = _l2_normalise(features.astype(jnp.float32))
  m = _l2_normalise(class_means.astype(jnp.float32))
  empty = jnp.all(class_means == 0, axis=-1)
  return jnp.where(empty, -jnp.inf, f @ m.T)
