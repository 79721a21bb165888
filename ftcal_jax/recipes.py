"""The paper's recipe on a real benchmark, as a config in the schema of configs/glyphs.py.

Every config in experiments/ starts from `recipe(...)`, sets what its table changes, and calls `finish(...)`,
which applies the `runlocal` shrink and locks the config. Config files are run as scripts by `config_flags`, so one
that builds on another (an ablation on ImageNet-R) loads it by path with `load(name, __file__)`.

Arguments come as one string after the colon, comma-separated, e.g. `office_home.py:Ar-Cl,runlocal` or
`ablation_num_classes.py:num_seen=20`: `parse_arg` reads `key=value` tokens (typed by the default), bare names of
boolean keys (`runlocal`), and at most one bare value for the config's positional key (the pair, the task, ...).
"""

import importlib.util
import os
import re
import sys
from typing import Any, Dict, Optional, Sequence

import ml_collections

# The recipe of the official code (paper.md): SGD + Nesterov 0.9, head lr 1e-3, backbone at 0.1x, cosine, batch 64.
PAPER_BATCH = 64
PAPER_LR = 1e-3


def load_file(path: str):
  """Imports a config (or script) file by path, once; config files are run by `config_flags`, not a package."""
  path = os.path.abspath(path)
  # Keyed by the full path: configs/ and experiments/ may hold files of the same name.
  key = "ftcal_config_" + re.sub(r"\W", "_", path)
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[key] = module
  return sys.modules[key]


def load(name: str, anchor: str):
  """Imports the config file <name>.py that sits beside the file `anchor`."""
  return load_file(os.path.join(os.path.dirname(os.path.abspath(anchor)), f"{name}.py"))


def parse_arg(arg: Optional[str], positional: Optional[str] = None, **defaults: Any) -> Dict[str, Any]:
  """'Ar-Cl,runlocal,num_seen=20' -> {'pair': 'Ar-Cl', 'runlocal': True, 'num_seen': 20, ...}.

  Args:
    arg: the string after the config path's colon (None or '' for all defaults).
    positional: the key a bare token that is not a boolean key fills (e.g. 'pair'); None forbids one.
    **defaults: every accepted key with its default; values are parsed to the default's type.

  Returns:
    A dict with every key of `defaults`.

  Raises:
    ValueError: an unknown key, a second positional token, or a value of the wrong type.
  """
  out = dict(defaults)
  filled = False
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, eq, value = token.partition("=")
    if not eq:
      if isinstance(defaults.get(key), bool):
        out[key] = True
        continue
      if positional is None or filled:
        raise ValueError(f"Unexpected config argument {token!r}; valid keys: {', '.join(sorted(defaults))} "
                         "(write key=value).")
      key, value, filled = positional, token, True
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid keys: {', '.join(sorted(defaults))}.")
    default = defaults[key]
    try:
      if isinstance(default, bool):
        out[key] = value.lower() in ("1", "true", "yes")
      elif default is None:
        out[key] = value
      else:
        out[key] = type(default)(value)
    except ValueError as e:
      raise ValueError(f"Config argument {key}={value!r} is not a {type(default).__name__}.") from e
  return out


def recipe(*, dataset: Dict[str, Any], num_seen: Any, num_absent: Any = None, weight_decay: float, num_epochs: float,
           init_checkpoint: str, init_head: str, methods: Sequence[str] = ("finetune", "oracle"),
           model: str = "ViT-B/32", seed: int = 0) -> ml_collections.ConfigDict:
  """The paper's fine-tuning job on one benchmark, unlocked (the caller edits it, then calls `finish`).

  Args:
    dataset: the registry name and the TFDS fields of the benchmark (name, image_size, manual_dir, ...).
    num_seen: |S| (int) or a fraction of the candidate classes (float in (0, 1)).
    num_absent: |U| (int); None = every class not in S.
    weight_decay: the benchmark's weight decay (Office-Home 5e-4, ImageNet-R/S 1e-4).
    num_epochs: passes over the fine-tuning data.
    init_checkpoint: the pre-trained vit_jax .npz.
    init_head: 'keep' its head (it must cover the dataset's classes) or 'new'.
    methods: the trained methods, in order; 'finetune' first.
    model: models.MODEL_CONFIGS key.
    seed: seeds the class split, init, batch order and PCV.
  """
  config = ml_collections.ConfigDict()
  config.seed = seed  # Seeds the class split, batch order, augmentation, dropout and PCV's pseudo-splits.

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = dataset["name"]  # Registry name (datasets/registry.py).
  config.dataset.data_dir = ml_collections.config_dict.placeholder(
      str)  # TFDS data dir (a GCS bucket on a pod); None = $TFDS_DATA_DIR.
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(
      str)  # Where manual downloads lie (Office-Home's zip).
  config.dataset.image_size = 224  # Square input side after crop/resize (the ViT's posemb is resized to it).
  config.dataset.train_split = "train"  # The fine-tuning split (only its S classes are used, except Oracle).
  config.dataset.test_split = "test"  # Evaluation over all classes.
  config.dataset.source_split = "train"  # Only the source stage (method 'pretrain') reads it.
  config.dataset.source_test_split = "test"  # Reported by the source stage.
  # None = the registry's default, the official recipe (crop 0.7-1, flip, jitter 0.3, gray).
  config.dataset.augment = None
  config.dataset.holdout_seed = 0  # Seeds the per-class 'fit'/'heldout' split PCV uses.
  config.dataset.split_seed = 0  # Seeds carved train/test splits (ImageNet-R/-Sketch).
  config.dataset.eval_crop_fraction = 0.875  # Eval: resize the short side to size / 0.875, centre crop.
  config.dataset.shuffle_buffer = 10_000  # tf.data shuffle buffer per host.
  for key, value in dataset.items():
    if key != "name":
      config.dataset[key] = value  # Benchmark-specific fields (domain, head_classes), commented at the call.

  config.class_split = ml_collections.ConfigDict()
  config.class_split.kind = "random"  # Seeded random S and U.
  config.class_split.num_seen = num_seen  # |S| (int) or a fraction of the dataset's classes.
  # |U|; None = all classes not in S.
  config.class_split.num_absent = (ml_collections.config_dict.placeholder(int)
                                   if num_absent is None else int(num_absent))
  config.class_split.seed = config.get_ref("seed")  # Follows config.seed.

  config.model = ml_collections.ConfigDict()
  config.model.name = model  # models.MODEL_CONFIGS key; the paper's ViT is ViT-B/32.
  config.model.dtype = "bfloat16"  # Compute dtype on TPU/GPU; the head and losses stay float32.
  config.init_checkpoint = init_checkpoint  # The pre-trained model (vit_jax .npz); see the config's docstring.
  config.init_head = init_head  # 'keep' the checkpoint's head, or 'new' (random, num_classes wide).

  config.methods = tuple(methods)  # Trained in order; each checkpoints to workdir/<method>.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # The paper's recipe: SGD with Nesterov momentum.
  config.optimizer.lr = PAPER_LR  # Head learning rate (official default).
  config.optimizer.momentum = 0.9  # Nesterov momentum.
  config.optimizer.nesterov = True  # Nesterov, as the official code.
  config.optimizer.weight_decay = weight_decay  # PyTorch-style L2 added to the gradient, as the official code.
  config.optimizer.backbone_lr_mult = 0.1  # The backbone trains at 0.1x the head's rate.
  config.optimizer.warmup_steps = 0  # No warm-up in the official recipe.
  config.optimizer.schedule = "cosine"  # Cosine decay to 0 over epochs x iterations.
  config.optimizer.grad_clip_norm = 0.0  # No clipping in the official recipe.

  config.num_epochs = float(num_epochs)  # Passes over each run's training data.
  config.num_steps = 0  # If > 0, overrides num_epochs with a fixed step count.
  config.batch_size = PAPER_BATCH  # Global batch over all devices of all hosts (must divide by the device count).
  config.eval_batch_size = 512  # Global eval batch (the last one padded and masked).

  config.ldifs = ml_collections.ConfigDict()
  config.ldifs.alpha = 10.0  # loss = CE + alpha * LDIFS (their README's value).
  config.ldifs.taps = ()  # () = ldifs.default_taps(depth): patch embedding and blocks 3, 6, 9, 12 of ViT-B.
  config.ldifs.normalisation = "channel"  # Per-token unit vectors ('token' = the official code's axis).
  config.ldifs.optimizer = ml_collections.ConfigDict()
  config.ldifs.optimizer.name = "adamw"  # LDIFS's recipe: AdamW + warm-up + cosine + clipping.
  config.ldifs.optimizer.lr = 1e-5  # Their rate for ViT-B.
  config.ldifs.optimizer.momentum = 0.0  # Unused by AdamW.
  config.ldifs.optimizer.nesterov = False  # Unused by AdamW.
  config.ldifs.optimizer.weight_decay = 0.1  # Decoupled AdamW weight decay.
  config.ldifs.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters.
  config.ldifs.optimizer.warmup_steps = 100  # Linear warm-up steps.
  config.ldifs.optimizer.schedule = "cosine"  # Cosine decay after the warm-up.
  config.ldifs.optimizer.grad_clip_norm = 1.0  # Global-norm clip.

  config.holistic_transfer = ml_collections.ConfigDict()
  config.holistic_transfer.distill_weight = 1.0  # lambda of the U-logit distillation (holistic_transfer.py).
  config.holistic_transfer.temperature = 2.0  # Distillation temperature T.

  config.pcv = ml_collections.ConfigDict()
  config.pcv.enabled = True  # PCV's pseudo-split fine-tunes run inside the job; the report gets FT + PCV.
  config.pcv.num_splits = 3  # K pseudo-splits (the paper's 3).
  config.pcv.holdout_fraction = 0.2  # Per-class share of the training split held out for PCV's curves.
  config.pcv.seed = 17  # Pseudo-split k halves S with seed pcv.seed + k.

  config.log_every_steps = 50  # Progress line, TensorBoard scalars and head-norm history.
  config.checkpoint_every_steps = 500  # Orbax saves (and always at the end of a run).
  config.write_figures = True  # report.md and figures/*.png besides report.json.
  config.heartbeat_s = 30.0  # Seconds between "still working" lines in long silent stages.
  config.pretrain_output = ""  # Only a source stage (method 'pretrain') writes a checkpoint.
  return config


def source_stage(config: ml_collections.ConfigDict, *, init_checkpoint: str, output: str) -> None:
  """Turns `config` into its source stage: all classes of source_split, fresh head, writes workdir/<output>."""
  config.methods = ("pretrain",)  # Trains head + backbone on every class of dataset.source_split.
  config.init_checkpoint = init_checkpoint  # The upstream (ImageNet-21k) checkpoint.
  config.init_head = "new"  # Its 21k head does not fit; a fresh one over the dataset's classes.
  config.pcv.enabled = False  # No calibration in the source stage.
  config.pretrain_output = output  # The .npz the target stage loads.


def finish(config: ml_collections.ConfigDict, runlocal: bool) -> ml_collections.ConfigDict:
  """Applies the CPU smoke-run shrink when `runlocal`, then locks the config."""
  if runlocal:
    config.model.name = "ViT-testing"  # A few thousand parameters; compiles in seconds.
    config.model.dtype = "float32"  # CPUs have no fast bfloat16.
    config.init_checkpoint = ""  # Random init: the smoke run checks mechanics, not findings.
    config.dataset.image_size = 16  # 2x2 patches of 8.
    config.dataset.shuffle_buffer = 64
    config.num_epochs = 0.0
    config.num_steps = 3  # A few steps per run (PCV's included).
    config.batch_size = 8  # Divisible by 1, 2, 4 or 8 CPU devices.
    config.eval_batch_size = 64
    config.pcv.num_splits = 1
    config.ldifs.optimizer.warmup_steps = 1
    config.log_every_steps = 1
    config.checkpoint_every_steps = 100
    config.heartbeat_s = 60.0
  config.lock()
  return config
