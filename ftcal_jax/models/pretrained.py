"""The starting parameters of a run: a random init, then the configured checkpoint with its head policy.

`resolve_checkpoint` finds the checkpoint file (a bare name falls back on the ones shipped in ftcal_jax/assets);
`init_variables` builds the model's variables from it (any checkpoint `models.load.fit_checkpoint` reads: vit_jax and
ftcal_jax .npz, torchvision/timm/transformers ResNets, OpenAI/open_clip/transformers CLIP). Nothing is ever
downloaded.
"""

import os
from typing import Any, Callable, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax import integrity
from ftcal_jax.models import load

# The checkpoints shipped with the package (ftcal_jax/assets).
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


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
                   "to an existing checkpoint file.")


def init_variables(config: Any, model: Any, image_shape: Sequence[int], progress: Callable[[str], None]) -> Dict:
  """Random init, then the configured checkpoint with its head policy.

  Args:
    config: the run config; reads init_checkpoint, init_head, seed and model.text_embeddings (CLIP's zero-shot
      head, "" for none).
    model: the Flax model (ViT, ResNet, CLIP image tower).
    image_shape: (H, W, ch) of one input image.
    progress: prints one line (e.g. a `progress.Progress`).

  Returns:
    The model's variables of jax arrays: {'params': ...} (head (D, C) as the head policy leaves it) and, for a
    model with BatchNorm, {'batch_stats': ...}.
  """
  dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  # One compiled init is much faster than Flax's op-by-op eager init on CPU.
  init = jax.jit(lambda key: dict(model.init(key, dummy)))
  path = resolve_checkpoint(config.init_checkpoint)
  head = config.init_head
  if not path:
    progress("No init_checkpoint: training from a random initialisation")
    return init(jax.random.key(config.seed))
  text = config.get("model", {}).get("text_embeddings") or None
  variables = load.fit_checkpoint(model, path, head=list(head) if not isinstance(head, str) else head,
                                  image_shape=image_shape, text_embeddings=text)
  # Before training: NaN weights would give a NaN loss whose message blames the learning rate.
  integrity.check_finite(variables, path)
  note = ""
  if getattr(model, "head", "linear") == "cosine":  # Its bias is a fixed offset (vit.CosineHead): 0 at the start.
    variables["params"]["head"]["bias"] = np.zeros_like(np.asarray(variables["params"]["head"]["bias"]))
    note = "; cosine head: its offset set to 0"
  progress(f"Loaded {path} (head policy {head!r}{', CLIP zero-shot head from ' + text if text else ''}{note})")
  return jax.tree.map(jnp.asarray, variables)


def init_params(config: Any, model: Any, image_shape: Sequence[int], progress: Callable[[str], None]) -> Any:
  """The params of `init_variables` (models without BatchNorm statistics)."""
  return init_variables(config, model, image_shape, progress)["params"]
