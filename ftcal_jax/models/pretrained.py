"""The starting parameters of a run: a random init, then the configured checkpoint with its head policy.

`resolve_checkpoint` finds the checkpoint file (a bare name falls back on the ones shipped in ftcal_jax/assets);
`init_params` builds the parameter pytree from it. Nothing is ever downloaded.
"""

import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from ftcal_jax.models import weights

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
                   "to an existing .npz.")


def init_params(config: Any, model: Any, image_shape: Sequence[int], progress: Callable[[str], None]) -> Any:
  """Random init, then the configured checkpoint with its head policy.

  Args:
    config: the run config; reads init_checkpoint, init_head and seed.
    model: the Flax ViT.
    image_shape: (H, W, ch) of one input image.
    progress: prints one line (e.g. a `progress.Progress`).

  Returns:
    The model's params pytree of jax arrays (head (D, C) as the head policy leaves it).
  """
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
