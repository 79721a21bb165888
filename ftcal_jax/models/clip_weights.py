"""CLIP weights from PyTorch state dicts into `clip.CLIPVisionTransformer` and `clip_text.CLIPTextTransformer`.

Accepted names:

  OpenAI CLIP / open_clip   visual.conv1.weight, visual.class_embedding, visual.positional_embedding, visual.ln_pre,
                            visual.transformer.resblocks.0.{ln_1,attn.in_proj_weight,attn.out_proj,ln_2,mlp.c_fc,
                            mlp.c_proj}, visual.ln_post, visual.proj; token_embedding, positional_embedding,
                            transformer.resblocks.*, ln_final, text_projection; logit_scale
  transformers              vision_model.embeddings.{class_embedding,patch_embedding,position_embedding},
                            vision_model.pre_layrnorm, vision_model.encoder.layers.0.{layer_norm1,self_attn.q_proj,
                            ...,mlp.fc1,mlp.fc2,layer_norm2}, vision_model.post_layernorm, visual_projection;
                            text_model.*, text_projection; logit_scale (`CLIPModel`,
                            `CLIPVisionModelWithProjection`, `CLIPTextModelWithProjection`)

from a dict, `.bin`/`.pth`/`.pt` (torch.load(weights_only=True); OpenAI's TorchScript `.pt` archives too) or
`.safetensors`.
"""

import os
import re
import zipfile
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import numpy as np

from ftcal_jax.models import weights

# (torch module regex, Flax module path, kind). Kinds: 'ln' LayerNorm; 'linear' torch Linear (out, in) -> Dense;
# 'proj' a raw (in, out) matrix; 'conv' the patch conv; 'embed' an Embedding table; 'raw' an array as it is.
_Rule = Tuple[str, str, str]
_OPENAI_BLOCK: Sequence[_Rule] = (
    (r"ln_1", "ln_1", "ln"),
    (r"ln_2", "ln_2", "ln"),
    (r"attn\.out_proj", "attn/out_proj", "linear"),
    (r"mlp\.c_fc", "mlp/c_fc", "linear"),
    (r"mlp\.c_proj", "mlp/c_proj", "linear"),
)
_HF_BLOCK: Sequence[_Rule] = (
    (r"layer_norm1", "ln_1", "ln"),
    (r"layer_norm2", "ln_2", "ln"),
    (r"self_attn\.(q_proj|k_proj|v_proj|out_proj)", r"attn/\2", "linear"),
    (r"mlp\.fc1", "mlp/c_fc", "linear"),
    (r"mlp\.fc2", "mlp/c_proj", "linear"),
)


def _rules(block_prefix: str, block_rules: Sequence[_Rule], tower: str) -> Sequence[_Rule]:
  return tuple((block_prefix + r"\.(\d+)\." + pattern, f"{tower}/resblocks_\\1/" + target, kind)
               for pattern, target, kind in block_rules)


_OPENAI_RULES: Sequence[_Rule] = (
    (r"visual\.conv1", "visual/conv1", "conv"),
    (r"visual\.class_embedding", "visual/class_embedding", "raw"),
    (r"visual\.positional_embedding", "visual/positional_embedding", "raw"),
    (r"visual\.ln_pre", "visual/ln_pre", "ln"),
    (r"visual\.ln_post", "visual/ln_post", "ln"),
    (r"visual\.proj", "visual/proj/kernel", "proj"),
    (r"token_embedding", "text/token_embedding", "embed"),
    (r"positional_embedding", "text/positional_embedding", "raw"),
    (r"ln_final", "text/ln_final", "ln"),
    (r"text_projection", "text/text_projection/kernel", "proj"),
    (r"logit_scale", "logit_scale", "raw"),
) + _rules(r"visual\.transformer\.resblocks", _OPENAI_BLOCK, "visual") + _rules(r"transformer\.resblocks",
                                                                                _OPENAI_BLOCK, "text")
_HF_RULES: Sequence[_Rule] = (
    (r"vision_model\.embeddings\.patch_embedding", "visual/conv1", "conv"),
    (r"vision_model\.embeddings\.class_embedding", "visual/class_embedding", "raw"),
    (r"vision_model\.embeddings\.position_embedding", "visual/positional_embedding", "embed_raw"),
    (r"vision_model\.pre_layrnorm", "visual/ln_pre", "ln"),
    (r"vision_model\.post_layernorm", "visual/ln_post", "ln"),
    (r"visual_projection", "visual/proj", "linear"),
    (r"text_model\.embeddings\.token_embedding", "text/token_embedding", "embed"),
    (r"text_model\.embeddings\.position_embedding", "text/positional_embedding", "embed_raw"),
    (r"text_model\.final_layer_norm", "text/ln_final", "ln"),
    (r"text_projection", "text/text_projection", "linear"),
    (r"logit_scale", "logit_scale", "raw"),
) + _rules(r"vision_model\.encoder\.layers", _HF_BLOCK, "visual") + _rules(r"text_model\.encoder\.layers", _HF_BLOCK,
                                                                           "text")
_IGNORED = re.compile(r"(.*\.)?(position_ids|attn_mask)|input_resolution|context_length|vocab_size")
_IN_PROJ = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")


def _leaf(kind: str, name: str, w: np.ndarray) -> Tuple[str, np.ndarray]:
  """(leaf suffix, value) for a torch tensor; name is 'weight', 'bias' or '' (a bare parameter)."""
  if kind in ("raw", "proj", "embed_raw"):  # embed_raw: an Embedding used as an additive (T, D) table
    return "", w
  if name == "bias":
    return "/bias", w
  if kind == "ln":
    return "/scale", w
  if kind == "embed":
    return "/embedding", w
  if kind == "conv":
    return "/kernel", w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  return "/kernel", w.T  # torch Linear (out, in) -> Dense (in, out)


def _read(path_or_dict) -> Dict[str, np.ndarray]:
  """weights.read_state_dict, plus OpenAI's TorchScript archives (their `.pt` files are jit-saved models)."""
  if isinstance(path_or_dict, Mapping) or str(path_or_dict).endswith(".safetensors"):
    return weights.read_state_dict(path_or_dict)
  path = os.fspath(path_or_dict)
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      jit = any(n.endswith("/constants.pkl") for n in z.namelist())
    if jit:  # a TorchScript archive holds code, not a state dict; torch.jit.load runs no Python pickle
      import torch  # pylint: disable=g-import-not-at-top
      return weights.read_state_dict(torch.jit.load(path, map_location="cpu").state_dict())
  return weights.read_state_dict(path)


def load_clip_state_dict(path_or_dict: Union[str, os.PathLike, Mapping[str, Any]], *,
                         source: str = "auto") -> Dict[str, Any]:
  """Converts a PyTorch CLIP state dict (either tower, or both) to the Flax trees.

  Args:
    path_or_dict: a state dict, or a file holding one (see the module docstring).
    source: 'openai' (also open_clip), 'hf' (transformers) or 'auto' (hf when a key starts with 'vision_model.',
      'text_model.' or 'visual_projection').

  Returns:
    {'visual': image-tower params, 'text': text-tower params, 'logit_scale': float, the multiplier exp(stored)},
    each tower present only if the checkpoint holds it; float32 numpy arrays.

  Raises:
    ValueError naming every key that maps to nothing, with its shape.
  """
  sd = _read(path_or_dict)
  if all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  if source == "auto":
    source = "hf" if any(k.startswith(("vision_model.", "text_model.", "visual_projection")) for k in sd) else "openai"
  if source not in ("openai", "hf"):
    raise ValueError(f"source must be 'openai', 'hf' or 'auto', got {source!r}.")
  rules = _OPENAI_RULES if source == "openai" else _HF_RULES
  flat: Dict[str, np.ndarray] = {}
  unknown = []
  for key, w in sd.items():
    k = key[len("clip."):] if key.startswith("clip.") else key
    if _IGNORED.fullmatch(k):
      continue
    m = _IN_PROJ.fullmatch(k) if source == "openai" else None
    if m:  # torch's nn.MultiheadAttention: rows [q; k; v] of in_proj
      tower, leaf = ("visual" if m.group(1) else "text"), ("kernel" if m.group(3) == "weight" else "bias")
      for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(w, 3, axis=0)):
        flat[f"{tower}/resblocks_{m.group(2)}/attn/{name}/{leaf}"] = part.T if leaf == "kernel" else part
      continue
    for pattern, target, kind in rules:
      m = re.fullmatch(pattern + (r"(?:\.(weight|bias))?"), k)
      if m:
        suffix, value = _leaf(kind, m.group(m.re.groups) or "", w)
        flat[m.expand(target) + suffix] = np.asarray(value, np.float32)
        break
    else:
      unknown.append(f"{key!r} {tuple(np.shape(w))}")
  if unknown:
    raise ValueError(f"No CLIP mapping for source={source!r} of these state-dict keys: {', '.join(unknown)}. "
                     "Is this a CLIP ViT (not a ResNet CLIP), and is source right?")
  tree = weights.unflatten({k: v for k, v in flat.items() if k != "logit_scale"})
  if "logit_scale" in flat:
    tree["logit_scale"] = float(np.exp(flat["logit_scale"]))
  return tree
