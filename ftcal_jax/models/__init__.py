"""Model registry: ViT variants by name ("ViT-B/16", "ViT-glyphs/8", ...)."""

from typing import Any, Dict

from ftcal_jax.models.vit import VisionTransformer

# name -> (hidden_size, num_layers, num_heads, mlp_dim), the vit_jax/big_vision widths.
_WIDTHS: Dict[str, tuple] = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
}
_PATCHES = (16, 32)

MODEL_CONFIGS: Dict[str, Dict[str, Any]] = {}
for _v, (_d, _l, _h, _m) in _WIDTHS.items():
  for _p in _PATCHES:
    MODEL_CONFIGS[f"ViT-{_v}/{_p}"] = dict(patch_size=(_p, _p), hidden_size=_d, num_layers=_l, num_heads=_h, mlp_dim=_m)
# The offline Glyphs benchmark (32x32 inputs): 312k parameters at patch 8 (17 tokens).
MODEL_CONFIGS["ViT-glyphs/8"] = dict(patch_size=(8, 8), hidden_size=96, num_layers=4, num_heads=3, mlp_dim=192)
MODEL_CONFIGS["ViT-glyphs/4"] = dict(patch_size=(4, 4), hidden_size=96, num_layers=4, num_heads=3, mlp_dim=192)
# For tests: a few thousand parameters, compiles in seconds.
MODEL_CONFIGS["ViT-testing"] = dict(patch_size=(8, 8), hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


def get_model(name: str, num_classes: int, **overrides) -> VisionTransformer:
  """Returns the named ViT with a `num_classes` head; `overrides` set any other VisionTransformer field."""
  if name not in MODEL_CONFIGS:
    raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(sorted(MODEL_CONFIGS))}.")
  return VisionTransformer(num_classes=num_classes, **{**MODEL_CONFIGS[name], **overrides})


def list_models():
  return sorted(MODEL_CONFIGS)
