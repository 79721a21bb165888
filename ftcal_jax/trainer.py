"""One training run: a model trained from the job's starting parameters with one method's recipe, resumably.

`train_model` is restore, step and loop:
  `_restore`    the latest checkpoint of workdir/<run> (its state and step), the head history cut at that step;
  `_make_step`  the optimiser and the jitted train step (train_step.py), compiled once per job for each
                (trainable, loss, optimiser);
  `_loop`       the remaining steps. Every log_every_steps it logs the mean metrics and records the head history,
                and stops on a non-finite loss; every checkpoint_every_steps (and at the end) it writes
                history.json and a checkpoint.
Before the loop, the batch order is replayed up to the restored step, so a resumed run sees the batches (and
rngs) an uninterrupted one would.
"""

import dataclasses
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from ftcal_jax import checkpointing
from ftcal_jax import input_pipeline
from ftcal_jax import logit_dynamics
from ftcal_jax import lolsgd
from ftcal_jax import methods
from ftcal_jax import optimizers
from ftcal_jax import train_step as train_step_lib
from ftcal_jax import training_dynamics
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.progress import Progress


@dataclasses.dataclass
class JobContext:
  """What every training run of one job shares (train.py builds it)."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  dataset: Any
  split: Optional[ClassSplit]
  model: Any
  init_params: Any
  class_mask: Optional[np.ndarray]
  writer: Any
  progress: Progress
  fingerprint_config: Dict[str, Any]
  summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # (trainable, loss, optimiser, update) -> (optimiser, jitted step): FT, Oracle and PCV's runs share one compilation.
  step_fns: Dict[Tuple[str, str, str], Any] = dataclasses.field(default_factory=dict)
  init_batch_stats: Any = None  # BatchNorm running statistics of the starting model (ResNets), else None.
  input_affine: Any = None  # The checkpoint's input normalisation (input_pipeline.model_input_affine).

  @property
  def init_variables(self) -> Dict[str, Any]:
    """The starting model's variables: {'params'} and, with BatchNorm, {'batch_stats'}."""
    return variables_of(self.init_params, self.init_batch_stats)


def variables_of(params, batch_stats) -> Dict[str, Any]:
  """{'params': params} plus {'batch_stats': batch_stats} when the model has any."""
  return {"params": params} if batch_stats is None else {"params": params, "batch_stats": batch_stats}


def _checkpointed(state) -> Dict[str, Any]:
  """What a checkpoint holds: step, params, optimiser state and, with BatchNorm, the running statistics."""
  items = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
  if state.batch_stats is not None:
    items["batch_stats"] = state.batch_stats
  return items


@dataclasses.dataclass
class _Run:
  """One training run in progress: its name, length, checkpoints and head history."""
  name: str
  method: str
  steps: int
  ckpt: checkpointing.Checkpointer
  history: training_dynamics.HeadHistory
  history_path: str


def _is_main() -> bool:
  return jax.process_index() == 0


def default_num_steps(cfg, num_examples: int) -> int:
  """Training length: cfg.num_steps if > 0, else ceil(num_epochs * examples / batch)."""
  if cfg.num_steps > 0:
    return int(cfg.num_steps)
  return max(1, math.ceil(cfg.num_epochs * num_examples / cfg.batch_size))


def _make_step(ctx: JobContext, method: methods.Method, opt_cfg) -> Tuple[Any, Any]:
  """(optimiser, jitted train step) for the method, compiled once per (trainable, loss, optimiser, update)."""
  key = (method.trainable, method.loss, opt_cfg.name, method.update)
  if key not in ctx.step_fns:
    labels = optimizers.param_labels(ctx.init_params, method.trainable)
    tx = optimizers.make_optimizer(opt_cfg, labels)
    kwargs = dict(absent_mask=ctx.split.absent_mask if method.needs_reference else None, logit_mask=ctx.class_mask,
                  ldifs_config=ctx.config.ldifs, ht_config=ctx.config.holistic_transfer, input_affine=ctx.input_affine)
    if method.update == "lolsgd":  # Leave-out local SGD rounds (lolsgd.py), one per batch.
      kwargs.update(seen=ctx.split.seen, num_classes=ctx.split.num_classes, lolsgd_config=ctx.config.holistic_transfer)
    if method.update == "lolsgd" and ctx.config.exact_reductions:
      raise ValueError("config.exact_reductions is not implemented for holistic_transfer_lolsgd; set it to False.")
    if method.update != "lolsgd":
      kwargs["exact_reductions"] = bool(ctx.config.exact_reductions)
    make = lolsgd.make_lolsgd_step if method.update == "lolsgd" else train_step_lib.make_train_step
    step_fn = make(ctx.model, method, tx, opt_cfg, ctx.mesh, **kwargs)
    ctx.step_fns[key] = (tx, step_fn)
  return ctx.step_fns[key]


def _open_run(ctx: JobContext, name: str, method_name: str, train_split: str, classes: Optional[Sequence[int]],
              seed: int, steps: int) -> _Run:
  """The run's checkpointer (guarded by everything the run depends on) and an empty head history."""
  fp_config = {
      "run": name, "method": method_name, "train_split": train_split, "steps": steps,
      "classes": None if classes is None else [int(c) for c in classes], "seed": seed, "config": ctx.fingerprint_config
  }
  run_dir = os.path.join(ctx.workdir, name)
  # Two kept steps: a damaged latest one falls back on the one before (checkpointing.py).
  ckpt = checkpointing.Checkpointer(run_dir, fp_config, save_interval_steps=ctx.config.checkpoint_every_steps,
                                    max_to_keep=2)
  kernel = ctx.init_params["head"]["kernel"]
  seen, absent = training_dynamics.class_masks(kernel.shape[-1], classes, ctx.split)
  history = training_dynamics.HeadHistory(kernel, seen, absent, probe=logit_dynamics.make_probe(ctx, classes))
  return _Run(name, method_name, steps, ckpt, history, os.path.join(run_dir, "history.json"))


def _restore(ctx: JobContext, run: _Run, state) -> Tuple[Any, int]:
  """(state, step) of the run's latest checkpoint, its history cut at that step; (state, 0) when there is none."""
  restored = run.ckpt.restore_latest(_checkpointed(state))
  if restored is None:
    return state, 0
  start = int(restored["step"])
  if not run.history.load(run.history_path, start):
    # The head-norm record before `start` is lost, and the report needs it whole: retrain from the first step.
    run.ckpt.set_aside_all(f"{run.history_path} is damaged")
    return state, 0
  ctx.progress(f"{run.name}: resuming from the checkpoint at step {start}/{run.steps}")
  return state.replace(**restored), start


def _mean_metrics(run: _Run, pending: List[Tuple[int, Dict[str, Any]]]) -> Dict[str, float]:
  """The mean of the pending steps' metrics; a non-finite loss stops the run, naming its step."""
  host = jax.device_get([m for _, m in pending])
  for (s, _), m in zip(pending, host):
    if not np.isfinite(m["loss"]):
      run.ckpt.close()
      raise FloatingPointError(
          f"{run.name}: the loss is {float(m['loss'])} at step {s} ({run.method}); stopping. Lower the "
          "learning rate or check the data; the last good checkpoint is kept.")
  return {k: float(np.mean([m[k] for m in host])) for k in host[-1]}


def _loop(ctx: JobContext, run: _Run, state, step_fn, batches, rng, start: int) -> Tuple[Any, float]:
  """Steps start+1 .. run.steps; logs and records every log_every_steps, checkpoints every checkpoint_every_steps.

  Returns (the final state, time.time() when the loop began).
  """
  config = ctx.config
  report_progress = periodic_actions.ReportProgress(num_train_steps=run.steps, writer=ctx.writer,
                                                    every_steps=config.log_every_steps)
  pending: List[Tuple[int, Dict[str, Any]]] = []
  t_start = time.time()
  for step in range(start + 1, run.steps + 1):
    batch = input_pipeline.shard_batch(next(batches), ctx.mesh)
    state, metrics = step_fn(state, batch, rng)
    pending.append((step, metrics))
    report_progress(step)
    save_due = step % config.checkpoint_every_steps == 0 or step == run.steps
    if step % config.log_every_steps == 0 or save_due:
      mean = _mean_metrics(run, pending)
      pending = []
      ctx.writer.write_scalars(step, {f"{run.name}/{k}": v for k, v in mean.items()})
      run.history.record(step, mean["loss"], state.params["head"]["kernel"],
                         params=variables_of(state.params, state.batch_stats))
      rate = (step - start) / max(time.time() - t_start, 1e-9)
      ctx.progress(f"{run.name}: step {step}/{run.steps} loss {mean['loss']:.4f} acc {mean['accuracy']:.3f} "
                   f"{rate:.1f} steps/s ETA {(run.steps - step) / max(rate, 1e-9):.0f}s")
      if save_due:
        if _is_main():
          run.history.save(run.history_path)
        run.ckpt.maybe_save(step, _checkpointed(state), force=step == run.steps)
  return state, t_start


def train_model(ctx: JobContext, run_name: str, method_name: str, *, train_split: str, classes: Optional[Sequence[int]],
                seed: int, num_steps: Optional[int] = None) -> Tuple[Any, Dict[str, List[float]]]:
  """Trains one model from ctx.init_params with the method's recipe; resumes from workdir/run_name.

  Args:
    ctx: the job context.
    run_name: subdirectory of the workdir, and the prefix of its TensorBoard scalars.
    method_name: a key of the method registry.
    train_split: dataset split to train on (e.g. 'target_train' or 'target_train:fit').
    classes: the label ids the training data keep (None: all).
    seed: seeds the batch order, augmentation and dropout.
    num_steps: training length; default from config.num_steps / num_epochs and the examples.

  Returns:
    (variables, history): the trained {'params'} (and, with BatchNorm, the updated {'batch_stats'}), replicated on
    ctx.mesh, and the training-dynamics history
    {'step', 'loss', 'head_norm_seen', 'head_norm_absent', 'absent_update_cos'} as lists.

  Raises:
    FloatingPointError: the loss became NaN or infinite; the message names the step.
  """
  config, method = ctx.config, methods.get_method(method_name)
  num_examples = ctx.dataset.num_examples(train_split, classes)
  if num_examples == 0:
    raise ValueError(f"{run_name}: split {train_split!r} has no training examples of classes "
                     f"{list(classes) if classes is not None else 'all'}; check config.dataset and "
                     "config.class_split (the seen classes must have training data).")
  steps = num_steps or default_num_steps(config, num_examples)
  opt_cfg = config.ldifs.optimizer if method.loss == "ldifs" else config.optimizer
  tx, step_fn = _make_step(ctx, method, opt_cfg)
  ref = method.needs_reference
  state = train_step_lib.create_train_state(ctx.init_params, tx, ctx.mesh, steps,
                                            ref_params=ctx.init_params if ref else None,
                                            batch_stats=ctx.init_batch_stats,
                                            ref_batch_stats=ctx.init_batch_stats if ref else None)
  run = _open_run(ctx, run_name, method_name, train_split, classes, seed, steps)
  state, start = _restore(ctx, run, state)
  if start == 0:
    run.history.record(0, float("nan"), state.params["head"]["kernel"],
                       params=variables_of(state.params, state.batch_stats))
  ctx.progress(f"{run_name}: {method_name} on {num_examples} examples of {train_split}, {steps} steps of "
               f"{config.batch_size} ({opt_cfg.name}, lr {opt_cfg.lr:g})")
  batches = ctx.dataset.train_batches(train_split, global_batch=config.batch_size, seed=seed, classes=classes)
  for _ in range(start):  # Replays the batch order so that a resumed run sees the batches it would have.
    next(batches)
  rng = jax.random.fold_in(jax.random.key(config.seed), seed)
  state, t_start = _loop(ctx, run, state, step_fn, batches, rng, start)
  run.ckpt.close()
  history = run.history.values
  ctx.summary[run_name] = {
      "method": method_name, "steps": steps, "train_examples": num_examples,
      "final_loss": history["loss"][-1] if history["loss"] else None, "train_seconds": time.time() - t_start,
      "resumed_from": start
  }
  return variables_of(state.params, state.batch_stats), history
