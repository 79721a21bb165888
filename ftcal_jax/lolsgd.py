"""Leave-out local SGD (LOLSGD), the other half of Holistic Transfer (Tu et al., NeurIPS 2023, arXiv 2311.01420).

Registered as the method 'holistic_transfer_lolsgd' (methods.py): LOLSGD combined with the variant's frozen
classifier and U-logit distillation (holistic_transfer.py), the method's train step run in every local copy.

What follows the paper's description (as paper.md gives it; its code does not release this part):
  * Each round, M local copies of the model fine-tune from the current model for a few steps on the fine-tuning
    data, each with a random subset of the fine-tuning classes S left out of its data.
  * The round's update is the average of the M local updates: theta <- theta + mean_m (theta_m - theta). The
    class-specific parts of the updates (each copy lacks different classes) then tend to cancel, and the shared
    domain-adaptation direction remains.
  * Combined with "preserve the class relationships": the head is frozen and the U logits are distilled from the
    pre-trained model, in each local step (the 'holistic_transfer' loss).

What is this implementation's choice (config.holistic_transfer.lolsgd_*, base_config.py):
  * M = lolsgd_copies (default 4), the local steps K = lolsgd_local_steps (default 4), the left-out share
    f = lolsgd_leave_out (default 0.5): each copy leaves out round(f * |S|) classes of S, drawn uniformly without
    replacement, afresh for each copy and round.
  * The data of a round: one global batch of B examples (the trainer's batch; one round is one trainer step, so
    a run has as many rounds as FT has steps). Copy m keeps the examples whose class it does not leave out and
    fills all B slots by cycling over them in batch order (so each kept example counts about 1 / (1 - f) times,
    as in a loader drawing from S minus the left-out classes); its K local steps take consecutive B / K slots. A
    batch with no kept example for a copy (all its labels left out) makes that copy's update zero.
  * Local steps: the method's optimiser (SGD + Nesterov in the paper's recipe) at the round's learning rate (the
    schedule advances once per round). Each copy starts from the current optimiser state; the new state is the
    mean of the copies' states (momentum carries over, as if one model had taken the averaged path).
  * The copies run in parallel (vmap over M, scan over K), inside one jitted step that is data-parallel over the
    mesh like train_step.py: about M times FT's compute per round.
With M = 1 and f = 0 a round is exactly K plain local SGD steps at a constant learning rate (tests/test_lolsgd.py).
"""

from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ftcal_jax import train_step as train_step_lib

PyTree = Any


def num_left_out(num_seen: int, leave_out: float) -> int:
  """round(leave_out * |S|): how many classes of S each copy leaves out; at most |S| - 1."""
  if not 0.0 <= leave_out < 1.0:
    raise ValueError(f"holistic_transfer.lolsgd_leave_out must be in [0, 1); got {leave_out}.")
  return min(int(round(leave_out * num_seen)), num_seen - 1)


def round_rngs(rng, step) -> Tuple[jax.Array, jax.Array]:
  """(the round's data rng, the copies' rng root) for round `step`: what the leave-out draws and the copies use."""
  rng = jax.random.fold_in(rng, step)
  return jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)


def local_batches(batch: Dict[str, jnp.ndarray], rng, seen: Sequence[int], num_classes: int, *, copies: int,
                  local_steps: int, leave_out: float) -> Tuple[Dict[str, jnp.ndarray], jnp.ndarray, jnp.ndarray]:
  """Each copy's K local batches: the round's batch without the copy's left-out classes.

  Args:
    batch: {'image': (B, H, W, C), 'label': (B,) int32}; B divisible by local_steps.
    rng: the round's data rng (`round_rngs`).
    seen: the classes S the left-out ones are drawn from.
    num_classes: C, the label space.
    copies, local_steps, leave_out: M, K and f.

  Returns:
    (batches, left_out, valid): batches {'image': (M, K, B/K, H, W, C), 'label': (M, K, B/K)}; left_out (M, L)
    int32, the classes copy m leaves out (L = num_left_out); valid (M,) bool, False for a copy that kept no example.
  """
  b = batch["label"].shape[0]
  if b % local_steps:
    raise ValueError(f"The batch of {b} does not split into lolsgd_local_steps={local_steps} local batches.")
  seen = jnp.asarray(np.asarray(seen, np.int32))
  n_out = num_left_out(int(seen.shape[0]), leave_out)

  def one_copy(key):
    left = jax.random.permutation(key, seen)[:n_out]
    kept_class = jnp.ones((num_classes,), bool).at[left].set(False)
    keep = kept_class[batch["label"]]
    order = jnp.argsort(~keep, stable=True)  # The kept examples first, in batch order.
    n_kept = jnp.sum(keep)
    idx = order[jnp.arange(b) % jnp.maximum(n_kept, 1)].reshape(local_steps, b // local_steps)
    return jax.tree.map(lambda x: x[idx], batch), left, n_kept > 0

  return jax.vmap(one_copy)(jax.random.split(rng, copies))


def local_sgd(step_fn, state, batches: Dict[str, jnp.ndarray], rng) -> Tuple[Any, Dict[str, jnp.ndarray]]:
  """K plain steps of `step_fn` (train_step.make_train_step(..., jit=False)) from `state` on batches (K, b, ...).

  The step counter is held at state.step, so every local step uses the round's learning rate. Returns the final
  state (its step unchanged) and the metrics stacked over the K steps.
  """
  k = batches["label"].shape[0]

  def body(s, xs):
    chunk, i = xs
    s2, metrics = step_fn(s, chunk, jax.random.fold_in(rng, i))
    return s2.replace(step=s.step), metrics

  return jax.lax.scan(body, state, (batches, jnp.arange(k)))


def average(start: PyTree, local: PyTree, valid: jnp.ndarray) -> PyTree:
  """start + mean_m (local_m - start) over the copies (leading axis M); a copy with valid False adds zero.

  Written as the mean update added to `start`, so that a leaf no copy changed (the frozen head) stays bit-exact.
  """

  def mean(s, x):
    keep = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    return (s + jnp.mean(jnp.where(keep, x - s[None], 0), axis=0)).astype(x.dtype)

  return jax.tree.map(mean, start, local)


def make_lolsgd_step(model, method, tx, opt_config, mesh, *, seen: Sequence[int], num_classes: int, lolsgd_config,
                     **step_kwargs):
  """The jitted LOLSGD round, with train_step.make_train_step's signature and contract.

  Args:
    model, method, tx, opt_config, mesh: as train_step.make_train_step.
    seen: the fine-tuning classes S (the left-out classes are drawn from them).
    num_classes: C.
    lolsgd_config: a ConfigDict with lolsgd_copies, lolsgd_local_steps and lolsgd_leave_out
      (config.holistic_transfer).
    **step_kwargs: absent_mask, logit_mask, ldifs_config, ht_config: passed to make_train_step.

  Returns:
    step(state, batch, rng) -> (state, metrics), one round: state.step advances by 1; metrics are the means over
    the copies and local steps of train_step's metrics. `state` is donated.
  """
  copies, local_steps = int(lolsgd_config.lolsgd_copies), int(lolsgd_config.lolsgd_local_steps)
  if copies < 1 or local_steps < 1:
    raise ValueError(f"LOLSGD needs lolsgd_copies >= 1 and lolsgd_local_steps >= 1; got {copies}, {local_steps}.")
  num_left_out(len(seen), float(lolsgd_config.lolsgd_leave_out))  # Validates the fraction early.
  plain = train_step_lib.make_train_step(model, method, tx, opt_config, mesh, jit=False, **step_kwargs)

  def step(state, batch, rng):
    data_rng, copy_rng = round_rngs(rng, state.step)
    batches, _, valid = local_batches(batch, data_rng, seen, num_classes, copies=copies, local_steps=local_steps,
                                      leave_out=float(lolsgd_config.lolsgd_leave_out))
    run = lambda b, r: local_sgd(plain, state, b, r)
    final, metrics = jax.vmap(run)(batches, jax.random.split(copy_rng, copies))
    params = average(state.params, final.params, valid)
    opt_state = average(state.opt_state, final.opt_state, valid)
    metrics = jax.tree.map(jnp.mean, metrics)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P(train_step_lib.DATA_AXIS))
  return jax.jit(step, in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated),
                 donate_argnums=(0,))
