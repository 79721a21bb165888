"""ResNet weights from PyTorch state dicts into the variables of `ftcal_jax.models.resnet.ResNet`.

Accepted names:

  torchvision / timm    conv1, bn1, layer1.0.conv1, layer1.0.bn1, ..., layer1.0.downsample.{0,1}, fc
  transformers          resnet.embedder.embedder.{convolution,normalization},
                        resnet.encoder.stages.0.layers.0.{layer.0..2,shortcut}.{convolution,normalization},
                        classifier.1 (`ResNetForImageClassification`; `ResNetModel` has no 'resnet.' prefix)

from a dict, `.pth`/`.pt`/`.bin` (torch.load(weights_only=True)) or `.safetensors`. A 'module.' prefix (a model
saved under DataParallel) is stripped, and so is a caller-given `prefix` (e.g. 'backbone.').
"""

import os
import re
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple, Union

import numpy as np

from ftcal_jax.models import weights

_Target = Union[str, Callable[[re.Match], str]]


def _stage(m: re.Match, leaf: str) -> str:  # transformers counts stages from 0, torchvision from 1
  return f"layer{int(m.group(1)) + 1}_{m.group(2)}/{leaf}"


_TORCHVISION_RULES: Sequence[Tuple[str, _Target]] = (
    (r"conv1", "conv1"),
    (r"bn1", "bn1"),
    (r"layer(\d+)\.(\d+)\.(conv\d|bn\d)", r"layer\1_\2/\3"),
    (r"layer(\d+)\.(\d+)\.downsample\.0", r"layer\1_\2/downsample_conv"),
    (r"layer(\d+)\.(\d+)\.downsample\.1", r"layer\1_\2/downsample_bn"),
    (r"fc", "head"),
)
_HF_RULES: Sequence[Tuple[str, _Target]] = (
    (r"embedder\.embedder\.convolution", "conv1"),
    (r"embedder\.embedder\.normalization", "bn1"),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution", lambda m: _stage(m, "downsample_conv")),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization", lambda m: _stage(m, "downsample_bn")),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution",
     lambda m: _stage(m, f"conv{int(m.group(3)) + 1}")),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization",
     lambda m: _stage(m, f"bn{int(m.group(3)) + 1}")),
    (r"classifier\.1", "head"),
)
_LEAVES = r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"


def _convert_leaf(module: str, leaf: str, w: np.ndarray) -> Tuple[str, np.ndarray]:
  """(collection/module/leaf path, value) of one torch tensor; an empty path drops it."""
  kind = module.rsplit("/", 1)[-1]
  if leaf == "num_batches_tracked":  # only torch's cumulative-average mode (momentum=None) reads it
    return "", w
  if leaf in ("running_mean", "running_var"):
    return f"batch_stats/{module}/{'mean' if leaf == 'running_mean' else 'var'}", w
  if leaf == "bias":
    return f"params/{module}/bias", w
  if "conv" in kind:
    return f"params/{module}/kernel", w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if kind == "head":
    return f"params/{module}/kernel", w.T  # Linear (out, in) -> Dense (in, out)
  return f"params/{module}/scale", w  # a BatchNorm's weight


def detect_source(keys) -> str:
  """'hf' when the keys are transformers' (an 'embedder.' key), else 'torchvision'."""
  return "hf" if any("embedder." in k for k in keys) else "torchvision"


def load_resnet_state_dict(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]], *, source: str = "auto",
                           prefix: str = "") -> Dict[str, Any]:
  """Converts a PyTorch ResNet state dict to ResNet variables.

  Args:
    path_or_dict: a state dict, or a `.safetensors`, `.bin`, `.pth` or `.pt` file holding one.
    source: 'torchvision' (also timm's names), 'hf' (transformers) or 'auto' (detect_source).
    prefix: a key prefix to strip first (e.g. 'backbone.'); keys without it are refused.

  Returns:
    {'params': nested dict, 'batch_stats': nested dict} of float32 numpy arrays, in ftcal_jax's ResNet names
    (conv kernels HWIO); feed it to `load.restore_variables`.

  Raises:
    ValueError naming every key that maps to nothing, with its shape.
  """
  sd = weights.read_state_dict(path_or_dict)
  if all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  if prefix:
    sd = {k[len(prefix):] if k.startswith(prefix) else "!" + k: v for k, v in sd.items()}
  if source == "auto":
    source = detect_source(sd)
  if source not in ("torchvision", "hf"):
    raise ValueError(f"source must be 'torchvision', 'hf' or 'auto', got {source!r}.")
  rules = _TORCHVISION_RULES if source == "torchvision" else _HF_RULES
  flat: Dict[str, np.ndarray] = {}
  unknown = []
  for key, w in sd.items():
    k = key[len("resnet."):] if source == "hf" and key.startswith("resnet.") else key
    for pattern, target in rules:
      m = re.fullmatch(pattern + _LEAVES, k)
      if m:
        module = target(m) if callable(target) else m.expand(target)
        path, value = _convert_leaf(module, m.group(m.re.groups), w)
        if path:
          flat[path] = np.asarray(value, np.float32)
        break
    else:
      unknown.append(f"{key!r} {tuple(np.shape(w))}")
  if unknown:
    raise ValueError(f"No ResNet mapping for source={source!r} of these state-dict keys: {', '.join(unknown)}. "
                     f"Is this a torchvision/timm/transformers ResNet, and is source (or prefix={prefix!r}) right?")
  tree = weights.unflatten(flat)
  return {"params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}
