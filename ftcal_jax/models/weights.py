"""ViT weights in and out: vit_jax/big_vision `.npz`, Hugging Face and timm PyTorch state dicts.

Every loader returns a nested dict in the vit_jax naming of `ftcal_jax.models.vit` (no `{'params': ...}` wrapper).
`restore_into` then fits it to a freshly initialised model: it resizes the position embedding to the model's
patch grid, keeps, restricts or replaces the head, and names every key that does not fit.

Typical use:

  model = get_model("ViT-B/16", num_classes=200)
  init = model.init(rng, jnp.zeros((1, 224, 224, 3)))["params"]
  loaded = load_npz("ViT-B_16-augreg.npz")                     # or load_torch_state_dict(..., num_heads=12)
  params = restore_into(init, loaded, head=IMAGENET_R_INDICES)  # keep the 200 ImageNet-R rows of the head
"""

import math
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np

from ftcal_jax import atomic_write

Params = Dict[str, Any]
_POSEMB = "Transformer/posembed_input/pos_embedding"


def flatten(params: Mapping[str, Any]) -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}, the key format of vit_jax `.npz` files."""
  flat = {}
  for k, v in params.items():
    if isinstance(v, Mapping):
      flat.update({f"{k}/{kk}": vv for kk, vv in flatten(v).items()})
    else:
      flat[k] = v
  return flat


def unflatten(flat: Mapping[str, Any]) -> Params:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree: Params = {}
  for key, v in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def save_npz(params: Mapping[str, Any], path: str) -> None:
  """Writes `params` as a vit_jax-style flat npz ('Transformer/encoderblock_0/LayerNorm_0/scale', ...)."""
  flat = {k: np.asarray(jax.device_get(v)) for k, v in flatten(params).items()}
  atomic_write.save_npz(path, **flat)  # Whole or not at all; under the name the caller chose.


def load_npz(path: str, *, prefix: str = "") -> Params:
  """Reads a vit_jax/big_vision `.npz` checkpoint into a nested dict.

  Args:
    path: the `.npz` file. Pickled objects are refused (allow_pickle=False): a checkpoint is only arrays.
    prefix: keep only keys under this '/'-separated prefix and strip it, e.g. 'params/img/' for a big_vision
      two-tower checkpoint. A leading 'params/' common to all keys is stripped automatically.

  Returns:
    nested dict of numpy arrays, e.g. params['Transformer']['encoderblock_0']['LayerNorm_0']['scale'].
  """
  with np.load(path, allow_pickle=False) as z:
    flat = {k: z[k] for k in z.files}
  if prefix:
    prefix = prefix.rstrip("/") + "/"
    flat = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    if not flat:
      raise ValueError(f"No key of {path} starts with prefix {prefix!r}.")
  elif flat and all(k.startswith("params/") for k in flat):
    flat = {k[len("params/"):]: v for k, v in flat.items()}
  return unflatten(flat)


# --- PyTorch state dicts --------------------------------------------------------------------------------------------


# Converters from a torch tensor (as numpy) to the Flax leaf. `h` is the number of attention heads.
def _dense(w, h):  # torch Linear (out, in) -> Flax Dense (in, out)
  return w.T


def _attn_in(w, h):  # q/k/v: (H*hd, D) -> (D, H, hd); bias (H*hd,) -> (H, hd)
  return w.T.reshape(w.shape[1], h, -1) if w.ndim == 2 else w.reshape(h, -1)


def _attn_out(w, h):  # out: (D, H*hd) -> (H, hd, D); bias (D,) unchanged
  return w.T.reshape(h, -1, w.shape[0]) if w.ndim == 2 else w


def _conv(w, h):  # torch OIHW -> Flax HWIO
  return w.transpose(2, 3, 1, 0) if w.ndim == 4 else w


def _same(w, h):
  return w


# (torch module regex, Flax module, converter). The leaf names map weight->kernel (scale for LayerNorm), bias->bias.
_Rule = Tuple[str, str, Callable]
_BLOCK = r"Transformer/encoderblock_\1"
_HF_RULES: Sequence[_Rule] = (
    (r"embeddings\.patch_embeddings\.projection", "embedding", _conv),
    # transformers<5 on-disk names (all hub checkpoints) and the transformers>=5 in-memory names.
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_before", _BLOCK + "/LayerNorm_0", _same),
    (r"(?:encoder\.layer|layers)\.(\d+)\.layernorm_after", _BLOCK + "/LayerNorm_2", _same),
    (r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.query|q_proj)",
     _BLOCK + "/MultiHeadDotProductAttention_1/query", _attn_in),
    (r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.key|k_proj)",
     _BLOCK + "/MultiHeadDotProductAttention_1/key", _attn_in),
    (r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.value|v_proj)",
     _BLOCK + "/MultiHeadDotProductAttention_1/value", _attn_in),
    (r"(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:output\.dense|o_proj)",
     _BLOCK + "/MultiHeadDotProductAttention_1/out", _attn_out),
    (r"(?:encoder\.layer|layers)\.(\d+)\.(?:intermediate\.dense|mlp\.fc1)", _BLOCK + "/MlpBlock_3/Dense_0", _dense),
    (r"(?:encoder\.layer|layers)\.(\d+)\.(?:output\.dense|mlp\.fc2)", _BLOCK + "/MlpBlock_3/Dense_1", _dense),
    (r"layernorm", "Transformer/encoder_norm", _same),
    # ViTModel's pooler (Dense + tanh on the class token) is vit_jax's representation layer.
    (r"pooler\.dense", "pre_logits", _dense),
    (r"classifier", "head", _dense),
)
_HF_PARAMS = {"embeddings.cls_token": "cls", "embeddings.position_embeddings": _POSEMB}

_TIMM_RULES: Sequence[_Rule] = (
    (r"patch_embed\.proj", "embedding", _conv),
    (r"blocks\.(\d+)\.norm1", _BLOCK + "/LayerNorm_0", _same),
    (r"blocks\.(\d+)\.norm2", _BLOCK + "/LayerNorm_2", _same),
    (r"blocks\.(\d+)\.attn\.proj", _BLOCK + "/MultiHeadDotProductAttention_1/out", _attn_out),
    (r"blocks\.(\d+)\.mlp\.fc1", _BLOCK + "/MlpBlock_3/Dense_0", _dense),
    (r"blocks\.(\d+)\.mlp\.fc2", _BLOCK + "/MlpBlock_3/Dense_1", _dense),
    (r"norm", "Transformer/encoder_norm", _same),
    (r"pre_logits\.fc", "pre_logits", _dense),
    (r"head", "head", _dense),
)
_TIMM_PARAMS = {"cls_token": "cls", "pos_embed": _POSEMB}
_TIMM_QKV = re.compile(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)")


def _to_numpy(t) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch.Tensor; bf16/fp16 go through float32, which numpy holds exactly.
    t = t.detach().cpu()
    if not t.is_floating_point():
      return t.numpy()
    return t.float().numpy()
  return np.asarray(t)


def read_state_dict(path_or_dict) -> Dict[str, np.ndarray]:
  """A state dict from a dict, a `.safetensors` file, or a `.bin`/`.pth`/`.pt` file (torch, weights only).

  Returns:
    {key: numpy array}; torch bf16/fp16 tensors become float32; a {"state_dict": ...} or {"model": ...} wrapper
    is removed.
  """
  if isinstance(path_or_dict, Mapping):
    sd = path_or_dict
  elif str(path_or_dict).endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    sd = load_file(os.fspath(path_or_dict))
  else:
    # torch is only a test dependency: import it only for this format. weights_only refuses arbitrary pickles.
    import torch  # pylint: disable=g-import-not-at-top
    sd = torch.load(os.fspath(path_or_dict), map_location="cpu", weights_only=True)
  # Training checkpoints wrap the weights: {'state_dict': {...}} or {'model': {...}}.
  for wrapper in ("state_dict", "model"):
    if isinstance(sd.get(wrapper), Mapping):
      sd = sd[wrapper]
      break
  return {k: _to_numpy(v) for k, v in sd.items()}


def load_torch_state_dict(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]], *, num_heads: int,
                          source: str = "hf") -> Params:
  """Converts a PyTorch ViT state dict to the vit_jax parameter tree.

  Args:
    path_or_dict: a state dict, or a `.safetensors`, `.bin`, `.pth` or `.pt` file holding one.
    num_heads: attention heads of the checkpoint; a state dict does not record the head split, and Flax keeps
      q/k/v kernels as (D, heads, head_dim).
    source: 'hf' for transformers `ViTForImageClassification`/`ViTModel` (both the transformers<5 hub names,
      'vit.encoder.layer.0.attention.attention.query.weight', and the >=5 names, 'vit.layers.0.attention.q_proj
      .weight'), or 'timm' for timm `VisionTransformer` ('blocks.0.attn.qkv.weight', fused q/k/v).

  Returns:
    nested dict of float32 numpy arrays in vit_jax naming; feed it to `restore_into`.
  """
  if source == "hf":
    rules, named, strip = _HF_RULES, _HF_PARAMS, "vit."
  elif source == "timm":
    rules, named, strip = _TIMM_RULES, _TIMM_PARAMS, ""
  else:
    raise ValueError(f"source must be 'hf' or 'timm', got {source!r}.")
  sd = read_state_dict(path_or_dict)
  flat: Dict[str, np.ndarray] = {}
  unknown = []
  for key, w in sd.items():
    k = key[len(strip):] if strip and key.startswith(strip) else key
    if k in named:
      flat[named[k]] = w
      continue
    m = _TIMM_QKV.fullmatch(k) if source == "timm" else None
    if m:  # timm's fused qkv: rows are [q; k; v], each (H*hd) rows.
      leaf = "kernel" if m.group(2) == "weight" else "bias"
      for name, part in zip(("query", "key", "value"), np.split(w, 3, axis=0)):
        flat[f"Transformer/encoderblock_{m.group(1)}/MultiHeadDotProductAttention_1/{name}/{leaf}"] = (_attn_in(
            part, num_heads))
      continue
    for pattern, target, convert in rules:
      m = re.fullmatch(pattern + r"\.(weight|bias)", k)
      if m:
        module = m.expand(target)
        is_norm = w.ndim == 1 and convert is _same
        leaf = "bias" if m.group(m.re.groups) == "bias" else ("scale" if is_norm else "kernel")
        flat[f"{module}/{leaf}"] = convert(w, num_heads)
        break
    else:
      unknown.append(f"{key!r} {tuple(w.shape)}")
  if unknown:
    hint = (" timm 'fc_norm' (LayerNorm after average pooling) has no vit_jax counterpart." if any(
        "fc_norm" in u for u in unknown) else "")
    raise ValueError(f"No mapping for source={source!r} of these state-dict keys: {', '.join(unknown)}. "
                     f"Is this a plain ViT with a class token, and is source right?{hint}")
  return unflatten({k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in flat.items()})


# --- fitting loaded weights to a model --------------------------------------------------------------------------------


def resize_posemb(posemb: np.ndarray, num_tokens: int, *, num_prefix: int = 1, grid: Optional[Tuple[int, int]] = None,
                  method: str = "bilinear") -> np.ndarray:
  """Resizes a (1, T, D) position embedding to (1, num_tokens, D) by interpolating over the patch grid.

  The first `num_prefix` rows (the class token) are kept as they are. The old grid must be square (all released
  checkpoints are); the new grid is `grid`, or the square root of `num_tokens - num_prefix`. Uses half-pixel
  centres without antialiasing, like torch's interpolate(align_corners=False).
  """
  prefix, old = posemb[:, :num_prefix], posemb[0, num_prefix:]
  gs_old = math.isqrt(old.shape[0])
  if gs_old * gs_old != old.shape[0]:
    raise ValueError(f"Checkpoint position embedding has {old.shape[0]} patch tokens, not a square grid; "
                     "resize it yourself.")
  if grid is None:
    n = num_tokens - num_prefix
    gs = math.isqrt(n)
    if gs * gs != n:
      raise ValueError(f"Model has {n} patch tokens, not a square grid: pass posemb_grid=(rows, cols).")
    grid = (gs, gs)
  if grid[0] * grid[1] + num_prefix != num_tokens:
    raise ValueError(f"posemb_grid {grid} + {num_prefix} prefix tokens != model's {num_tokens} tokens.")
  d = old.shape[-1]
  new = jax.image.resize(old.reshape(gs_old, gs_old, d).astype(np.float32), (*grid, d), method=method, antialias=False)
  new = np.asarray(new).reshape(1, grid[0] * grid[1], d)
  return np.concatenate([prefix.astype(np.float32), new], axis=1)


def _shape(x) -> Tuple[int, ...]:
  return tuple(np.shape(x))  # arrays and jax.ShapeDtypeStruct alike


def restore_into(init_params: Mapping[str, Any], loaded_params: Mapping[str, Any], *,
                 head: Union[str, Sequence[int]] = "keep", posemb_method: str = "bilinear",
                 posemb_grid: Optional[Tuple[int, int]] = None) -> Params:
  """Fits loaded weights to a model's parameter tree.

  Args:
    init_params: the model's params (`model.init(...)['params']`, or `jax.eval_shape` of it when head != 'new').
      Shapes and dtypes are taken from it.
    loaded_params: weights from `load_npz` / `load_torch_state_dict`.
    head: 'keep' the loaded head (its shape must match); 'new' takes the head from `init_params` (the loaded one
      may be absent); or a sequence of class indices: keep those rows of the loaded head, in that order (e.g.
      the 200 ImageNet-1k classes of ImageNet-R), which must equal the model's num_classes.
    posemb_method: 'bilinear' or 'bicubic' interpolation when the position embedding's token count differs.
    posemb_grid: (rows, cols) of the model's patch grid when it is not square.

  Returns:
    nested dict with init_params' structure, shapes and dtypes.

  Raises:
    ValueError naming each missing key, unexpected key and shape mismatch, with both shapes.
  """
  if set(init_params) == {"params"}:
    raise ValueError("init_params is a variables dict: pass variables['params'].")
  want = flatten(init_params)
  got = _apply_head_policy(want, dict(flatten(loaded_params)), head)
  if _POSEMB in want and _POSEMB in got and _shape(want[_POSEMB]) != _shape(got[_POSEMB]):
    w_shape, g_shape = _shape(want[_POSEMB]), _shape(got[_POSEMB])
    if w_shape[-1] != g_shape[-1]:
      raise ValueError(f"{_POSEMB}: model shape {w_shape} vs checkpoint shape {g_shape}: widths differ.")
    got[_POSEMB] = resize_posemb(np.asarray(got[_POSEMB]), w_shape[1], num_prefix=1 if "cls" in want else 0,
                                 grid=posemb_grid, method=posemb_method)
  _check_fit(want, got)
  out = {}
  for k, v in got.items():
    if v is want[k]:  # a freshly initialised head: keep the array as it is.
      out[k] = v
    else:
      out[k] = np.asarray(v).astype(want[k].dtype)
  return unflatten(out)


def _apply_head_policy(want: Dict[str, Any], got: Dict[str, Any], head: Union[str, Sequence[int]]) -> Dict[str, Any]:
  """`got` with its head kept, replaced by the model's fresh one ('new'), or restricted to class indices."""
  if isinstance(head, str) and head not in ("keep", "new"):
    raise ValueError(f"head must be 'keep', 'new' or a sequence of class indices, got {head!r}.")
  if head == "new":
    for k in list(got):
      if k.startswith("head/"):
        del got[k]
    for k in (k for k in want if k.startswith("head/")):
      if isinstance(want[k], jax.ShapeDtypeStruct):
        raise ValueError("head='new' needs real initial values in init_params, not jax.eval_shape structs.")
      got[k] = want[k]
  elif not isinstance(head, str):
    idx = np.asarray(head, dtype=np.int64)
    if "head/kernel" not in got:
      raise ValueError("head is a class list, but the checkpoint has no 'head/kernel'.")
    n = got["head/kernel"].shape[-1]
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= n:
      raise ValueError(f"head class indices must be a non-empty 1-D list in [0, {n}), the checkpoint's classes.")
    got["head/kernel"] = np.asarray(got["head/kernel"])[:, idx]
    got["head/bias"] = np.asarray(got["head/bias"])[idx]
  return got


def _check_fit(want: Mapping[str, Any], got: Mapping[str, Any]) -> None:
  """Raises one ValueError naming every missing key, unexpected key and shape mismatch, with both shapes."""
  problems = []
  for k in sorted(set(want) - set(got)):
    problems.append(f"missing key {k!r}: model shape {_shape(want[k])}, checkpoint has none")
  for k in sorted(set(got) - set(want)):
    problems.append(f"unexpected key {k!r}: checkpoint shape {_shape(got[k])}, model has none")
  for k in sorted(set(want) & set(got)):
    if _shape(want[k]) != _shape(got[k]):
      problems.append(f"shape mismatch at {k!r}: model shape {_shape(want[k])} vs checkpoint shape "
                      f"{_shape(got[k])}")
  if problems:
    hint = (" For another number of classes use head='new' or a class list." if any(
        "'head/" in p for p in problems) else "")
    raise ValueError("Checkpoint does not fit the model: " + "; ".join(problems) + "." + hint)


# --- one entry point for init_checkpoint files ------------------------------------------------------------------------

ACCEPTED_FORMATS = ".npz (vit_jax/big_vision), .safetensors, or a PyTorch .bin/.pth/.pt state dict (weights_only)"


def load_checkpoint_file(path: Union[str, os.PathLike], *, num_heads: Optional[int] = None,
                         source: Optional[str] = None) -> Params:
  """Reads an init checkpoint of any supported format into the vit_jax parameter tree.

  The format comes from the suffix: .npz; .safetensors; .bin, .pth or .pt.

  Args:
    path: the checkpoint file.
    num_heads: attention heads of the model; needed for PyTorch formats (their q/k/v are not split by head).
    source: for PyTorch formats, 'hf' or 'timm'; None guesses from the key names.

  Returns:
    nested dict of numpy arrays in vit_jax naming; feed it to `restore_into`.

  Raises:
    FileNotFoundError, ValueError: naming the path and the accepted formats (also for empty or truncated files).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"init checkpoint {path} does not exist. Accepted formats: {ACCEPTED_FORMATS}.")
  size = os.path.getsize(path)
  formats = {".npz": "npz", ".safetensors": "safetensors", ".bin": "torch", ".pth": "torch", ".pt": "torch"}
  fmt = formats.get(os.path.splitext(path)[1].lower())
  if fmt is None:
    suffix = os.path.splitext(path)[1] or "a file without a suffix"
    raise ValueError(f"init checkpoint {path}: ftcal_jax does not read {suffix}. Accepted formats: {ACCEPTED_FORMATS}.")
  if size == 0:
    raise ValueError(f"init checkpoint {path} is empty (0 bytes). Accepted formats: {ACCEPTED_FORMATS}.")
  try:
    if fmt == "npz":
      return load_npz(path)
    sd = read_state_dict(path)
  except Exception as e:  # pylint: disable=broad-except  # numpy, zipfile, safetensors and torch raise many types.
    raise ValueError(
        f"init checkpoint {path} ({size} bytes) cannot be read as {fmt} ({type(e).__name__}: {e}). Is "
        f"the file complete, and in the format its name says? Accepted formats: {ACCEPTED_FORMATS}.") from e
  if num_heads is None:
    raise ValueError(f"init checkpoint {path} is a PyTorch state dict: pass num_heads (the model's attention heads).")
  guess = "timm" if any(_TIMM_QKV.fullmatch(k) for k in sd) else "hf"  # timm fuses q/k/v: blocks.N.attn.qkv.
  return load_torch_state_dict(sd, num_heads=num_heads, source=source or guess)
