"""The pure, data-parallel train step: (state, batch, rng) -> (state, metrics).

It is jitted over a 1-D device `Mesh` with axis 'data': the batch is sharded on P('data'), the state (params,
optimiser state, the frozen reference params of LDIFS/Holistic Transfer) is replicated, and the state is donated
so XLA updates it in place. The gradient all-reduce is implied by the shardings; there is no per-device code.
The same function runs on one CPU, on 8 fake CPU devices, and on every host of a pod after
`jax.distributed.initialize()` (the mesh then spans all processes' devices).

An all-reduce sums the devices' gradients in an order that depends on the layout: XLA's in-process all-reduce and
gloo's across processes round differently in the last bits, so 2 processes x 2 devices and 1 process x 4 devices
drift apart by ~1e-5. `exact_reductions=True` (config.exact_reductions) makes them bit-identical: each device's
share of the batch is a chunk of a vmap, the per-chunk gradients are all-gathered (exact copies) and summed in
chunk order on every device. It costs (devices - 1) x the gradient memory, so it is for checking a pod launch
against one machine and for bisecting, not for training a ViT-B over 256 chips.

Models with BatchNorm (the ResNets) carry `batch_stats` in the state. Fine-tuning runs BatchNorm in train mode and
updates the running statistics, as the paper's PyTorch code does (`model.train()`); with the batch sharded over the
mesh, the batch statistics are those of the global batch, not of each device's shard. A linear probe (only the head
trains) keeps the backbone as it is: BatchNorm then uses the pre-trained running statistics and leaves them alone.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ftcal_jax import holistic_transfer
from ftcal_jax import input_pipeline
from ftcal_jax import ldifs
from ftcal_jax import optimizers
from ftcal_jax.methods import Method

PyTree = Any

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  """What changes during training.

  Attributes:
    step: () int32, optimiser steps taken.
    params: the model parameters.
    opt_state: the optax state.
    ref_params: the frozen pre-trained parameters for methods with a reference (LDIFS, Holistic Transfer), else
      None. Never checkpointed: it is rebuilt from the init checkpoint.
    total_steps: () int32, the run's length, which the learning-rate schedule needs. Kept as data, not as a
      constant of the compiled step, so that runs of any length (FT, Oracle, PCV's pseudo runs) share one
      compilation.
    batch_stats: the BatchNorm running statistics of models that have them (the ResNets), else None. Checkpoint
      them with the params.
    ref_batch_stats: the frozen pre-trained statistics of the reference model, else None (rebuilt like
      ref_params).
  """
  step: jnp.ndarray
  params: PyTree
  opt_state: PyTree
  ref_params: Optional[PyTree] = None
  total_steps: jnp.ndarray = 1
  batch_stats: Optional[PyTree] = None
  ref_batch_stats: Optional[PyTree] = None


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_divisible(global_batch: int, mesh: Mesh) -> None:
  """Raises a ValueError naming the fix when the global batch cannot be split evenly over the mesh."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
        f"Global batch size {global_batch} is not divisible by the {n} devices of the mesh. Set the batch size "
        f"to a multiple of {n} (e.g. {max(n, global_batch // n * n)}).")


def create_train_state(params: PyTree, tx: optax.GradientTransformation, mesh: Mesh, total_steps: int,
                       ref_params: Optional[PyTree] = None, *, batch_stats: Optional[PyTree] = None,
                       ref_batch_stats: Optional[PyTree] = None) -> TrainState:
  """Initialises the optimiser and places the whole state, replicated, on `mesh`.

  The state owns fresh buffers (never aliases of `params`), so donating it to the step leaves the caller's
  `params`, `ref_params` and statistics intact. `batch_stats` are the model's BatchNorm statistics, if it has any;
  `ref_batch_stats` the reference model's (pass them with ref_params).
  """
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ref_params=ref_params,
                     total_steps=jnp.asarray(total_steps, jnp.int32), batch_stats=batch_stats or None,
                     ref_batch_stats=ref_batch_stats or None)
  # device_put may reuse the caller's buffer as one shard (even with may_alias=False); a jitted copy cannot.
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=NamedSharding(mesh, P()))
  return copy(state)


def _reference_regulariser(loss: str, out, logits, ref, taps, absent_mask, ldifs_config, ht_config):
  """The term that ties the fine-tuned model to the frozen pre-trained one: LDIFS or HT's U distillation."""
  if loss == "ldifs":
    return ldifs_config.alpha * ldifs.ldifs_distance(out["blocks"], ref["blocks"], taps, ldifs_config.normalisation)
  if loss == "holistic_transfer":
    return ht_config.distill_weight * holistic_transfer.absent_distillation(logits, ref["logits"], absent_mask,
                                                                            ht_config.temperature)
  raise ValueError(f"Method loss {loss!r} needs a reference model but has no regulariser.")


def _make_loss_fn(model, method: Method, taps, bias, absent_mask, ldifs_config, ht_config, input_affine):
  """loss_fn(params, batch_stats, ref_params, ref_batch_stats, batch, rng) -> (loss, (metrics, new batch_stats))."""
  update_stats = method.trainable != "head"  # a linear probe keeps the pre-trained backbone, statistics included

  def forward(params, batch_stats, images, rng):
    """The train-mode outputs and the new batch statistics (None for models without BatchNorm)."""
    if batch_stats is None:
      return model.apply({"params": params}, images, train=True, feature_blocks=taps, rngs={"dropout": rng}), None
    variables = {"params": params, "batch_stats": batch_stats}
    if not update_stats:
      return model.apply(variables, images, train=False, feature_blocks=taps), batch_stats
    out, new = model.apply(variables, images, train=True, feature_blocks=taps, rngs={"dropout": rng},
                           mutable=["batch_stats"])
    return out, new["batch_stats"]

  def loss_fn(params, batch_stats, ref_params, ref_batch_stats, batch, rng):
    images, labels = input_pipeline.apply_input_affine(batch["image"], input_affine), batch["label"]
    # Frozen parameters get no gradient at all, so XLA never builds their backward pass (a linear probe does
    # not backpropagate through the backbone). The optimiser zeroes their updates as well.
    frozen = optimizers.param_labels(params, method.trainable)
    params = jax.tree.map(lambda l, p: jax.lax.stop_gradient(p) if l == "frozen" else p, frozen, params)
    out, new_stats = forward(params, batch_stats, images, rng)
    logits = out["logits"] if bias is None else out["logits"] + bias
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    reg = jnp.zeros((), jnp.float32)
    if method.needs_reference:
      ref_vars = {"params": ref_params, **({} if ref_batch_stats is None else {"batch_stats": ref_batch_stats})}
      ref = jax.lax.stop_gradient(model.apply(ref_vars, images, train=False, feature_blocks=taps))
      reg = _reference_regulariser(method.loss, out, logits, ref, taps, absent_mask, ldifs_config, ht_config)
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return ce + reg, ({"ce": ce, "reg": reg, "accuracy": acc}, new_stats)

  return loss_fn


def _ordered_sum(x: jnp.ndarray) -> jnp.ndarray:
  """x[0] + x[1] + ... + x[n-1] over the leading axis, added left to right (no tree reduction)."""
  total = x[0]
  for i in range(1, x.shape[0]):
    total = total + x[i]
  return total


def _exact_value_and_grad(grad_fn, mesh: Mesh):
  """grad_fn's (loss, aux), grads over the global batch, reduced over devices in a fixed order (module docstring)."""
  n = mesh.devices.size
  chunked = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())

  def value_and_grad(params, batch_stats, ref_params, ref_batch_stats, batch, rng):
    if batch_stats is not None:
      raise ValueError("exact_reductions does not support BatchNorm models (their statistics are reduced over "
                       "the global batch too); set config.exact_reductions=False.")
    chunks = jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
    chunks = jax.lax.with_sharding_constraint(chunks, chunked)  # Chunk i is device i's share of the batch.

    def one(chunk, i):
      return grad_fn(params, None, ref_params, ref_batch_stats, chunk, jax.random.fold_in(rng, i))

    (loss, (aux, _)), grads = jax.vmap(one)(chunks, jnp.arange(n))
    # All-gather (exact), then the same left-to-right sum on every device: the layout cannot change the bits.
    gathered = jax.lax.with_sharding_constraint((loss, aux, grads), replicated)
    loss, aux, grads = jax.tree.map(lambda x: _ordered_sum(x) / n, gathered)  # The mean of equal-size chunks.
    return (loss, (aux, None)), grads

  return value_and_grad


def make_train_step(model, method: Method, tx: optax.GradientTransformation, opt_config, mesh: Mesh, *,
                    absent_mask: Optional[np.ndarray] = None, logit_mask: Optional[np.ndarray] = None,
                    ldifs_config=None, ht_config=None, input_affine: input_pipeline.InputAffine = None,
                    jit: bool = True, exact_reductions: bool = False):
  """Builds the jitted train step.

  Args:
    model: a Flax model of `models.get_model` (ViT, ResNet, CLIP image tower).
    method: the training method (its loss and whether it needs `state.ref_params`).
    tx: the optimiser (optimizers.make_optimizer), already holding the trainable-parameter labels.
    opt_config: the optimiser config; its learning-rate schedule (optimizers.learning_rate) scales tx's updates.
    mesh: the device mesh, axis 'data'.
    absent_mask: (C,) bool, the absent classes U; needed by Holistic Transfer's distillation.
    logit_mask: optional (C,) bool of head classes the dataset has; the others get a -1e9 logit in the loss
      (the 'mask' head-class policy). None keeps every head class.
    ldifs_config: ConfigDict with alpha, taps (empty = ldifs.default_taps), normalisation.
    ht_config: ConfigDict with distill_weight, temperature.
    input_affine: the checkpoint's input normalisation (input_pipeline.model_input_affine), applied to the batch's
      [-1, 1] images before the model; None feeds them as they are.
    jit: False returns the bare step function (lolsgd.py traces it in each local copy).
    exact_reductions: sum the devices' gradients in a fixed order after an all-gather (module docstring), so that
      every process x device layout with the same device count gives the same bits.

  Returns:
    step(state, batch, rng) -> (state, metrics): batch {'image': (B, H, W, C) f32, 'label': (B,) i32} sharded on
    P('data'); rng a PRNG key (folded with the step inside); metrics {'loss', 'ce', 'reg', 'accuracy',
    'grad_norm', 'lr'} as () float32 arrays, replicated. `state` is donated; its batch_stats, if any, come back
    updated from this batch (unless only the head trains).
  """
  if method.loss == "holistic_transfer" and absent_mask is None:
    raise ValueError("Holistic Transfer needs absent_mask (the classes to distil).")
  taps: Tuple[int, ...] = ()
  if method.loss == "ldifs":
    taps = tuple(ldifs_config.taps) or ldifs.default_taps(model.num_layers)
  bias = None if logit_mask is None else jnp.where(jnp.asarray(logit_mask, bool), 0.0, -1e9)
  loss_fn = _make_loss_fn(model, method, taps, bias, absent_mask, ldifs_config, ht_config, input_affine)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if exact_reductions:
    grad_fn = _exact_value_and_grad(grad_fn, mesh)

  def step(state: TrainState, batch: Dict[str, jnp.ndarray], rng) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
    rng = jax.random.fold_in(rng, state.step)
    (loss, (aux, batch_stats)), grads = grad_fn(state.params, state.batch_stats, state.ref_params,
                                                state.ref_batch_stats, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = optimizers.learning_rate(opt_config, state.step, state.total_steps)
    params = optax.apply_updates(state.params, optimizers.scale_updates(updates, lr))
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads), "lr": lr}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, batch_stats=batch_stats), metrics

  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
  shardings = dict(in_shardings=(replicated, data, replicated), out_shardings=(replicated, replicated))
  return jax.jit(step, donate_argnums=(0,), **shardings) if jit else step
