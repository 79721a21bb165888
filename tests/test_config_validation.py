"""Config validation: every bad number is refused before anything is built, naming field, value and range."""

import glob
import os

import pytest

from ftcal_jax import config_validation
from ftcal_jax import recipes

import config_overrides  # pylint: disable=g-bad-import-order  (tests/config_overrides.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  return config_overrides.load("glyphs", **overrides)


def _errors(config, num_classes=47):
  with pytest.raises(ValueError, match="Invalid config") as info:
    config_validation.validate_config(config, num_classes=num_classes)
  return str(info.value)


# Each case of issue 10 (item 4), with the words its message must hold: field, value, range.
@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"num_epochs": -1.0}, "num_epochs = -1.0: must be a number >= 0"),
        ({"num_steps": -5}, "num_steps = -5: must be an integer >= 0"),
        ({"num_epochs": 0.0, "num_steps": 0}, "num_steps = 0: and num_epochs = 0.0: set one of them > 0"),
        ({"optimizer.lr": -0.01}, "optimizer.lr = -0.01: must be a number > 0"),
        ({"ldifs.optimizer.lr": 0.0}, "ldifs.optimizer.lr = 0.0: must be a number > 0"),
        ({"batch_size": 0}, "batch_size = 0: must be an integer >= 1"),
        ({"eval_batch_size": 0}, "eval_batch_size = 0: must be an integer >= 1"),
        ({"log_every_steps": 0}, "log_every_steps = 0: must be an integer >= 1"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps = 0: must be an integer >= 1"),
        ({"pcv.num_splits": 0}, "pcv.num_splits = 0: must be an integer >= 1"),
        ({"pcv.holdout_fraction": 1.0}, "pcv.holdout_fraction = 1.0: must be a number in (0, 1)"),
        ({"pcv.holdout_fraction": 0.0}, "pcv.holdout_fraction = 0.0: must be a number in (0, 1)"),
        ({"class_split.num_seen": 1}, "class_split.num_seen = 1.0: gives |S| = 1; ALG (methods finetune, linear_probe) "
         "and PCV (pcv.enabled) need |S| >= 2"),
        ({"class_split.num_seen": 0.02}, "class_split.num_seen = 0.02: gives |S| = 1"),  # round(0.02 * 47) = 1.
        ({"class_split.num_seen": 47
         }, "class_split.num_seen = 47.0: gives |S| = 47; must be in [1, 46] for 47 classes"),
        ({"class_split.num_seen": 2.5}, "class_split.num_seen = 2.5: must be a count (an integer >= 1) or a fraction"),
        ({"optimizer.name": "lion"
         }, "optimizer.name = 'lion': Unknown optimizer 'lion'. Valid names:"),  # adam is valid now.
        ({"optimizer.schedule": "linear"}, "optimizer.schedule = 'linear': must be one of 'cosine', 'constant'"),
        ({"optimizer.momentum": 1.5}, "optimizer.momentum = 1.5: must be a number in [0, 1)"),
        ({"holistic_transfer.temperature": 0.0}, "holistic_transfer.temperature = 0.0: must be a number > 0"),
        ({"model.dtype": "float8"}, "model.dtype = 'float8': must be one of"),
        ({"init_head": "drop"}, "init_head = 'drop': must be 'keep', 'new' or a list of class indices"),
        ({"methods": ()}, "methods = (): must name at least one method"),
    ])
def test_each_bad_value_is_named_with_its_range(overrides, expected):
  assert expected in _errors(_config(**overrides))


def test_every_problem_is_listed_at_once():
  message = _errors(_config(**{"num_epochs": -1.0, "batch_size": 0, "optimizer.lr": -0.01}))
  assert "num_epochs = -1.0" in message and "batch_size = 0" in message and "optimizer.lr = -0.01" in message


def test_one_seen_class_is_fine_when_nothing_needs_two():
  config_validation.validate_config(
      _config(**{"class_split.num_seen": 1, "methods": ("oracle",), "pcv.enabled": False}), num_classes=47)
  # Only PCV needs it: the message names PCV alone.
  message = _errors(_config(**{"class_split.num_seen": 1, "methods": ("oracle",)}))
  assert "gives |S| = 1; PCV (pcv.enabled) need |S| >= 2" in message and "ALG" not in message


def test_pcv_num_splits_is_only_checked_when_pcv_runs():
  config_validation.validate_config(_config(**{"pcv.num_splits": 0, "pcv.enabled": False}), num_classes=47)


def test_an_explicit_split_with_one_seen_class_is_refused():
  config = _config(**{"class_split.kind": "explicit"})
  with config.unlocked():
    config.class_split.seen = (3,)
  assert "class_split.seen = (3,): gives |S| = 1" in _errors(config)


def test_a_count_given_as_a_float_on_the_command_line_is_a_count():
  # ml_collections types '--config.class_split.num_seen=24' by the default (0.5): it arrives as 24.0.
  config_validation.validate_config(_config(**{"class_split.num_seen": 24.0}), num_classes=47)
  assert config_validation.seen_count(24.0, 47) == 24 and config_validation.seen_count(0.5, 47) == 24
  assert config_validation.seen_count(24, None) == 24 and config_validation.seen_count(0.5, None) is None


def test_without_the_class_count_the_split_checks_that_need_it_wait():
  config_validation.validate_config(_config(**{"class_split.num_seen": 0.02}))  # |S| unknown until the dataset.
  assert "gives |S| = 1" in _errors(_config(**{"class_split.num_seen": 1}), num_classes=None)


def _shipped_configs():
  for path in sorted(
      glob.glob(os.path.join(REPO, "configs", "*.py")) + glob.glob(os.path.join(REPO, "experiments", "*.py"))):
    module = recipes.load_file(path)
    if hasattr(module, "get_config"):
      for arg in (None, "runlocal"):
        try:
          config = module.get_config(arg)
        except ValueError:  # A config without a runlocal argument.
          continue
        yield f"{os.path.relpath(path, REPO)}:{arg}", config


def test_every_shipped_config_is_valid():
  checked = 0
  for name, config in _shipped_configs():
    try:
      config_validation.validate_config(config)
    except ValueError as e:
      raise AssertionError(f"{name}: {e}") from e
    checked += 1
  assert checked >= 10
