"""The paper's recipe on a real benchmark, and the argument parsing and loading every config file shares.

The schema and the recipe's defaults live in `base_config`. Every config in experiments/ starts from `recipe(...)`,
sets what its table changes, and calls `finish(...)`, which applies the `runlocal` shrink and locks the config.
Config files are run as scripts by `config_flags`, so one that builds on another (an ablation on ImageNet-R) loads
it by path with `load(name, __file__)`.

Arguments come as one string after the colon, comma-separated, e.g. `office_home.py:Ar-Cl,runlocal` or
`ablation_num_classes.py:num_seen=20`: `parse_arg` reads `key=value` tokens (typed by the default), bare names of
boolean keys (`runlocal`), and at most one bare value for the config's positional key (the pair, the task, ...).
configs/*.py parse theirs with it too.
"""

import importlib.util
import os
import re
import sys
from typing import Any, Dict, Optional, Sequence

import ml_collections

from ftcal_jax import base_config

# (mean, std) of [0, 1] images that each backbone family's checkpoints were trained with.
INPUT_NORMALISATION = {
    "ViT": ((0.5,), (0.5,)),  # vit_jax: [-1, 1]
    "ResNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet statistics
    "CLIP": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP's
}


def family(model_name: str) -> str:
  """'ViT', 'ResNet' or 'CLIP': the registry name's prefix ('ResNet-50' -> 'ResNet')."""
  return model_name.split("-")[0]


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


def parse_arg(arg: Optional[str], positional: Optional[str] = None, *, config_name: str = "config",
              **defaults: Any) -> Dict[str, Any]:
  """'Ar-Cl,runlocal,num_seen=20' -> {'pair': 'Ar-Cl', 'runlocal': True, 'num_seen': 20, ...}.

  Args:
    arg: the string after the config path's colon (None or '' for all defaults).
    positional: the key a bare token that is not a boolean key fills (e.g. 'pair'); None forbids one.
    config_name: how error messages name the config (e.g. 'configs/glyphs.py').
    **defaults: every accepted key with its default; values are parsed to the default's type.

  Returns:
    A dict with every key of `defaults`.

  Raises:
    ValueError: an unknown key, a second positional token, or a value of the wrong type.
  """
  out = dict(defaults)
  valid = ", ".join(sorted(defaults)) or "none"
  filled = False
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, eq, value = token.partition("=")
    if not eq:
      if isinstance(defaults.get(key), bool):
        out[key] = True
        continue
      if positional is None:  # Not a flag, and no bare value is accepted: an unknown name.
        hint = " (write key=value)" if any(not isinstance(v, bool) for v in defaults.values()) else ""
        raise ValueError(f"Unknown {config_name} argument {token!r}; valid keys: {valid}{hint}.")
      if filled:
        raise ValueError(f"Unexpected {config_name} argument {token!r}; valid keys: {valid} (write key=value).")
      key, value, filled = positional, token, True
    if key not in defaults:
      raise ValueError(f"Unknown {config_name} argument {key!r}; valid keys: {valid}.")
    out[key] = _parse_value(key, value, defaults[key])
  return out


def _parse_value(key: str, value: str, default: Any) -> Any:
  """`value` parsed to the type of `default` (bool: 1/true/yes; None: kept a string)."""
  try:
    if isinstance(default, bool):
      return value.lower() in ("1", "true", "yes")
    if default is None:
      return value
    return type(default)(value)
  except ValueError as e:
    raise ValueError(f"Config argument {key}={value!r} is not a {type(default).__name__}.") from e


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
    model: a models.list_models() name; its family sets the input normalisation (INPUT_NORMALISATION).
    seed: seeds the class split, init, batch order and PCV.
  """
  config = base_config.get_config()  # The paper's recipe; below, what the benchmark sets.
  config.seed = seed  # class_split.seed follows it.
  for key, value in dataset.items():
    if key not in config.dataset:  # One schema: a new field is declared, with its comment, in base_config.
      raise ValueError(f"config.dataset has no field {key!r}; declare it in ftcal_jax/base_config.py.")
    config.dataset[key] = value  # Benchmark-specific fields (domain, head_classes), commented at the call.
  config.class_split.num_seen = num_seen  # |S| (int) or a fraction of the dataset's classes.
  if num_absent is not None:
    config.class_split.num_absent = int(num_absent)
  config.model.name = model
  config.model.input_mean, config.model.input_std = INPUT_NORMALISATION[family(model)]
  config.init_checkpoint = init_checkpoint  # The pre-trained model; see the config's docstring.
  config.init_head = init_head
  config.methods = tuple(methods)
  config.optimizer.weight_decay = weight_decay  # PyTorch-style L2 added to the gradient, as the official code.
  config.num_epochs = float(num_epochs)
  return config


def override(config: ml_collections.ConfigDict, overrides: Dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets each dotted field of `overrides` ('optimizer.lr': 3e-4) on `config`, locked or not; returns it."""
  with config.unlocked():
    for path, value in overrides.items():
      *parents, leaf = path.split(".")
      node = config
      for part in parents:
        node = node[part]
      node[leaf] = value
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
    # The family's few-thousand-parameter model (ViT-testing, ResNet-testing, CLIP-testing); compiles in seconds.
    config.model.name = family(config.model.name) + "-testing"
    config.model.dtype = "float32"  # CPUs have no fast bfloat16.
    config.init_checkpoint = ""  # Random init: the smoke run checks mechanics, not findings.
    config.model.text_embeddings = ""  # No zero-shot head either: the random head covers every class.
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
