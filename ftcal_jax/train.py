"""The whole run: build the data, load the pre-trained ViT, train every configured method, calibrate, report.

`train_and_evaluate(config, workdir)` is what `python -m ftcal_jax.main` calls; tests and Colab call it directly.

Layout of `workdir`:
  <method>/            orbax checkpoints of one training run (config fingerprint beside them), `history.json`,
                       and once the run is complete `predictions.npz` (its cached evaluation passes);
  pcv_<k>/             the same for PCV's k-th pseudo-split fine-tune;
  pretrained/          the pre-trained model's cached evaluation passes;
  report.json, report.md, figures/   the paper's report (report.py);
  summary.json         the final training metrics of every run and the headline numbers;
  events.out.tfevents.*  TensorBoard scalars (clu metric writers).

Rerunning the same command resumes: a run with checkpoints restarts from its latest step (same batches, same
rngs, so the result equals an uninterrupted run), and a completed run is never trained again.

PCV (paper.md): K times, S is halved into S1 (seen) and S2 (pseudo-absent); the pre-trained model is fine-tuned
with the same recipe (same epochs) on the 'fit' part of S1's training data; its seen-unseen curve is built on the
'heldout' training data of S1 ∪ S2 with S2 playing U: γ is added to the S2 logits only. The real U classes keep
their head columns, unshifted, as competitors in every argmax (no U data are used; a sample predicted as a U class
is simply wrong). τ is the pre-trained model's accuracy on the same S2 samples over all classes.
"""

import contextlib
import dataclasses
import json
import math
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ftcal_jax import calibration
from ftcal_jax import checkpointing
from ftcal_jax import evaluation
from ftcal_jax import input_pipeline
from ftcal_jax.datasets import registry as dataset_registry
from ftcal_jax import methods
from ftcal_jax import optimizers
from ftcal_jax import train_step as train_step_lib
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.models import get_model
from ftcal_jax.models import weights

ASSETS_DIR = os.path.join(os.path.dirname(__file__), "assets")
# Config fields that do not change any result: a rerun may change them and still resume.
_NON_SEMANTIC = ("methods", "log_every_steps", "checkpoint_every_steps", "write_figures", "heartbeat_s")
_HISTORY_KEYS = ("step", "loss", "head_norm_seen", "head_norm_absent", "absent_update_cos")


class Progress:
  """Timestamped progress lines on stdout (process 0 only), and a heartbeat for long silent stages."""

  def __init__(self, heartbeat_s: float = 10.0, t0: Optional[float] = None):
    self.t0 = time.time() if t0 is None else t0
    self.heartbeat_s = heartbeat_s

  def __call__(self, msg: str) -> None:
    if jax.process_index() == 0:
      print(f"[{time.time() - self.t0:6.1f}s] {msg}", flush=True)

  @contextlib.contextmanager
  def stage(self, msg: str):
    """Prints `msg`, then a line every heartbeat_s until the block ends, then its duration."""
    self(msg + " ...")
    start, done = time.time(), threading.Event()

    def beat():
      while not done.wait(self.heartbeat_s):
        self(f"  ... still {msg[0].lower() + msg[1:]} ({time.time() - start:.0f}s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
      yield
    finally:
      done.set()
      thread.join()
    self(f"  done: {msg[0].lower() + msg[1:]} in {time.time() - start:.1f}s")


@dataclasses.dataclass
class _Context:
  """What every training run of one job shares."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  dataset: Any
  split: ClassSplit
  model: Any
  init_params: Any
  class_mask: Optional[np.ndarray]
  writer: Any
  progress: Progress
  fingerprint_config: Dict[str, Any]
  summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # (trainable, loss, optimiser) -> (optimiser, jitted step): FT, Oracle and PCV's runs share one compilation.
  step_fns: Dict[Tuple[str, str, str], Any] = dataclasses.field(default_factory=dict)


# -- small pieces ---------------------------------------------------------------------------------------------------


def _is_main() -> bool:
  return jax.process_index() == 0


def _fingerprint_config(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  d = config.to_dict()
  for k in _NON_SEMANTIC:
    d.pop(k, None)
  return d


def resolve_checkpoint(path: str) -> str:
  """An absolute path as given; a bare or relative name that does not exist is looked up in ftcal_jax/assets."""
  if not path or os.path.exists(path):
    return path
  shipped = os.path.join(ASSETS_DIR, os.path.basename(path))
  if os.path.exists(shipped):
    return shipped
  hint = ("Rebuild the shipped Glyphs checkpoint with `python experiments/pretrain_glyphs.py`."
          if os.path.basename(path).startswith("glyphs_") else
          "ftcal_jax never downloads weights: copy the checkpoint (e.g. vit_jax's ViT-B_32.npz) to that path.")
  raise ValueError(f"init_checkpoint {path!r} not found (nor {shipped}). {hint} Or set config.init_checkpoint "
                   "to an existing .npz.")


def head_statistics(kernel: np.ndarray, init_kernel: np.ndarray, seen: np.ndarray,
                    absent: np.ndarray) -> Tuple[float, float, float]:
  """Training-dynamics numbers of the linear head.

  Args:
    kernel: (D, C) head weights now; column c is w_c.
    init_kernel: (D, C) head weights before training.
    seen, absent: (C,) bool masks of S and U.

  Returns:
    (mean ||w_c|| over S, mean ||w_c|| over U (NaN when U is empty), mean pairwise cosine between the updates
    w_c - w_c(0) of the U classes; NaN when fewer than two U classes moved).
  """
  norms = np.linalg.norm(kernel, axis=0)
  mean = lambda x: float(x.mean()) if x.size else float("nan")
  delta = (kernel - init_kernel)[:, absent]
  dn = np.linalg.norm(delta, axis=0)
  moved = dn > 0
  cos = float("nan")
  if moved.sum() >= 2:
    unit = delta[:, moved] / dn[moved]
    gram = unit.T @ unit
    k = gram.shape[0]
    cos = float((gram.sum() - np.trace(gram)) / (k * (k - 1)))
  return mean(norms[seen]), mean(norms[absent]), cos


def _num_steps(cfg, num_examples: int) -> int:
  """Training length: cfg.num_steps if > 0, else ceil(num_epochs * examples / batch)."""
  if cfg.num_steps > 0:
    return int(cfg.num_steps)
  return max(1, math.ceil(cfg.num_epochs * num_examples / cfg.batch_size))


def _save_predictions(path: str, preds: Mapping[str, evaluation.Predictions], fingerprint: str,
                      history: Optional[Mapping[str, List[float]]] = None) -> None:
  if not _is_main():
    return
  arrays = {"fingerprint": np.asarray(fingerprint)}
  for kind, p in preds.items():
    arrays.update({f"{kind}/logits": p.logits, f"{kind}/features": p.features, f"{kind}/labels": p.labels})
  for k, v in (history or {}).items():
    arrays[f"history/{k}"] = np.asarray(v, np.float64)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # Atomic: a killed job never leaves a half-written cache.


def _load_predictions(path: str, fingerprint: str):
  """(predictions by kind, history) from a cache, or None when there is none."""
  if not os.path.exists(path):
    return None
  with np.load(path) as f:
    stored = str(f["fingerprint"])
    if stored != fingerprint:
      raise checkpointing.ConfigMismatchError(
          f"{path} was written under a different config (fingerprint {stored}, this run {fingerprint}). Use a "
          "fresh --workdir, or delete that directory to start over.")
    kinds = sorted({k.split("/")[0] for k in f.files if k.endswith("/logits")})
    preds = {k: evaluation.Predictions(f[f"{k}/logits"], f[f"{k}/features"], f[f"{k}/labels"]) for k in kinds}
    history = {k.split("/", 1)[1]: f[k].tolist() for k in f.files if k.startswith("history/")}
  return preds, history


# -- one training run -----------------------------------------------------------------------------------------------


def train_model(ctx: _Context, run_name: str, method_name: str, *, train_split: str, classes: Optional[Sequence[int]],
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
    (params, history): the trained parameters (replicated on ctx.mesh) and the training-dynamics history
    {'step', 'loss', 'head_norm_seen', 'head_norm_absent', 'absent_update_cos'} as lists.

  Raises:
    FloatingPointError: the loss became NaN or infinite; the message names the step.
  """
  config, mesh = ctx.config, ctx.mesh
  method = methods.get_method(method_name)
  num_examples = ctx.dataset.num_examples(train_split, classes)
  if num_examples == 0:
    raise ValueError(f"{run_name}: split {train_split!r} has no training examples of classes "
                     f"{list(classes) if classes is not None else 'all'}; check config.dataset and "
                     "config.class_split (the seen classes must have training data).")
  steps = num_steps or _num_steps(config, num_examples)
  opt_cfg = config.ldifs.optimizer if method.loss == "ldifs" else config.optimizer
  key = (method.trainable, method.loss, opt_cfg.name)
  if key not in ctx.step_fns:
    labels = optimizers.param_labels(ctx.init_params, method.trainable)
    tx = optimizers.make_optimizer(opt_cfg, labels)
    step_fn = train_step_lib.make_train_step(ctx.model, method, tx, opt_cfg, mesh,
                                             absent_mask=ctx.split.absent_mask if method.needs_reference else None,
                                             logit_mask=ctx.class_mask, ldifs_config=config.ldifs,
                                             ht_config=config.holistic_transfer)
    ctx.step_fns[key] = (tx, step_fn)
  tx, step_fn = ctx.step_fns[key]
  state = train_step_lib.create_train_state(ctx.init_params, tx, mesh, steps,
                                            ref_params=ctx.init_params if method.needs_reference else None)

  run_dir = os.path.join(ctx.workdir, run_name)
  run_fp_config = {
      "run": run_name, "method": method_name, "train_split": train_split, "steps": steps,
      "classes": None if classes is None else [int(c) for c in classes], "seed": seed, "config": ctx.fingerprint_config
  }
  ckpt = checkpointing.Checkpointer(run_dir, run_fp_config, save_interval_steps=config.checkpoint_every_steps,
                                    max_to_keep=1)
  history = {k: [] for k in _HISTORY_KEYS}
  hist_path = os.path.join(run_dir, "history.json")
  start = 0
  restored = ckpt.restore_latest({"step": state.step, "params": state.params, "opt_state": state.opt_state})
  if restored is not None:
    state = state.replace(**restored)
    start = int(restored["step"])
    if os.path.exists(hist_path):
      with open(hist_path) as f:
        saved = json.load(f)
      keep = [i for i, s in enumerate(saved["step"]) if s <= start]
      history = {k: [saved[k][i] for i in keep] for k in _HISTORY_KEYS}
    ctx.progress(f"{run_name}: resuming from the checkpoint at step {start}/{steps}")

  num_classes = ctx.init_params["head"]["kernel"].shape[-1]
  if classes is not None:  # Trained classes vs the rest.
    seen = np.isin(np.arange(num_classes), classes)
    absent_mask = ~seen
  elif ctx.split is not None:  # The Oracle: still report the real S and U.
    seen, absent_mask = ctx.split.seen_mask, ctx.split.absent_mask
  else:  # Pre-training: every class is seen.
    seen, absent_mask = np.ones(num_classes, bool), np.zeros(num_classes, bool)
  init_kernel = np.asarray(jax.device_get(ctx.init_params["head"]["kernel"]), np.float64)

  def record(step, loss):
    kernel = np.asarray(jax.device_get(state.params["head"]["kernel"]), np.float64)
    s, u, cos = head_statistics(kernel, init_kernel, seen, absent_mask)
    for k, v in zip(_HISTORY_KEYS, (step, loss, s, u, cos)):
      history[k].append(v)

  if start == 0:
    record(0, float("nan"))

  ctx.progress(f"{run_name}: {method_name} on {num_examples} examples of {train_split}, {steps} steps of "
               f"{config.batch_size} ({opt_cfg.name}, lr {opt_cfg.lr:g})")
  batches = ctx.dataset.train_batches(train_split, global_batch=config.batch_size, seed=seed, classes=classes)
  for _ in range(start):  # Replays the batch order so that a resumed run sees the batches it would have.
    next(batches)
  rng = jax.random.fold_in(jax.random.key(config.seed), seed)
  report_progress = periodic_actions.ReportProgress(num_train_steps=steps, writer=ctx.writer,
                                                    every_steps=config.log_every_steps)
  pending: List[Tuple[int, Dict[str, Any]]] = []
  t_start, step = time.time(), start
  for step in range(start + 1, steps + 1):
    batch = input_pipeline.shard_batch(next(batches), mesh)
    state, metrics = step_fn(state, batch, rng)
    pending.append((step, metrics))
    report_progress(step)
    save_due = step % config.checkpoint_every_steps == 0 or step == steps
    if step % config.log_every_steps == 0 or save_due:
      host = jax.device_get([m for _, m in pending])
      for (s, _), m in zip(pending, host):
        if not np.isfinite(m["loss"]):
          ckpt.close()
          raise FloatingPointError(
              f"{run_name}: the loss is {float(m['loss'])} at step {s} ({method_name}); stopping. Lower the "
              "learning rate or check the data; the last good checkpoint is kept.")
      mean = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
      pending = []
      ctx.writer.write_scalars(step, {f"{run_name}/{k}": v for k, v in mean.items()})
      record(step, mean["loss"])
      rate = (step - start) / max(time.time() - t_start, 1e-9)
      ctx.progress(f"{run_name}: step {step}/{steps} loss {mean['loss']:.4f} acc {mean['accuracy']:.3f} "
                   f"{rate:.1f} steps/s ETA {(steps - step) / max(rate, 1e-9):.0f}s")
      if save_due:
        if _is_main():
          with open(hist_path, "w") as f:
            json.dump(history, f)
        ckpt.maybe_save(step, {"step": state.step, "params": state.params, "opt_state": state.opt_state},
                        force=step == steps)
  ckpt.close()
  ctx.summary[run_name] = {
      "method": method_name, "steps": steps, "train_examples": num_examples,
      "final_loss": history["loss"][-1] if history["loss"] else None, "train_seconds": time.time() - t_start,
      "resumed_from": start
  }
  return state.params, history


def _predict(ctx: _Context, params, split: str, classes: Optional[Sequence[int]] = None):
  batches = ctx.dataset.eval_batches(split, global_batch=ctx.config.eval_batch_size, classes=classes)
  return evaluation.predict(ctx.model, params, batches, ctx.mesh)


def run_method(ctx: _Context, run_name: str, method_name: str, *, train_split: str, classes: Optional[Sequence[int]],
               seed: int, passes: Mapping[str, Tuple[str, Any]], num_steps: Optional[int] = None):
  """Trains (or resumes, or loads from cache) one run and evaluates it on `passes` {kind: (split, classes)}."""
  fp = checkpointing.fingerprint({
      "run": run_name, "method": method_name, "train_split": train_split,
      "classes": None if classes is None else [int(c) for c in classes],
      "passes": {k: [s, None if c is None else [int(x) for x in c]] for k, (s, c) in passes.items()}, "seed": seed,
      "num_steps": num_steps, "config": ctx.fingerprint_config
  })
  cache = os.path.join(ctx.workdir, run_name, "predictions.npz")
  loaded = _load_predictions(cache, fp)
  if loaded is not None:
    ctx.progress(f"{run_name}: complete in an earlier run; using its cached predictions")
    ctx.summary.setdefault(run_name, {"method": method_name, "cached": True})
    return loaded
  params, history = train_model(ctx, run_name, method_name, train_split=train_split, classes=classes, seed=seed,
                                num_steps=num_steps)
  with ctx.progress.stage(f"Evaluating {run_name} on {', '.join(passes)}"):
    preds = {kind: _predict(ctx, params, split, cls) for kind, (split, cls) in passes.items()}
  _save_predictions(cache, preds, fp, history)
  return preds, history


# -- the job --------------------------------------------------------------------------------------------------------


def _init_params(config, model, image_shape, progress: Progress):
  """Random init, then the configured checkpoint with its head policy."""
  dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  # One compiled init is much faster than Flax's op-by-op eager init on CPU.
  init = jax.jit(lambda key: model.init(key, dummy)["params"])
  path = resolve_checkpoint(config.init_checkpoint)
  head = config.init_head
  if not path:
    progress("No init_checkpoint: training from a random initialisation")
    return init(jax.random.key(config.seed))
  # With the loaded head kept, only shapes are needed: skip the random init altogether.
  params = jax.eval_shape(init, jax.random.key(config.seed)) if head == "keep" else init(jax.random.key(config.seed))
  loaded = weights.load_npz(path)
  progress(f"Loaded {path} (head policy {head!r})")
  params = weights.restore_into(params, loaded, head=list(head) if not isinstance(head, str) else head)
  return jax.tree.map(jnp.asarray, params)


def _dataset_config(config) -> Dict[str, Any]:
  d = config.dataset.to_dict()
  d["holdout_fraction"] = config.pcv.holdout_fraction  # The 'fit'/'heldout' parts PCV uses.
  return d


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       start_time: Optional[float] = None) -> Dict[str, Any]:
  """Runs the configured job end to end and writes its outputs to `workdir`.

  Args:
    config: a config like configs/glyphs.py.
    workdir: output directory; rerunning with the same config resumes there.
    start_time: time.time() at process start, so progress lines count from there (default: now).

  Returns:
    The report dict (report.build_report) for fine-tuning jobs, or {'pretrain': metrics, 'checkpoint': path}
    for a pre-training job.
  """
  progress = Progress(config.heartbeat_s, start_time)
  progress(f"ftcal_jax: {jax.process_count()} process(es), {jax.device_count()} device(s) "
           f"({jax.devices()[0].platform}); workdir {workdir}")
  for name in config.methods:
    methods.get_method(name)  # Fail fast on an unknown name, before any data is built.
  mesh = train_step_lib.make_mesh()
  train_step_lib.check_batch_divisible(config.batch_size, mesh)
  train_step_lib.check_batch_divisible(config.eval_batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)

  dataset = dataset_registry.get_dataset(_dataset_config(config))
  with progress.stage(f"Building/loading dataset {config.dataset.name}"):
    image_shape = dataset.image_shape
    for s in (dataset.train_split, dataset.test_split):
      dataset.num_examples(s)
  num_classes = dataset.num_classes
  model = get_model(config.model.name, num_classes, dtype=jnp.dtype(config.model.dtype))
  writer = metric_writers.create_default_writer(workdir, just_logging=not _is_main())
  writer.write_hparams({k: v for k, v in _flat_config(config).items()})
  init_params = _init_params(config, model, image_shape, progress)

  if tuple(config.methods) == ("pretrain",):
    ctx = _Context(config, workdir, mesh, dataset, None, model, init_params, None, writer, progress,
                   _fingerprint_config(config))
    return _pretrain(ctx)
  if "pretrain" in config.methods:
    raise ValueError("'pretrain' runs alone (configs/glyphs_pretrain.py); remove it from config.methods.")

  # Draw S and U among the classes the dataset has (ImageNet-R: 200 of a 1000-way head), not the whole head.
  split = ClassSplit.from_config(config.class_split, num_classes, candidates=getattr(dataset, "present_classes", None))
  class_mask = getattr(dataset, "class_mask", None)
  ctx = _Context(config, workdir, mesh, dataset, split, model, init_params, class_mask, writer, progress,
                 _fingerprint_config(config))
  progress(f"Class split: |S| = {len(split.seen)}, |U| = {len(split.absent)}; methods {list(config.methods)}" +
           (f"; PCV K={config.pcv.num_splits}" if config.pcv.enabled else ""))
  seen, all_classes = list(split.seen), None
  train, test = dataset.train_split, dataset.test_split

  # The pre-trained model: test, NCM (all training classes) and PCV's held-out data, evaluated once.
  pre_passes = {"test": (test, None), "ncm_train": (train, all_classes)}
  if config.pcv.enabled:
    pre_passes["heldout"] = (f"{train}:heldout", seen)
  fp = checkpointing.fingerprint({"run": "pretrained", "passes": list(pre_passes), "config": ctx.fingerprint_config})
  cache = os.path.join(workdir, "pretrained", "predictions.npz")
  loaded = _load_predictions(cache, fp)
  if loaded is None:
    with progress.stage("Evaluating the pre-trained model"):
      pre = {k: _predict(ctx, init_params, s, c) for k, (s, c) in pre_passes.items()}
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    _save_predictions(cache, pre, fp)
  else:
    pre = loaded[0]
  test_preds = {"pretrained": pre["test"]}
  alg_train, ncm_train = {}, {"pretrained": pre["ncm_train"]}
  histories = {}

  for name in config.methods:
    method = methods.get_method(name)
    classes = seen if method.train_classes == "seen" else all_classes
    passes = {"test": (test, None)}
    if method.calibrated:
      passes["alg_train"] = (train, seen)  # Its own S-only fine-tuning data, never test data (ALG).
    if name == "finetune":
      passes["ncm_train"] = (train, all_classes)
    # A per-method seed that does not depend on the order of config.methods.
    seed = config.seed * 1000 + methods.list_methods().index(name)
    preds, history = run_method(ctx, name, name, train_split=train, classes=classes, seed=seed, passes=passes)
    test_preds[name] = preds["test"]
    if "alg_train" in preds:
      alg_train[name] = preds["alg_train"]
    if "ncm_train" in preds:
      ncm_train[name] = preds["ncm_train"]
    histories[name] = history

  pcv = None
  if config.pcv.enabled:
    pcv = run_pcv(ctx, pre["heldout"])

  with progress.stage("Building the report"):
    from ftcal_jax import report as report_lib  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
    rep = report_lib.build_report(class_split=split, class_mask=class_mask, test=test_preds, alg_train=alg_train,
                                  ncm_train=ncm_train, pcv=pcv, history=histories, config=config.to_dict())
    if _is_main():
      if config.write_figures:
        paths = report_lib.write_report(rep, workdir)
      else:
        paths = {"json": os.path.join(workdir, "report.json")}
        with open(paths["json"], "w") as f:
          json.dump(rep, f, indent=1)
      _write_summary(ctx, rep)
  for f in rep.get("findings", []):
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not checked"}[f["holds"]]
    progress(f"finding: {f['claim']}: {verdict} ({f['evidence']})")
  if _is_main():
    progress(f"Report: {paths['json']}" + (f", {paths['markdown']}" if "markdown" in paths else ""))
  writer.flush()
  return rep


def run_pcv(ctx: _Context, pre_heldout: evaluation.Predictions) -> Dict[str, List[Any]]:
  """PCV's K pseudo-split fine-tunes; returns {'gammas', 'found', 'taus' (in %)} for report.build_report."""
  config, split = ctx.config, ctx.split
  train = ctx.dataset.train_split
  out = {"gammas": [], "found": [], "taus": []}
  # One length for every pseudo run: S1 is half of S.
  steps = _num_steps(config, ctx.dataset.num_examples(f"{train}:fit", list(split.seen)) // 2)
  for k in range(config.pcv.num_splits):
    pseudo = split.pseudo_split(seed=config.pcv.seed + k)
    s1 = list(pseudo.seen)
    shifted = pseudo.absent_mask  # S2 plays U.
    preds, _ = run_method(ctx, f"pcv_{k}", "finetune", train_split=f"{train}:fit", classes=s1,
                          seed=config.seed * 1000 + 100 + k, passes={"heldout": (f"{train}:heldout", list(split.seen))},
                          num_steps=steps)
    held = preds["heldout"]
    on_s2 = pseudo.absent_mask[pre_heldout.labels]
    tau = float(np.mean(np.argmax(pre_heldout.logits[on_s2], -1) == pre_heldout.labels[on_s2]))
    curve = calibration.seen_unseen_curve(held.logits, held.labels, shifted)
    gamma, found = calibration.pcv_select(curve, tau)
    out["gammas"].append(float(gamma))
    out["found"].append(bool(found))
    out["taus"].append(100.0 * tau)  # The report's accuracies are in %.
    ctx.progress(f"pcv_{k}: tau {100 * tau:.1f}% (pre-trained on S2), gamma_k {float(gamma):.3f} "
                 f"(found {bool(found)})")
  return out


def _pretrain(ctx: _Context) -> Dict[str, Any]:
  """Pre-training on the source split over all classes; writes the vit_jax npz the demo ships."""
  config = ctx.config
  # A rerun of a finished job restores the final checkpoint and trains zero steps.
  params, history = train_model(ctx, "pretrain", "pretrain", train_split=config.dataset.source_split, classes=None,
                                seed=config.seed)
  out_path = os.path.join(ctx.workdir, config.pretrain_output)
  if _is_main():
    weights.save_npz(jax.device_get(params), out_path)
    ctx.progress(f"Wrote {out_path} ({os.path.getsize(out_path) / 1e6:.2f} MB)")
  result = {}
  for split in (config.dataset.source_test_split, ctx.dataset.test_split):
    p = _predict(ctx, params, split)
    result[split] = float(100 * np.mean(np.argmax(p.logits, -1) == p.labels))
    ctx.progress(f"Pre-trained accuracy on {split}: {result[split]:.2f}%")
  ctx.summary["pretrain"]["accuracy"] = result
  if _is_main():
    _write_summary(ctx, None)
  return {"pretrain": result, "checkpoint": out_path, "history": history}


def _flat_config(config) -> Dict[str, Any]:
  out = {}

  def walk(prefix, d):
    for k, v in d.items():
      if isinstance(v, Mapping):
        walk(f"{prefix}{k}.", v)
      else:
        out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

  walk("", config.to_dict())
  return out


def _write_summary(ctx: _Context, rep: Optional[Mapping[str, Any]]) -> None:
  summary = {"runs": ctx.summary, "wall_seconds": time.time() - ctx.progress.t0}
  if rep is not None:
    summary["methods_top1"] = {k: v["top1"] for k, v in rep["methods"].items()}
    summary["ausuc"] = rep["ausuc"]
    summary["gammas"] = rep["gammas"]
    summary["findings"] = [{"claim": f["claim"], "holds": f["holds"]} for f in rep.get("findings", [])]
  with open(os.path.join(ctx.workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, default=str)
