"""Model registry: ViT variants ("ViT-B/16", "ViT-glyphs/8", ...), ResNets ("ResNet-50") and CLIP image towers
("CLIP-ViT-B/32"), by name. `load_pretrained` builds one and loads a checkpoint into it.
"""

from typing import Any, Dict

from ftcal_jax.models.clip import CLIPVisionTransformer
from ftcal_jax.models.resnet import ResNet
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

# torchvision's depths; the same code builds all four (basic blocks for 18/34, bottlenecks for 50/101).
RESNET_CONFIGS: Dict[str, Dict[str, Any]] = {
    "ResNet-18": dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    "ResNet-34": dict(stage_sizes=(3, 4, 6, 3), block="basic"),
    "ResNet-50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "ResNet-101": dict(stage_sizes=(3, 4, 23, 3), block="bottleneck"),
    "ResNet-testing": dict(stage_sizes=(1, 1, 1, 1), block="bottleneck", width=8),
}
# OpenAI CLIP's image towers (embed_dim is the joint-space width).
CLIP_CONFIGS: Dict[str, Dict[str, Any]] = {
    "CLIP-ViT-B/32": dict(patch_size=32, width=768, num_layers=12, num_heads=12, embed_dim=512),
    "CLIP-ViT-B/16": dict(patch_size=16, width=768, num_layers=12, num_heads=12, embed_dim=512),
    "CLIP-ViT-L/14": dict(patch_size=14, width=1024, num_layers=24, num_heads=16, embed_dim=768),
    "CLIP-testing": dict(patch_size=8, width=32, num_layers=2, num_heads=2, embed_dim=16),
}
_FAMILIES = ((MODEL_CONFIGS, VisionTransformer), (RESNET_CONFIGS, ResNet), (CLIP_CONFIGS, CLIPVisionTransformer))


def get_model(name: str, num_classes: int, **overrides):
  """Returns the named model with a `num_classes` head; `overrides` set any other field of its class.

  ViT names give a VisionTransformer, 'ResNet-*' a ResNet, 'CLIP-ViT-*' a CLIPVisionTransformer.
  """
  for configs, cls in _FAMILIES:
    if name in configs:
      return cls(num_classes=num_classes, **{**configs[name], **overrides})
  raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(list_models())}.")


def list_models():
  return sorted(n for configs, _ in _FAMILIES for n in configs)


# Imported last: load.py uses get_model from this (by then initialised) package.
from ftcal_jax.models.load import load_pretrained  # pylint: disable=g-import-not-at-top,wrong-import-position
