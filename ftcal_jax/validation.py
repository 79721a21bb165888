"""Input checks shared by :mod:`ftcal_jax.calibration` and :mod:`ftcal_jax.metrics`.

Shapes are always checked; values (label range, empty S or U, finite γ) only
when the arrays are concrete, so the public functions stay usable under
``jax.jit`` and ``jax.vmap``. Every problem raises ``ValueError``.
"""

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x):
  """Returns x as a NumPy array, or None when x is a tracer."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def as_arrays(*xs):
  """Array-likes (lists, tuples, scalars) as NumPy arrays; arrays and None as given."""
  return tuple(x if x is None or isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x) for x in xs)


def checked_inputs(logits, labels, absent_mask, class_mask=None):
  """:func:`as_arrays`, then :func:`validate_inputs`; returns the four arrays."""
  logits, labels, absent_mask, class_mask = as_arrays(logits, labels, absent_mask, class_mask)
  validate_inputs(logits, labels, absent_mask, class_mask)
  return logits, labels, absent_mask, class_mask


def validate_inputs(logits, labels, absent_mask, class_mask=None):
  """Checks shapes always, and values when the arrays are concrete.

  Args:
    logits: (N, C) float array.
    labels: (N,) int array in [0, C), or None when there are no labels.
    absent_mask: (C,) bool, True for classes in U.
    class_mask: optional (C,) bool, True for classes the evaluation keeps.

  Raises:
    ValueError: naming the problem and the fix.
  """
  if jnp.ndim(logits) != 2:
    raise ValueError(f"logits must be (N, C); got shape {jnp.shape(logits)}. Vmap over "
                     "extra leading axes.")
  n, c = jnp.shape(logits)
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise ValueError(f"logits must be floating point, got {jnp.result_type(logits)}.")
  if jnp.shape(absent_mask) != (c,):
    raise ValueError(f"absent_mask must have shape (C,) = ({c},) to match logits; got "
                     f"{jnp.shape(absent_mask)}.")
  if jnp.result_type(absent_mask) != jnp.bool_:
    raise ValueError(f"absent_mask must be bool (True = absent class); got dtype "
                     f"{jnp.result_type(absent_mask)}. Build it with "
                     "jnp.zeros(C, bool).at[absent_ids].set(True).")
  if class_mask is not None:
    if jnp.shape(class_mask) != (c,) or jnp.result_type(class_mask) != jnp.bool_:
      raise ValueError(f"class_mask must be a bool array of shape ({c},); got "
                       f"{jnp.shape(class_mask)} {jnp.result_type(class_mask)}.")
  if labels is not None:
    if jnp.shape(labels) != (n,):
      raise ValueError(f"labels must have shape (N,) = ({n},) to match logits; got "
                       f"{jnp.shape(labels)}.")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
      raise ValueError(f"labels must be integers, got {jnp.result_type(labels)}.")
  _validate_values(c, labels, absent_mask, class_mask)


def _validate_values(c, labels, absent_mask, class_mask):
  """The value checks of :func:`validate_inputs`, on concrete arrays only."""
  absent = concrete(absent_mask)
  keep = np.ones(c, bool) if class_mask is None else concrete(class_mask)
  if absent is not None and keep is not None:
    if not np.any(~absent & keep):
      raise ValueError("The seen set S is empty: absent_mask marks every "
                       "(kept) class as absent.")
    if not np.any(absent & keep):
      raise ValueError("The absent set U is empty: absent_mask marks no "
                       "(kept) class as absent.")
  lab = None if labels is None else concrete(labels)
  if lab is not None and lab.size:
    if lab.min() < 0 or lab.max() >= c:
      raise ValueError(f"labels must lie in [0, C) = [0, {c}); got range "
                       f"[{lab.min()}, {lab.max()}].")
    if keep is not None and not np.all(keep[lab]):
      raise ValueError("Some labels are classes that class_mask drops; keep "
                       "them in class_mask or remove those samples.")


def validate_gamma(gamma, name="gamma"):
  """Raises if a concrete γ (scalar or array) has a NaN or inf entry."""
  g = concrete(gamma)
  if g is not None and not np.all(np.isfinite(g)):
    raise ValueError(f"{name} must be finite; got {g}.")


def class_rows(absent_mask, class_mask):
  """(C,) bool masks of S and U after class_mask (None keeps every class)."""
  keep = jnp.ones_like(absent_mask) if class_mask is None else class_mask
  return keep & ~absent_mask, keep & absent_mask
