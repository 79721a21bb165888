"""Test configs with dotted-path overrides: `testing(data_dir, **{'pcv.enabled': True})`."""

import os

from ftcal_jax import recipes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, **overrides):
  """configs/<name>.py's config with the overrides."""
  return recipes.override(recipes.load_file(os.path.join(REPO, "configs", f"{name}.py")).get_config(), overrides)


def testing(data_dir, **overrides):
  """configs/testing.py on the 'small' Glyphs build in data_dir, without PCV unless overridden."""
  return load("testing", **{"dataset.data_dir": str(data_dir), "pcv.enabled": False, **overrides})
