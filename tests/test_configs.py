"""The configs in configs/ load, are locked, and refuse an unknown argument."""

import os

import pytest

from ftcal_jax import recipes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  return recipes.load_file(os.path.join(REPO, "configs", f"{name}.py"))


@pytest.mark.parametrize("name, arg", [("glyphs", None), ("glyphs", "all"), ("glyphs", "runlocal"),
                                       ("glyphs_pretrain", None), ("testing", None)])
def test_configs_load_locked(name, arg):
  config = _load(name).get_config(arg)
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.no_such_field = 1  # A typo in an override must fail, not add a field.


def test_glyphs_arguments():
  module = _load("glyphs")
  assert module.get_config("runlocal").methods == ("finetune",)
  assert "ldifs" in module.get_config("all").methods and "ldifs" not in module.get_config().methods
  with pytest.raises(ValueError, match="Unknown configs/glyphs.py argument 'fast'"):
    module.get_config("fast")
