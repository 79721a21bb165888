"""experiments/toy_section6.py run small: the absent classes' features move with their nearest fine-tuning class."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "toy_section6.py")


@pytest.fixture(scope="module")
def toy():
  spec = importlib.util.spec_from_file_location("toy_section6", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_absent_features_move_with_their_nearest_seen_class(toy, tmp_path):
  result = toy.run(seed=0, pretrain_steps=200, finetune_steps=100, n_per_class=80)
  mv = result["movement"]
  assert mv["absent"] == list(toy.ABSENT) and all(s in toy.SEEN for s in mv["nearest_seen"])
  # FT on S alone sends U samples to S (the paper's starting point) ...
  assert result["finetune_acc"]["acc_u/y"] < result["pretrained_acc"]["acc_u/y"]
  # ... while each U class's features move like its nearest S class's, well above the all-S baseline.
  assert mv["mean_cos_nearest"] > 0.3
  assert mv["mean_cos_nearest"] > mv["mean_cos_all_seen"] + 0.25
  path = toy.figure(result, str(tmp_path / "toy.png"))
  assert os.path.getsize(path) > 10_000
