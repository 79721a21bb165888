"""Optimisers for fine-tuning: the paper's SGD recipe, LDIFS's AdamW recipe and the optimiser study's, with optax.

Every parameter carries one of three labels, computed from its path and the method's trainable set:

  'head'      params['head'] (the linear classifier W, b), trained at the base learning rate;
  'backbone'  everything else, trained at `backbone_lr_mult` x the base rate (0.1 in the paper's recipe);
  'frozen'    not trained: its update is exactly zero, so weight decay never touches it either.

The paper (Mai et al., official defaults): SGD, Nesterov momentum 0.9, base lr 1e-3, backbone 0.1x, cosine decay
over all steps, PyTorch-style weight decay (added to the gradient before momentum).
LDIFS (Mukhoti et al.): AdamW lr 1e-5, weight decay 0.1, linear warm-up then cosine, global-norm clip 1.0.
The optimiser study adds Adam, AdaBelief, Adadelta, AdaGrad and RMSprop (optax's defaults; weight decay as L2 on
the gradient). Every optimiser's update is proportional to its learning rate, so the schedule scales it afterwards.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any

LABELS = ("head", "backbone", "frozen")
# name -> the optax optimiser at learning rate `scale`, its hyper-parameters at optax's defaults. The optimiser
# study (experiments/ablation_optimizer.py) compares the first six; 'adamw' is LDIFS's recipe.
_ADAPTIVE = {
    "adam": optax.adam,  # b1 0.9, b2 0.999, eps 1e-8.
    "adabelief": optax.adabelief,  # b1 0.9, b2 0.999, eps 1e-16.
    "adadelta": optax.adadelta,  # rho 0.9, eps 1e-6 (its usual learning rate is ~1).
    "adagrad": optax.adagrad,  # initial accumulator 0.1, eps 1e-7.
    "rmsprop": optax.rmsprop,  # decay 0.9, eps 1e-8, no momentum.
}
_OPTIMIZERS = ("sgd", "adamw") + tuple(_ADAPTIVE)


def param_labels(params: PyTree, trainable: str) -> PyTree:
  """Labels each leaf 'head', 'backbone' or 'frozen'.

  Args:
    params: the model's parameter tree; the classifier lives at params['head'].
    trainable: 'all' (head and backbone), 'head' (linear probe) or 'backbone' (frozen classifier).

  Returns:
    A tree with the structure of `params` holding one label string per leaf.
  """
  if trainable not in ("all", "head", "backbone"):
    raise ValueError(f"trainable must be 'all', 'head' or 'backbone', got {trainable!r}.")
  if "head" not in params:
    raise ValueError(f"The parameter tree has no 'head' entry (top-level keys: {sorted(params)}).")
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  labels = {}
  for path in flat:
    part = "head" if path[0] == "head" else "backbone"
    if trainable == "head" and part == "backbone" or trainable == "backbone" and part == "head":
      part = "frozen"
    labels[path] = part
  return flax.traverse_util.unflatten_dict(labels)


def learning_rate(opt_cfg, step, total_steps):
  """The base learning rate at `step` of a `total_steps` run: linear warm-up, then cosine decay to 0 (or constant).

  Both step and total_steps may be traced arrays, so one compiled train step serves runs of any length.

  Args:
    opt_cfg: ConfigDict with lr, warmup_steps, schedule ('cosine'|'constant').
    step: optimiser steps taken so far (the update being computed is step + 1's).
    total_steps: the run's length.

  Returns:
    () float32.
  """
  if opt_cfg.schedule not in ("cosine", "constant"):
    raise ValueError(f"Unknown schedule {opt_cfg.schedule!r}. Valid: 'cosine', 'constant'.")
  step = jnp.asarray(step, jnp.float32)
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  warmup = float(opt_cfg.warmup_steps)
  lr = jnp.float32(opt_cfg.lr)
  if opt_cfg.schedule == "cosine":
    done = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    lr = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
  if warmup > 0:
    lr = lr * jnp.minimum(step / warmup, 1.0)
  return lr


def _one_group(opt_cfg, scale: float) -> optax.GradientTransformation:
  """The optimiser for one parameter group, at `scale` x the base learning rate (applied later, per step)."""
  if opt_cfg.name == "sgd":
    # PyTorch SGD folds weight decay into the gradient before momentum; the official code uses PyTorch SGD.
    return optax.chain(optax.add_decayed_weights(opt_cfg.weight_decay),
                       optax.sgd(scale, momentum=opt_cfg.momentum or None, nesterov=bool(opt_cfg.nesterov)))
  if opt_cfg.name == "adamw":
    # adamw(lr) = adam moments, + wd * w, then * -lr: the whole update is proportional to lr.
    return optax.adamw(scale, weight_decay=opt_cfg.weight_decay)
  if opt_cfg.name in _ADAPTIVE:
    # Weight decay added to the gradient first, as PyTorch's weight_decay argument of these optimisers does.
    return optax.chain(optax.add_decayed_weights(opt_cfg.weight_decay), _ADAPTIVE[opt_cfg.name](scale))
  raise ValueError(f"Unknown optimizer {opt_cfg.name!r}. Valid names: {', '.join(_OPTIMIZERS)}.")


def make_optimizer(opt_cfg, labels: PyTree) -> optax.GradientTransformation:
  """Builds the optimiser, WITHOUT its learning rate.

  Its updates are the steps at unit learning rate (the backbone's already scaled by backbone_lr_mult); the
  caller multiplies them by `learning_rate(opt_cfg, step, total_steps)` (`scale_updates`). For both SGD
  (momentum, then * lr) and AdamW (moments + decoupled decay, then * lr) this equals optax's own scheduled
  optimisers, and it keeps the run length out of the compiled step.

  Args:
    opt_cfg: ConfigDict with name ('sgd', 'adamw', 'adam', 'adabelief', 'adadelta', 'adagrad', 'rmsprop'),
      momentum, nesterov, weight_decay, backbone_lr_mult, grad_clip_norm (0 or None disables clipping).
    labels: the tree from `param_labels`.

  Returns:
    An optax GradientTransformation. Clipping, when on, acts on the global norm of the trainable gradients
    before the groups split.
  """
  groups = {
      "head": _one_group(opt_cfg, 1.0),
      "backbone": _one_group(opt_cfg, float(opt_cfg.backbone_lr_mult)),
      "frozen": optax.set_to_zero(),
  }
  tx = optax.multi_transform(groups, labels)
  if opt_cfg.grad_clip_norm:
    # Frozen gradients would inflate the global norm; zero them before clipping.
    zero_frozen = optax.masked(optax.set_to_zero(), jax.tree.map(lambda l: l == "frozen", labels))
    tx = optax.chain(zero_frozen, optax.clip_by_global_norm(opt_cfg.grad_clip_norm), tx)
  return tx


def scale_updates(updates: PyTree, lr) -> PyTree:
  """updates * lr, leaf by leaf (lr a traced scalar from `learning_rate`)."""
  return jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)


def list_optimizers():
  """The optimiser names make_optimizer accepts."""
  return _OPTIMIZERS
