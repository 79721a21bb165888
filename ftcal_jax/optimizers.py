"""Optimisers for fine-tuning: the paper's SGD recipe and LDIFS's AdamW recipe, built with optax.

Every parameter carries one of three labels, computed from its path and the method's trainable set:

  'head'      params['head'] (the linear classifier W, b), trained at the base learning rate;
  'backbone'  everything else, trained at `backbone_lr_mult` x the base rate (0.1 in the paper's recipe);
  'frozen'    not trained: its update is exactly zero, so weight decay never touches it either.

The paper (Mai et al., official defaults): SGD, Nesterov momentum 0.9, base lr 1e-3, backbone 0.1x, cosine decay
over all steps, PyTorch-style weight decay (added to the gradient before momentum).
LDIFS (Mukhoti et al.): AdamW lr 1e-5, weight decay 0.1, linear warm-up then cosine, global-norm clip 1.0.
"""

from typing import Any, Callable

import flax
import jax
import optax

PyTree = Any

LABELS = ("head", "backbone", "frozen")
_OPTIMIZERS = ("sgd", "adamw")


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


def make_schedule(opt_cfg, total_steps: int) -> Callable[[int], float]:
  """Base learning-rate schedule: optional linear warm-up, then cosine decay (or constant) to `total_steps`."""
  warmup = int(opt_cfg.warmup_steps)
  if opt_cfg.schedule == "cosine":
    if warmup > 0:
      return optax.warmup_cosine_decay_schedule(0.0, opt_cfg.lr, warmup, max(total_steps, warmup + 1))
    return optax.cosine_decay_schedule(opt_cfg.lr, max(total_steps, 1))
  if opt_cfg.schedule == "constant":
    if warmup > 0:
      return optax.join_schedules(
          [optax.linear_schedule(0.0, opt_cfg.lr, warmup), optax.constant_schedule(opt_cfg.lr)], [warmup])
    return optax.constant_schedule(opt_cfg.lr)
  raise ValueError(f"Unknown schedule {opt_cfg.schedule!r}. Valid: 'cosine', 'constant'.")


def _one_group(opt_cfg, schedule) -> optax.GradientTransformation:
  """The optimiser for one parameter group at the learning rate `schedule`."""
  if opt_cfg.name == "sgd":
    # PyTorch SGD folds weight decay into the gradient before momentum; the official code uses PyTorch SGD.
    return optax.chain(
        optax.add_decayed_weights(opt_cfg.weight_decay),
        optax.sgd(schedule, momentum=opt_cfg.momentum or None, nesterov=bool(opt_cfg.nesterov)))
  if opt_cfg.name == "adamw":
    return optax.adamw(schedule, weight_decay=opt_cfg.weight_decay)
  raise ValueError(f"Unknown optimizer {opt_cfg.name!r}. Valid names: {', '.join(_OPTIMIZERS)}.")


def make_optimizer(opt_cfg, total_steps: int, labels: PyTree) -> optax.GradientTransformation:
  """Builds the optimiser.

  Args:
    opt_cfg: ConfigDict with name ('sgd'|'adamw'), lr, momentum, nesterov, weight_decay, backbone_lr_mult,
      warmup_steps, schedule ('cosine'|'constant'), grad_clip_norm (0 or None disables clipping).
    total_steps: number of optimiser steps; the cosine decays to zero there.
    labels: the tree from `param_labels`.

  Returns:
    An optax GradientTransformation. Gradient clipping, when on, acts on the global norm of all trainable
    gradients before the groups split.
  """
  schedule = make_schedule(opt_cfg, total_steps)
  mult = float(opt_cfg.backbone_lr_mult)
  groups = {
      "head": _one_group(opt_cfg, schedule),
      "backbone": _one_group(opt_cfg, lambda step: mult * schedule(step)),
      "frozen": optax.set_to_zero(),
  }
  tx = optax.multi_transform(groups, labels)
  if opt_cfg.grad_clip_norm:
    # Frozen gradients would inflate the global norm; zero them before clipping.
    zero_frozen = optax.masked(optax.set_to_zero(), jax.tree.map(lambda l: l == "frozen", labels))
    tx = optax.chain(zero_frozen, optax.clip_by_global_norm(opt_cfg.grad_clip_norm), tx)
  return tx
