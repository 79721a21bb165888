"""The starting parameters (models/pretrained.py): checkpoint look-up in the shipped assets, and the random init."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from ftcal_jax.models import get_model
from ftcal_jax.models import pretrained


def test_resolve_checkpoint(tmp_path):
  assert pretrained.resolve_checkpoint("") == ""
  path = tmp_path / "mine.npz"
  path.write_bytes(b"")
  assert pretrained.resolve_checkpoint(str(path)) == str(path)
  shipped = pretrained.resolve_checkpoint("glyphs_vit8_pretrained.npz")
  assert shipped == os.path.join(pretrained.ASSETS_DIR, "glyphs_vit8_pretrained.npz") and os.path.exists(shipped)
  with pytest.raises(ValueError, match="pretrain_glyphs.py"):
    pretrained.resolve_checkpoint("glyphs_missing.npz")
  with pytest.raises(ValueError, match="never downloads weights"):
    pretrained.resolve_checkpoint("ViT-B_32.npz")


def test_init_params_without_a_checkpoint_is_a_seeded_random_init():
  config = ml_collections.ConfigDict(dict(init_checkpoint="", init_head="keep", seed=3))
  model = get_model("ViT-testing", 5)
  lines = []
  a = pretrained.init_params(config, model, (32, 32, 1), lines.append)
  b = pretrained.init_params(config, model, (32, 32, 1), lines.append)
  assert lines == ["No init_checkpoint: training from a random initialisation"] * 2
  assert a["head"]["kernel"].shape[-1] == 5
  jax.tree.map(np.testing.assert_array_equal, a, b)
