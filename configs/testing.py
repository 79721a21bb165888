r"""A tiny end-to-end job for tests: ViT-testing on the 'small' Glyphs build, a handful of steps.

  python -m ftcal_jax.main --config configs/testing.py --workdir /tmp/ftcal_testing \
      --config.dataset.data_dir=/tmp/tfds_small
"""

from ftcal_jax import recipes


def get_config(arg=None):
  """The demo config shrunk to seconds; takes no argument (any is refused, as in every config)."""
  recipes.parse_arg(arg, config_name="configs/testing.py")
  config = recipes.load("glyphs", __file__).get_config()
  config.unlock()
  config.dataset.config = "small"  # A few fonts; builds in seconds.
  config.model.name = "ViT-testing"  # A few thousand parameters.
  config.init_checkpoint = ""  # Random init: tests check mechanics, not findings.
  config.methods = ("finetune",)
  config.num_epochs = 0.0
  config.num_steps = 8  # Fixed short runs.
  config.batch_size = 16
  config.eval_batch_size = 64
  config.pcv.num_splits = 1
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  config.write_figures = False  # The report module draws figures in its own tests.
  config.heartbeat_s = 30.0
  config.lock()
  return config
