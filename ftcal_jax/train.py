"""The whole run: build the data, load the pre-trained ViT, train every configured method, calibrate, report.

`train_and_evaluate(config, workdir)` is what `python -m ftcal_jax.main` calls; tests and Colab call it directly.
This module only orchestrates. One training run is trainer.py, PCV's protocol pcv.py, the head statistics
training_dynamics.py, the prediction cache evaluation.py, the starting parameters models/pretrained.py, the
report report.py (numbers) and report_markdown.py (files).

Layout of `workdir`:
  <method>/            orbax checkpoints of one training run (config fingerprint beside them), `history.json`
                       (training_dynamics.HeadHistory), and once the run is complete `predictions.npz` (its
                       cached evaluation passes, evaluation.cached_predictions);
  pcv_<k>/             the same for PCV's k-th pseudo-split fine-tune;
  finetune/params.npz  FT's trained parameters (vit_jax npz; with BatchNorm 'params/...' and 'batch_stats/...'),
                       which the job exports calibrated;
  finetune_calibrated.npz, .json  FT with config.export_calibration's γ folded into its head bias (export.py);
  pretrained/          the pre-trained model's cached evaluation passes;
  report.json          the paper's report (report.py); with config.write_figures also report.md and figures/
                       (report_markdown.py, plots.py);
  summary.json         the final training metrics of every run and the headline numbers;
  events.out.tfevents.*  TensorBoard scalars (clu metric writers).

Rerunning the same command resumes: a run with checkpoints restarts from its latest step (same batches, same
rngs, so the result equals an uninterrupted run), and a completed run is never trained again.
"""

import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from clu import metric_writers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ftcal_jax import atomic_write
from ftcal_jax import checkpointing
from ftcal_jax import config_validation
from ftcal_jax import evaluation
from ftcal_jax import export
from ftcal_jax import head_geometry
from ftcal_jax import input_pipeline
from ftcal_jax import integrity
from ftcal_jax import methods
from ftcal_jax import pcv
from ftcal_jax import report as report_lib
from ftcal_jax import train_step as train_step_lib
from ftcal_jax import trainer
from ftcal_jax import workdir_lock
from ftcal_jax.class_split import ClassSplit
from ftcal_jax.datasets import registry as dataset_registry
from ftcal_jax.models import MODEL_CONFIGS
from ftcal_jax.models import get_model
from ftcal_jax.models import list_models
from ftcal_jax.models import pretrained
from ftcal_jax.models import weights
from ftcal_jax.progress import Progress

# Config fields that do not change any result: a rerun may change them and still resume.
_NON_SEMANTIC = ("methods", "log_every_steps", "checkpoint_every_steps", "write_figures", "heartbeat_s",
                 "export_calibration", "analyses")
# The rules config.export_calibration may name ('' writes no calibrated model).
_EXPORT_RULES = ("", "ALG", "PCV")
Passes = Mapping[str, Tuple[str, Optional[Sequence[int]]]]  # {kind: (split, classes or None for all)}


def _is_main() -> bool:
  return jax.process_index() == 0


def _fingerprint_config(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config fields results depend on, and the init checkpoint's content: overwriting that file (as
  experiments/pretrain_glyphs.py does) must not let caches of the old weights be reused."""
  d = config.to_dict()
  for k in _NON_SEMANTIC:
    d.pop(k, None)
  path = pretrained.resolve_checkpoint(config.init_checkpoint)
  if path:
    d["init_checkpoint_sha256"] = integrity.file_sha256(path)
  return d


def _predict(ctx: trainer.JobContext, variables, split: str, classes: Optional[Sequence[int]] = None):
  """The model with `variables` ({'params'}, and {'batch_stats'} with BatchNorm) over one split (eval mode)."""
  batches = ctx.dataset.eval_batches(split, global_batch=ctx.config.eval_batch_size, classes=classes)
  return evaluation.predict(ctx.model, variables["params"], batches, ctx.mesh, batch_stats=variables.get("batch_stats"),
                            input_affine=ctx.input_affine)


def run_method(ctx: trainer.JobContext, run_name: str, method_name: str, *, train_split: str,
               classes: Optional[Sequence[int]], seed: int, passes: Passes, num_steps: Optional[int] = None,
               params_path: Optional[str] = None):
  """Trains (or resumes, or loads from cache) one run and evaluates it on `passes` {kind: (split, classes)}.

  With `params_path`, the trained parameters are also written there (vit_jax npz) when the run is trained.
  """
  fp = checkpointing.fingerprint({
      "run": run_name, "method": method_name, "train_split": train_split,
      "classes": None if classes is None else [int(c) for c in classes],
      "passes": {k: [s, None if c is None else [int(x) for x in c]] for k, (s, c) in passes.items()}, "seed": seed,
      "num_steps": num_steps, "config": ctx.fingerprint_config
  })

  def train_and_predict():
    variables, history = trainer.train_model(ctx, run_name, method_name, train_split=train_split, classes=classes,
                                             seed=seed, num_steps=num_steps)
    params = variables["params"]
    if params_path and _is_main():  # With BatchNorm: 'params/...' and 'batch_stats/...', as a pre-training npz.
      weights.save_npz(jax.device_get(dict(variables) if "batch_stats" in variables else params), params_path)
    if ctx.config.analyses.head_update_cosine and ctx.split is not None:
      history = {
          **history, **head_geometry.run_record(params["head"]["kernel"], ctx.init_params["head"]["kernel"], ctx.split)
      }
    with ctx.progress.stage(f"Evaluating {run_name} on {', '.join(passes)}"):
      return {kind: _predict(ctx, variables, split, cls) for kind, (split, cls) in passes.items()}, history

  cache = os.path.join(ctx.workdir, run_name, "predictions.npz")
  preds, history, cached = evaluation.cached_predictions(cache, fp, train_and_predict)
  if cached:
    ctx.progress(f"{run_name}: complete in an earlier run; using its cached predictions")
    ctx.summary.setdefault(run_name, {"method": method_name, "cached": True})
  return preds, history


def _model_options(model_cfg) -> Dict[str, Any]:
  """get_model's head options; the head option (linear or cosine) exists for the ViT only (models/vit.py)."""
  if model_cfg.head == "linear" or model_cfg.name not in list_models():  # get_model names the valid models.
    return {}
  if model_cfg.name not in MODEL_CONFIGS:
    raise ValueError(f"config.model.head={model_cfg.head!r} is implemented for the ViT models only; got "
                     f"config.model.name={model_cfg.name!r}. Use config.model.head='linear' for it.")
  return dict(head=model_cfg.head, cosine_scale=float(model_cfg.cosine_scale))


def _build_model(model_cfg, num_classes: int):
  """The configured backbone with its head option."""
  return get_model(model_cfg.name, num_classes, dtype=jnp.dtype(model_cfg.dtype), **_model_options(model_cfg))


def _dataset_config(config) -> Dict[str, Any]:
  d = config.dataset.to_dict()
  d["holdout_fraction"] = config.pcv.holdout_fraction  # The 'fit'/'heldout' parts PCV uses.
  return d


def _setup(config: ml_collections.ConfigDict, workdir: str, start_time: Optional[float]) -> trainer.JobContext:
  """Checks the config, builds the mesh, the dataset, the model and its starting parameters (no class split yet)."""
  progress = Progress(config.heartbeat_s, start_time)
  progress(f"ftcal_jax: {jax.process_count()} process(es), {jax.device_count()} device(s) "
           f"({jax.devices()[0].platform}); workdir {workdir}")
  for name in config.methods:
    methods.get_method(name)  # Fail fast on an unknown name, before any data is built.
  if config.export_calibration not in _EXPORT_RULES:
    raise ValueError(f"config.export_calibration must be one of {_EXPORT_RULES}; got {config.export_calibration!r}.")
  if config.export_calibration == "PCV" and not config.pcv.enabled:
    raise ValueError("config.export_calibration='PCV' needs config.pcv.enabled=True (or export 'ALG').")
  mesh = train_step_lib.make_mesh()
  train_step_lib.check_batch_divisible(config.batch_size, mesh)
  train_step_lib.check_batch_divisible(config.eval_batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)

  dataset = dataset_registry.get_dataset(_dataset_config(config))
  with progress.stage(f"Building/loading dataset {config.dataset.name}"):
    image_shape = dataset.image_shape
    for s in (dataset.train_split, dataset.test_split):
      dataset.num_examples(s)
  model = _build_model(config.model, dataset.num_classes)
  writer = metric_writers.create_default_writer(workdir, just_logging=not _is_main())
  writer.write_hparams({k: v for k, v in _flat_config(config).items()})
  init = pretrained.init_variables(config, model, image_shape, progress)
  affine = input_pipeline.model_input_affine(config.model.input_mean, config.model.input_std)
  return trainer.JobContext(config, workdir, mesh, dataset, None, model, init["params"], None, writer, progress,
                            _fingerprint_config(config), init_batch_stats=init.get("batch_stats"), input_affine=affine)


def _evaluate_pretrained(ctx: trainer.JobContext) -> Dict[str, evaluation.Predictions]:
  """The pre-trained model on test, NCM's training data (all classes) and PCV's held-out data, evaluated once."""
  train, test = ctx.dataset.train_split, ctx.dataset.test_split
  passes = {"test": (test, None), "ncm_train": (train, None)}
  if ctx.config.pcv.enabled:
    passes["heldout"] = (f"{train}:heldout", list(ctx.split.seen))
  fp = checkpointing.fingerprint({"run": "pretrained", "passes": list(passes), "config": ctx.fingerprint_config})

  def predict_all():
    with ctx.progress.stage("Evaluating the pre-trained model"):
      return {k: _predict(ctx, ctx.init_variables, s, c) for k, (s, c) in passes.items()}, None

  return evaluation.cached_predictions(os.path.join(ctx.workdir, "pretrained", "predictions.npz"), fp, predict_all)[0]


def _run_methods(ctx: trainer.JobContext, pre: Mapping[str, evaluation.Predictions]) -> Dict[str, Dict[str, Any]]:
  """Every configured method, trained and evaluated: build_report's {test, alg_train, ncm_train, history}."""
  seen, all_classes = list(ctx.split.seen), None
  train, test = ctx.dataset.train_split, ctx.dataset.test_split
  out = {
      "test": {"pretrained": pre["test"]}, "alg_train": {}, "ncm_train": {"pretrained": pre["ncm_train"]},
      "history": {}
  }
  for name in ctx.config.methods:
    method = methods.get_method(name)
    classes = seen if method.train_classes == "seen" else all_classes
    passes = {"test": (test, None)}
    if method.calibrated:
      passes["alg_train"] = (train, seen)  # Its own S-only fine-tuning data, never test data (ALG).
    if name == "finetune":
      passes["ncm_train"] = (train, all_classes)
    # A per-method seed that does not depend on the order of config.methods.
    seed = ctx.config.seed * 1000 + methods.seed_index(name)
    # FT's parameters are kept beside its predictions: the job ends by exporting them calibrated.
    params_path = _finetune_params_path(ctx) if name == "finetune" else None
    preds, history = run_method(ctx, name, name, train_split=train, classes=classes, seed=seed, passes=passes,
                                params_path=params_path)
    for kind, p in preds.items():
      out[kind][name] = p
    out["history"][name] = history
  return out


def _run_pcv(ctx: trainer.JobContext, pre_heldout: evaluation.Predictions) -> Dict[str, list]:
  """PCV (pcv.py), its k-th pseudo-split fine-tune run as `pcv_<k>`; returns pcv.run's {'gammas', 'found', 'taus'}."""
  config, seen, train = ctx.config, list(ctx.split.seen), ctx.dataset.train_split
  # One length for every pseudo run: S1 is half of S.
  steps = trainer.default_num_steps(config, ctx.dataset.num_examples(f"{train}:fit", seen) // 2)

  def fine_tune(k, s1):
    preds, _ = run_method(ctx, f"pcv_{k}", "finetune", train_split=f"{train}:fit", classes=s1,
                          seed=config.seed * 1000 + 100 + k, passes={"heldout": (f"{train}:heldout", seen)},
                          num_steps=steps)
    return preds["heldout"]

  return pcv.run(ctx.split, pre_heldout, fine_tune, num_splits=config.pcv.num_splits, seed=config.pcv.seed,
                 log=ctx.progress)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       start_time: Optional[float] = None) -> Dict[str, Any]:
  """Runs the configured job end to end and writes its outputs to `workdir`.

  The config is checked first (config_validation), before any data or model is built; the workdir is then locked
  for the whole run (workdir_lock), so a second run on it fails at once, naming the PID that holds it.

  Args:
    config: a config like configs/glyphs.py.
    workdir: output directory; rerunning with the same config resumes there.
    start_time: time.time() at process start, so progress lines count from there (default: now).

  Returns:
    The report dict (report.build_report) for fine-tuning jobs, or {'pretrain': metrics, 'checkpoint': path}
    for a pre-training job.
  """
  config_validation.validate_config(config)
  with workdir_lock.hold(workdir):
    return _run_job(config, workdir, start_time)


def _run_job(config: ml_collections.ConfigDict, workdir: str, start_time: Optional[float]) -> Dict[str, Any]:
  """train_and_evaluate's body, under the workdir lock."""
  ctx = _setup(config, workdir, start_time)
  if tuple(config.methods) == ("pretrain",):
    return _pretrain(ctx)
  if "pretrain" in config.methods:
    raise ValueError("'pretrain' runs alone (configs/glyphs_pretrain.py); remove it from config.methods.")
  # Draw S and U among the classes the dataset has (ImageNet-R: 200 of a 1000-way head), not the whole head.
  present = ctx.dataset.present_classes  # |S| is checked against the classes it is drawn from, before training.
  config_validation.validate_config(config, num_classes=ctx.dataset.num_classes if present is None else len(present))
  natural = dataset_registry.natural_split(ctx.dataset) if config.class_split.kind == "natural" else None
  ctx.split = ClassSplit.from_config(config.class_split, ctx.dataset.num_classes,
                                     candidates=ctx.dataset.present_classes, natural=natural)
  ctx.class_mask = ctx.dataset.class_mask  # datasets.base.Dataset: None when every head class is scored.
  ctx.progress(f"Class split: |S| = {len(ctx.split.seen)}, |U| = {len(ctx.split.absent)}; methods "
               f"{list(config.methods)}" + (f"; PCV K={config.pcv.num_splits}" if config.pcv.enabled else ""))
  pre = _evaluate_pretrained(ctx)
  runs = _run_methods(ctx, pre)
  pcv_out = _run_pcv(ctx, pre["heldout"]) if config.pcv.enabled else None

  with ctx.progress.stage("Building the report"):  # Every output is written whole, and stale ones removed.
    from ftcal_jax import report_markdown  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
    rep = report_lib.build_report(class_split=ctx.split, class_mask=ctx.class_mask, pcv=pcv_out,
                                  config=config.to_dict(), **runs)
    if _is_main():
      paths = report_markdown.write_report(rep, workdir, figures=config.write_figures)
      _write_summary(ctx, rep)
  for f in rep.get("findings", []):
    verdict = {True: "holds", False: "DOES NOT HOLD", None: "not checked"}[f["holds"]]
    ctx.progress(f"finding: {f['claim']}: {verdict} ({f['evidence']})")
  if _is_main():
    ctx.progress(f"Report: {paths['json']}" + (f", {paths['markdown']}" if "markdown" in paths else ""))
    _export_calibrated(ctx, rep)
  ctx.writer.flush()
  return rep


def _finetune_params_path(ctx: trainer.JobContext) -> str:
  return os.path.join(ctx.workdir, "finetune", "params.npz")


def _export_calibrated(ctx: trainer.JobContext, rep: Mapping[str, Any]) -> Optional[str]:
  """Writes FT with config.export_calibration's γ folded into its head bias (export.py); returns the .npz path."""
  rule = ctx.config.export_calibration
  if not rule:
    return None
  gammas = rep["gammas"]
  gamma = gammas["alg"].get("finetune") if rule == "ALG" else (gammas.get("pcv") or {}).get("gamma")
  if gamma is None:
    ctx.progress(f"No calibrated model written: no {rule} γ for FT (PCV: no pseudo-split met its τ).")
    return None
  src = _finetune_params_path(ctx)
  loaded = weights.load_npz(src) if os.path.exists(src) else None
  # A workdir whose FT run predates params.npz (or, with BatchNorm, its statistics in it): re-evaluating FT writes it.
  if loaded is None or (ctx.init_batch_stats is not None and "batch_stats" not in loaded):
    ctx.progress(f"No calibrated model written: {src} is missing{' its BatchNorm statistics' if loaded else ''}; "
                 f"delete {os.path.dirname(src)}/predictions.npz and rerun (FT restores its final checkpoint, it is "
                 "not trained again).")
    return None
  path = os.path.join(ctx.workdir, "finetune_calibrated.npz")
  info = {
      "model": ctx.config.model.name,
      "num_classes": int(ctx.split.num_classes),
      "seen_classes": list(ctx.split.seen),
      "get_model_overrides":
          _model_options(ctx.config.model)  # get_model(model, num_classes, **these) rebuilds it.
  }
  if ctx.class_mask is not None:  # the report scored only these head classes; a deployment should drop the rest
    info["scored_classes"] = np.flatnonzero(ctx.class_mask).tolist()
  export.export_calibrated(loaded, np.asarray(ctx.split.absent_mask), gamma, path, rule=rule, metadata=info)
  ctx.progress(f"Wrote {path}: FT with the {rule} γ = {gamma:.4f} folded into the head bias of the absent classes")
  return path


def _pretrain(ctx: trainer.JobContext) -> Dict[str, Any]:
  """Pre-training on the source split over all classes; writes the npz the target stage loads (the demo ships one).

  A ViT's npz holds its params in vit_jax naming; a ResNet's holds 'params/...' and 'batch_stats/...'.
  """
  config = ctx.config
  # A rerun of a finished job restores the final checkpoint and trains zero steps.
  variables, history = trainer.train_model(ctx, "pretrain", "pretrain", train_split=config.dataset.source_split,
                                           classes=None, seed=config.seed)
  out_path = os.path.join(ctx.workdir, config.pretrain_output)
  if _is_main():
    weights.save_npz(jax.device_get(variables if "batch_stats" in variables else variables["params"]), out_path)
    ctx.progress(f"Wrote {out_path} ({os.path.getsize(out_path) / 1e6:.2f} MB)")
  result = {}
  for split in (config.dataset.source_test_split, ctx.dataset.test_split):
    p = _predict(ctx, variables, split)
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


def _write_summary(ctx: trainer.JobContext, rep: Optional[Mapping[str, Any]]) -> None:
  summary = {"runs": ctx.summary, "wall_seconds": time.time() - ctx.progress.t0}
  if rep is not None:
    summary["methods_top1"] = {k: v["top1"] for k, v in rep["methods"].items()}
    summary["ausuc"] = rep["ausuc"]
    summary["gammas"] = rep["gammas"]
    summary["findings"] = [{"claim": f["claim"], "holds": f["holds"]} for f in rep.get("findings", [])]
  atomic_write.write_json(os.path.join(ctx.workdir, "summary.json"), summary, indent=1, default=str)
