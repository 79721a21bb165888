"""``lax.cond`` whose predicate is hoisted over ``jax.vmap`` batches.

Under vmap a batched predicate turns ``lax.cond`` into a select that runs both
branches. Here the vmap rule ORs the predicate over the batch and runs one
branch for the whole batch, so the expensive branch runs only when some member
needs it. That is only correct when ``true_fn`` agrees with ``false_fn``
wherever the latter is right (a repair or an exact fallback), as it is for
every use in this package.
"""

import jax
import jax.numpy as jnp
from jax import lax


def batch_cond(true_fn, false_fn):
  """Returns f(pred, operands) = true_fn(operands) if pred else false_fn(operands)."""

  @jax.custom_batching.custom_vmap
  def cond(pred, operands):
    return lax.cond(pred, true_fn, false_fn, operands)

  @cond.def_vmap
  def _rule(axis_size, in_batched, pred, operands):
    pred_batched, operands_batched = in_batched
    if pred_batched:
      pred = jnp.any(pred)
    operands = jax.tree.map(lambda x, b: x
                            if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)), operands, operands_batched)
    out = lax.cond(pred, jax.vmap(true_fn), jax.vmap(false_fn), operands)
    return out, jax.tree.map(lambda _: True, out)

  return cond
