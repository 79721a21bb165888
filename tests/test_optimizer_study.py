"""The optimiser study's driver on a 1x1 grid of the testing config, and its heatmap."""

import json
import os

import pytest

from ftcal_jax import recipes

pytest.importorskip("ftcal_jax.train")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = recipes.load_file(os.path.join(REPO, "experiments", "optimizer_study.py"))


def test_point_config_takes_the_arm_and_the_grid_values():
  config = STUDY.point_config("rmsprop", 3e-4, 1e-5, base="glyphs", epochs=2.0)
  assert (config.optimizer.name, config.optimizer.lr, config.optimizer.weight_decay) == ("rmsprop", 3e-4, 1e-5)
  assert config.num_epochs == 2.0 and not config.pcv.enabled and config.methods == ("finetune",)
  assert STUDY.point_config("adam", 1e-4, 0.0, base="glyphs", epochs=0).optimizer.name == "adamw"
  testing = STUDY.point_config("adagrad", 0.1, 0.0, base="glyphs", epochs=0, config_path="configs/testing.py")
  assert testing.model.name == "ViT-testing" and testing.optimizer.name == "adagrad" and testing.num_steps == 8


def test_driver_runs_a_one_by_one_grid_and_draws_it(data_dir, tmp_path):
  workdir = str(tmp_path / "study")
  study = STUDY.run_grid(workdir, ["adabelief"], [1.0], [0.0], config_path="configs/testing.py",
                         overrides={"dataset.data_dir": str(data_dir)})
  cell = study["grid"]["adabelief"]
  assert cell["lrs"] == [1e-4] and cell["wds"] == [0.0] and len(cell["ausuc"]) == 1
  assert 0.0 < cell["ausuc"][0][0] < 1.0 and 0.0 < study["pretrained_ausuc"] < 1.0
  with open(os.path.join(workdir, "optimizer_study.json")) as f:
    assert json.load(f)["grid"]["adabelief"]["ausuc"] == cell["ausuc"]  # Saved as it goes.
  assert STUDY.main(["--workdir", workdir, "--draw_only"]) == 0
  assert os.path.getsize(os.path.join(workdir, "optimizer_study.png")) > 1000
