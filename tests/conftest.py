"""Test set-up: 8 fake CPU devices, so data-parallel code runs as on a pod.

XLA_FLAGS must be set before JAX initialises its backends, so it is set here,
at conftest import time, before any test module imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The tests never touch the network: fail loudly if anything tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """The 'small' Glyphs build (a few seconds), made once and shared by every test that trains on it."""
  from ftcal_jax.datasets import glyphs  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("tfds_small")
  for split in glyphs.SPLITS:
    glyphs.load_glyphs_arrays(split, config="small", data_dir=str(path))
  return path
