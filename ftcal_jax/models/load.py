"""One entry point for pre-trained backbones: `model, variables = load_pretrained(name, path, ...)`.

  ResNet-18/34/50/101   torchvision/timm or transformers state dicts (.pth/.pt/.bin/.safetensors)
  CLIP-ViT-B/32, B/16, L/14   OpenAI/open_clip or transformers CLIP state dicts; the head is CLIP's zero-shot head
                        (from a (C, E) text-embedding array, or from class names run through the text tower)
  ViT-*                 vit_jax .npz, or transformers/timm ViT state dicts

and, for every family, the `.npz` that ftcal_jax writes (weights.save_npz of the variables: 'params/...' and, for
a ResNet, 'batch_stats/...'), e.g. the Office-Home source stage's model.

`model.apply(variables, images, train=False)` returns {'logits', 'pre_logits', 'blocks', ...}; images are NHWC
float32 and used as given, with no normalisation inside the model (the config states the input mean and std).
Nothing is downloaded: `path` is a file the user has.
"""

import os
from typing import Any, Dict, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax.models import clip_text
from ftcal_jax.models import clip_weights
from ftcal_jax.models import resnet_weights
from ftcal_jax.models import weights
from ftcal_jax.models import CLIP_CONFIGS, MODEL_CONFIGS, RESNET_CONFIGS, get_model, list_models
from ftcal_jax.models.clip import CLIPVisionTransformer
from ftcal_jax.models.resnet import ResNet

# The text towers paired with each CLIP image tower (OpenAI's); vocabulary and context come from the checkpoint.
CLIP_TEXT_CONFIGS: Dict[str, Dict[str, Any]] = {
    "CLIP-ViT-B/32": dict(width=512, num_layers=12, num_heads=8, embed_dim=512),
    "CLIP-ViT-B/16": dict(width=512, num_layers=12, num_heads=8, embed_dim=512),
    "CLIP-ViT-L/14": dict(width=768, num_layers=12, num_heads=12, embed_dim=768),
    "CLIP-testing": dict(width=32, num_layers=2, num_heads=2, embed_dim=16),
}
OPENAI_LOGIT_SCALE = 100.0  # exp of the trained logit_scale of every OpenAI CLIP (its clamp value)

Head = Union[str, Sequence[int]]


def _shapes(model, image_shape: Sequence[int]):
  """The model's variables as jax.ShapeDtypeStructs for (H, W, C) images (nothing is computed or compiled)."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + tuple(image_shape), jnp.float32))


def _fresh_head(shapes: Dict[str, Any], model) -> Dict[str, Any]:
  """The init values of a new head: every model here starts its head kernel at zero and its bias constant."""
  params = dict(shapes["params"])
  head = params["head"]
  params["head"] = {
      "kernel": np.zeros(head["kernel"].shape, np.float32), "bias": np.full(head["bias"].shape, model.head_bias_init,
                                                                            np.float32)
  }
  return {**shapes, "params": params}


def restore_variables(shapes: Dict[str, Any], loaded: Dict[str, Any], *, head: Head = "keep") -> Dict[str, Any]:
  """Fits loaded 'params' (and 'batch_stats', when the model has them) to the model's variables.

  Args:
    shapes: the model's variables (arrays or jax.eval_shape structs; real arrays for the head when head='new').
    loaded: {'params': ..., 'batch_stats': ...} from a converter.
    head: as weights.restore_into: 'keep', 'new' or a list of class indices of the loaded head.

  Returns:
    variables with the model's structure, shapes and dtypes (numpy arrays).

  Raises:
    ValueError naming every missing or unexpected key and shape mismatch (weights.restore_into).
  """
  out = {"params": weights.restore_into(shapes["params"], loaded["params"], head=head)}
  if "batch_stats" in shapes:
    out["batch_stats"] = weights.restore_into(shapes["batch_stats"], loaded.get("batch_stats", {}))
  return out


def _num_classes(loaded_params, num_classes: Optional[int], head: Head) -> Optional[int]:
  if not isinstance(head, str):
    return len(head)
  if head == "keep":
    if "head" not in loaded_params:
      raise ValueError("head='keep' but the checkpoint has no head: pass head='new' and num_classes.")
    return int(np.shape(loaded_params["head"]["kernel"])[-1])
  if not num_classes:
    raise ValueError("head='new' needs num_classes.")
  return num_classes


def _is_npz(path) -> bool:
  return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".npz")


def _read_resnet(path, source, prefix):
  if _is_npz(path):  # ftcal_jax's own: {'params': ..., 'batch_stats': ...}
    loaded = weights.load_npz(os.fspath(path))
    if "batch_stats" not in loaded:
      raise ValueError(f"{path} holds no 'batch_stats/...' arrays: not a ResNet saved by ftcal_jax.")
    return loaded
  return resnet_weights.load_resnet_state_dict(path, source=source or "auto", prefix=prefix)


def _read_vit(path, num_heads, source):
  if isinstance(path, (str, os.PathLike)):  # npz, safetensors or torch, with errors that name the formats
    return {"params": weights.load_checkpoint_file(path, num_heads=num_heads, source=source)}
  return {"params": weights.load_torch_state_dict(path, num_heads=num_heads, source=source or "hf")}


def _fit(model, loaded, *, head, image_shape):
  """Variables of `model` from converted weights: a fresh head for 'new', a resized CLIP position embedding."""
  shapes = _shapes(model, image_shape)
  params = loaded["params"]
  if "positional_embedding" in params and "positional_embedding" in shapes["params"]:
    want, got = shapes["params"]["positional_embedding"].shape, np.shape(params["positional_embedding"])
    if want != got and want[-1] == got[-1]:  # another image size: resize over the patch grid, as transformers does
      params = {
          **params, "positional_embedding": weights.resize_posemb(params["positional_embedding"][None], want[0],
                                                                  method="bicubic")[0]
      }
  if head == "new":
    shapes = _fresh_head(shapes, model)
  return restore_variables(shapes, {**loaded, "params": params}, head=head)


def fit_checkpoint(model, path, *, head: Head = "keep", image_shape: Sequence[int] = (224, 224, 3),
                   source: Optional[str] = None, prefix: str = "", text_embeddings=None,
                   logit_scale: Optional[float] = None) -> Dict[str, Any]:
  """Loads a checkpoint into an already built model (e.g. one sized to a dataset's classes).

  Args:
    model: a ResNet, CLIPVisionTransformer or VisionTransformer of `get_model`.
    path: the checkpoint (see the module docstring) or a state dict.
    image_shape: (H, W, C) of the inputs (sizes position embeddings).
    head, source, prefix, text_embeddings, logit_scale: as `load_pretrained`. With text_embeddings (CLIP), the
      zero-shot head replaces the checkpoint's; head='keep' keeps it.

  Returns:
    the model's variables ({'params'} and, for a ResNet, {'batch_stats'}), numpy arrays.
  """
  if isinstance(model, ResNet):
    loaded = _read_resnet(path, source, prefix)
  elif isinstance(model, CLIPVisionTransformer):
    clip = _read_clip(path, source)
    loaded = {"params": clip["visual"]}
    if text_embeddings is not None:
      scale = logit_scale or clip.get("logit_scale") or OPENAI_LOGIT_SCALE
      loaded["params"] = {**loaded["params"], "head": clip_text.zero_shot_head(text_embeddings, scale)}
  else:
    loaded = _read_vit(path, model.num_heads, source)
  return _fit(model, loaded, head=head, image_shape=image_shape)


def _read_clip(path, source):
  if _is_npz(path):  # ftcal_jax's own: the image tower's params, with the head it was saved with
    return {"visual": weights.load_npz(os.fspath(path))}
  loaded = clip_weights.load_clip_state_dict(path, source=source or "auto")
  if "visual" not in loaded:
    raise ValueError(f"{path} holds no CLIP image tower (no visual.* / vision_model.* keys).")
  return loaded


def _load(name, path, *, num_classes, head, source, prefix, image_size, dtype):
  """ResNet and ViT: the model sized by the checkpoint's head (or num_classes), and its variables."""
  if name in RESNET_CONFIGS:
    loaded = _read_resnet(path, source, prefix)
  else:
    loaded = _read_vit(path, MODEL_CONFIGS[name]["num_heads"], source)
  model = get_model(name, _num_classes(loaded["params"], num_classes, head), dtype=dtype)
  return model, _fit(model, loaded, head=head, image_shape=(image_size or 224, image_size or 224, 3))


def _text_tower(name: str, text_loaded, eos_token_id: int):
  """The CLIP text tower for image tower `name`, sized by the checkpoint (vocabulary, context), and its params."""
  vocab, width = np.shape(text_loaded["token_embedding"]["embedding"])
  config = {**CLIP_TEXT_CONFIGS[name], "vocab_size": int(vocab), "width": int(width)}
  config["context_length"] = int(np.shape(text_loaded["positional_embedding"])[0])
  model = clip_text.CLIPTextTransformer(eos_token_id=eos_token_id, **config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, config["context_length"]), jnp.int32))
  return model, weights.restore_into(shapes["params"], text_loaded)


def clip_class_embeddings(name: str, loaded: Dict[str, Any], classnames: Sequence[str], vocab_file: str,
                          merges_file: str, templates: Sequence[str] = ("a photo of a {}.",)) -> np.ndarray:
  """(C, E) unit-length class text embeddings from a converted CLIP checkpoint's text tower.

  Args:
    name: the image tower's registry name ('CLIP-ViT-B/32', ...), which fixes the text tower's widths.
    loaded: clip_weights.load_clip_state_dict of a full CLIP checkpoint (with its text tower).
    classnames, templates: prompts template.format(classname), averaged over templates per class.
    vocab_file, merges_file: CLIP's BPE files.
  """
  if "text" not in loaded:
    raise ValueError("classnames need CLIP's text tower, which this checkpoint lacks (an image-tower-only file?). "
                     "Pass a full CLIP checkpoint, or text_embeddings=(C, E) array.")
  if not (vocab_file and merges_file):
    raise ValueError("classnames need CLIP's tokenizer files: pass vocab_file= and merges_file=.")
  model, params = _text_tower(name, loaded["text"], clip_text.eos_token_id(vocab_file, merges_file))
  return clip_text.class_text_embeddings(model, params, classnames, vocab_file, merges_file, templates)


def _zero_shot_head(name, loaded, *, text_embeddings, classnames, templates, vocab_file, merges_file, logit_scale):
  """CLIP's zero-shot head {'kernel' (E, C), 'bias' (C,)}, or None when neither embeddings nor class names are given."""
  scale = logit_scale or loaded.get("logit_scale") or OPENAI_LOGIT_SCALE
  if text_embeddings is not None:
    return clip_text.zero_shot_head(text_embeddings, scale)
  if classnames is None:
    return None
  return clip_text.zero_shot_head(clip_class_embeddings(name, loaded, classnames, vocab_file, merges_file, templates),
                                  scale)


def _load_clip(name, path, *, num_classes, head, source, image_size, dtype, zero_shot):
  loaded = _read_clip(path, source)
  visual = dict(loaded["visual"])
  zs_head = _zero_shot_head(name, loaded, **zero_shot)
  if zs_head is not None:
    visual["head"], head, num_classes = zs_head, "keep", zs_head["bias"].shape[0]
  elif head == "keep" and "head" not in visual and not num_classes:
    num_classes = None  # no head: the logits are the normalised embeddings
  else:
    num_classes = _num_classes(visual, num_classes, head)
  model = get_model(name, num_classes, dtype=dtype)
  return model, _fit(model, {"params": visual}, head=head, image_shape=(image_size or 224, image_size or 224, 3))


def load_pretrained(name: str, path, *, num_classes: Optional[int] = None, head: Head = "keep",
                    image_size: Optional[int] = None, source: Optional[str] = None, prefix: str = "",
                    text_embeddings=None, classnames: Optional[Sequence[str]] = None,
                    templates: Sequence[str] = ("a photo of a {}.",), vocab_file: Optional[str] = None,
                    merges_file: Optional[str] = None, logit_scale: Optional[float] = None, dtype=jnp.float32):
  """Builds the named model and loads a checkpoint file (or state dict) into it.

  Args:
    name: a registry name: 'ResNet-50' (and 18/34/101), 'CLIP-ViT-B/32' (and B/16, L/14), 'ViT-B/16', ...
    path: the checkpoint (see the module docstring), or a state dict.
    num_classes: head size when head='new'.
    head: 'keep' the checkpoint's head (ImageNet-1k's 1000 classes); 'new' a fresh zero head of num_classes;
      or a list of the checkpoint head's class indices to keep (e.g. ImageNet-R's 200).
    image_size: input side for ViT/CLIP position embeddings (default 224; resized from the checkpoint's grid).
    source: the naming, per family: 'torchvision'/'hf' (ResNet), 'openai'/'hf' (CLIP), 'hf'/'timm' (ViT state
      dicts); None detects it (ViT: 'hf').
    prefix: ResNet only: a key prefix to strip (e.g. 'backbone.').
    text_embeddings: CLIP: a (C, E) array (or .npy/.npz path) of class text embeddings; gives the zero-shot head.
    classnames, templates, vocab_file, merges_file: CLIP: build the zero-shot head by running the prompts
      template.format(classname) through the checkpoint's text tower, tokenised with these BPE files.
    logit_scale: CLIP's logit multiplier (default: the checkpoint's exp(logit_scale), else 100).
    dtype: compute dtype of the model (parameters stay float32).

  Returns:
    (model, variables): `model.apply(variables, images (B, H, W, 3), train=False)` returns a dict with 'logits'
    (B, C), 'pre_logits' (B, D) and 'blocks'. ResNet variables also hold 'batch_stats'.
  """
  if name in RESNET_CONFIGS or name in MODEL_CONFIGS:
    return _load(name, path, num_classes=num_classes, head=head, source=source, prefix=prefix, image_size=image_size,
                 dtype=dtype)
  if name in CLIP_CONFIGS:
    zero_shot = dict(text_embeddings=text_embeddings, classnames=classnames, templates=templates, vocab_file=vocab_file,
                     merges_file=merges_file, logit_scale=logit_scale)
    return _load_clip(name, path, num_classes=num_classes, head=head, source=source, image_size=image_size, dtype=dtype,
                      zero_shot=zero_shot)
  raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(list_models())}.")
