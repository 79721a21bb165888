"""Every paper-reproduction config in experiments/ runs its `runlocal` smoke run end to end, offline.

TFDS benchmarks read fake JPEG records through `tfds.testing.mock_data`; Office-Home is prepared from a fake zip
of its two domains, and its smoke run chains the source stage into the target stage, as a real run does.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
train = pytest.importorskip("ftcal_jax.train")

from ftcal_jax import methods as methods_lib  # pylint: disable=g-import-not-at-top
from ftcal_jax import recipes  # pylint: disable=g-import-not-at-top
from ftcal_jax.class_split import ClassSplit  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import imagenet_variants as iv  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def _config(name, arg):
  config = recipes.load_file(os.path.join(EXPERIMENTS, f"{name}.py")).get_config(arg)
  config.write_figures = False  # report.py's own tests draw the figures; keep this file fast.
  config.heartbeat_s = 600.0
  return config


def _jpegs(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
    out.append(buf.getvalue())
  return out


def _fake_as_dataset(labels):
  """A mock `as_dataset` giving every split the same JPEG records with these labels, in order."""
  encoded = _jpegs(len(labels))

  def as_dataset(self, split, decoders=None, **kwargs):
    del split, kwargs
    ds = tf.data.Dataset.from_tensor_slices({
        "image": encoded, "label": np.asarray(labels, np.int64), "file_name": [f"{i}.jpg" for i in range(len(labels))]
    })
    keys = set(self.info.features.keys())
    ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k in keys})
    return ds.map(lambda ex: self.info.features.decode_example(ex, decoders=decoders))

  return as_dataset


def _check_report(workdir, config):
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  rows = report["methods"]
  expected = {"pretrained", "finetune", "finetune+ALG", "finetune+gamma*"}
  for name in config.methods:
    expected.add(name)
    if methods_lib.get_method(name).calibrated:
      expected.add(f"{name}+ALG")
  assert expected <= set(rows), sorted(expected - set(rows))
  for key in expected:
    accs = rows[key]["top1"]
    assert set(accs) >= {"acc_y/y", "acc_s/y", "acc_u/y", "acc_s/s", "acc_u/u"}
    assert all(v is None or 0.0 <= v <= 100.0 for v in accs.values())
  assert len(report["gammas"]["pcv"]["per_split"]) == config.pcv.num_splits
  split = report["class_split"]
  assert len(split["seen"]) and len(split["absent"]) and not set(split["seen"]) & set(split["absent"])
  return report


def _run(config, workdir):
  train.train_and_evaluate(config, str(workdir))
  return _check_report(str(workdir), config)


_IMAGENET_R_LABELS = "imagenet_r"  # Every one of its 200 classes, 5 images each (carved: 4 train, 1 test).


# One smoke run per config file (the other VTAB tasks differ only in the builder: see the test below).
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, arg, labels",
    [
        ("vtab", "dtd,runlocal", np.repeat(np.arange(47), 4)),
        # 40 of the 1000 classes, 12 images each: the carve keeps 10 for test and 2 for training.
        ("imagenet_sketch", "runlocal", np.repeat(np.random.default_rng(0).choice(1000, 40, replace=False), 12)),
        ("imagenet_r", "keep,runlocal", _IMAGENET_R_LABELS),
        ("imagenet_r", "vit,runlocal", _IMAGENET_R_LABELS),  # the ViT alternative to the paper's ResNet-50
        ("ablation_methods", "imagenet_r,runlocal", _IMAGENET_R_LABELS),
    ])
def test_tfds_experiment_smoke_run(tmp_path, monkeypatch, name, arg, labels):
  config = _config(name, arg)
  if isinstance(labels, str):
    labels = np.repeat(iv.imagenet_r_head_indices(), 5)
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(labels)):
    report = _run(config, tmp_path / "work")
  split = report["class_split"]
  present = set(np.unique(labels).tolist()) if name != "imagenet_sketch" else set(range(1000))
  assert set(split["seen"]) | set(split["absent"]) <= present
  if config.dataset.name == "imagenet_r":  # 'keep' scores all 1000 head classes, 'mask' only ImageNet-R's 200.
    scored = 1000 if config.dataset.head_classes == "keep" else 200
    assert report["head_classes"]["num_scored_classes"] == scored


def test_imagenet_r_ablations_change_only_their_field():
  """The ablations run ImageNet-R's job (smoke-run above) with one field changed: checked on the config alone."""
  base = _config("imagenet_r", "runlocal")
  adam = _config("ablation_optimizer", "adam,runlocal")
  assert adam.optimizer.name == "adamw" and adam.dataset == base.dataset and adam.model == base.model
  fewer = _config("ablation_num_classes", "num_seen=20,runlocal")
  split = ClassSplit.from_config(fewer.class_split, 1000, candidates=iv.present_classes("imagenet_r"))
  assert len(split.seen) == 20 and len(split.absent) == 180
  assert fewer.dataset == base.dataset and fewer.optimizer == base.optimizer


@pytest.mark.slow
def test_vtab_clip_zero_shot_head_through_the_job(tmp_path):
  """VTAB's CLIP start: a (tiny, random) transformers CLIP checkpoint and a (C, E) text-embedding file give the
  pre-trained model the zero-shot head, whose logits are logit_scale * cos(image, class text)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  vision = transformers.CLIPVisionModelWithProjection(
      transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=32, patch_size=8, projection_dim=16))
  torch.save(vision.state_dict(), tmp_path / "clip.bin")
  emb = np.random.default_rng(0).normal(size=(47, 16)).astype(np.float32)
  np.save(tmp_path / "text.npy", emb)
  config = _config("vtab", "dtd,runlocal")
  config.init_checkpoint, config.model.text_embeddings = str(tmp_path / "clip.bin"), str(tmp_path / "text.npy")
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(np.repeat(np.arange(47), 4))):
    _run(config, tmp_path / "work")
  with np.load(tmp_path / "work" / "pretrained" / "predictions.npz") as z:
    logits, features = z["test/logits"], z["test/features"]
  unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
  np.testing.assert_allclose(logits, 100.0 * features @ unit.T, rtol=1e-4, atol=1e-3)  # no logit_scale in the file


@pytest.mark.parametrize("task, num_classes", [("caltech101", 102), ("dtd", 47), ("oxford_flowers102", 102)])
def test_vtab_tasks_build_their_dataset(task, num_classes):
  from ftcal_jax.datasets import registry  # pylint: disable=g-import-not-at-top
  config = _config("vtab", f"{task},runlocal")
  with tfds.testing.mock_data(num_examples=4):
    ds = registry.get_dataset(config.dataset)
    assert ds.num_classes == num_classes and ds.image_shape == (16, 16, 3)
  assert ClassSplit.from_config(config.class_split, num_classes).seen.__len__() == round(num_classes / 2)


def _fake_office_home_zip(path, folders, per_class=4):
  rng = np.random.default_rng(0)
  with zipfile.ZipFile(path, "w") as zf:
    for folder in folders:
      for cls in office_home.CLASSES:
        for i in range(per_class):
          buf = io.BytesIO()
          Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format="JPEG")
          zf.writestr(f"OfficeHomeDataset_10072016/{folder}/{cls}/{i + 1:05d}.jpg", buf.getvalue())


@pytest.mark.slow
def test_office_home_source_then_target_smoke_run(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  _fake_office_home_zip(manual / office_home.ZIP_NAME, ["Art", "Clipart"])
  paths = dict(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))

  source = _config("office_home", "Ar-Cl,source,runlocal")
  source.dataset.update(paths)
  out = train.train_and_evaluate(source, str(tmp_path / "source"))
  assert source.dataset.domain == "Art" and os.path.exists(out["checkpoint"])

  target = _config("office_home", "Ar-Cl,runlocal")
  target.dataset.update(paths)
  target.init_checkpoint = out["checkpoint"]  # The source model, as in the real two-stage run.
  assert target.dataset.domain == "Clipart"
  report = _run(target, tmp_path / "target")
  assert len(report["class_split"]["seen"]) == 30 and len(report["class_split"]["absent"]) == 35
  assert report["test_samples"]["all"] == 65  # One test image per class (7:3 of 4).
  # The ResNet's calibrated export carries its BatchNorm statistics beside the γ-shifted head.
  from ftcal_jax.models import weights  # pylint: disable=g-import-not-at-top
  exported = weights.load_npz(str(tmp_path / "target" / "finetune_calibrated.npz"))
  trained = weights.load_npz(str(tmp_path / "target" / "finetune" / "params.npz"))
  assert set(exported) == {"params", "batch_stats"}
  with open(tmp_path / "target" / "finetune_calibrated.json") as f:
    info = json.load(f)
  absent = np.zeros(65, bool)
  absent[info["absent_classes"]] = True
  shift = exported["params"]["head"]["bias"] - trained["params"]["head"]["bias"]
  np.testing.assert_allclose(shift, np.where(absent, info["gamma"], 0.0), atol=1e-5)


def test_configs_reject_bad_args():
  with pytest.raises(ValueError, match="valid pairs: Ar-Cl"):
    _config("office_home", "Ar-Xx")
  with pytest.raises(ValueError, match="valid tasks"):
    _config("vtab", "svhn")
  with pytest.raises(ValueError, match="Unknown config argument 'lr'"):
    _config("imagenet_r", "lr=0.1")
  with pytest.raises(ValueError, match=r"num_seen must be in \[2, 199\]"):
    _config("ablation_num_classes", "num_seen=200")
  with pytest.raises(ValueError, match="not a int"):
    _config("ablation_num_classes", "num_seen=half")


def _fake_report(seed, ft_u, pcv_gamma, holds):
  accs = lambda u: {"acc_y/y": 50.0, "acc_s/y": 60.0, "acc_u/y": u, "acc_s/s": 70.0, "acc_u/u": 40.0}
  return {
      "config": {"seed": seed}, "methods": {
          "pretrained": {"name": "Pre-trained", "top1": accs(30.0)}, "finetune": {"name": "FT", "top1": accs(ft_u)}
      }, "ausuc": {"pretrained": 0.2,
                   "finetune": 0.2 + ft_u / 100}, "ncm": {"pretrained": accs(40.0), "finetune": accs(44.0)},
      "gammas": {"alg": {"finetune": 1.0}, "oracle": {"finetune": {"gamma": 2.0}},
                 "pcv": {"gamma": pcv_gamma}}, "findings": [{
                     "claim": "FT lowers Acc_u/y", "holds": holds, "estimate": ft_u - 30.0,
                     "interval": [ft_u - 31.5, ft_u - 28.5], "unit": "points"
                 }]
  }


def test_glyphs_seeds_summary_and_table():
  seeds = recipes.load_file(os.path.join(EXPERIMENTS, "glyphs_seeds.py"))
  summary = seeds.summarize(
      [_fake_report(0, 4.0, 3.0, True),
       _fake_report(1, 8.0, None, False),
       _fake_report(2, 6.0, 5.0, None)])
  ft = summary["methods"]["finetune"]["acc_u/y"]
  assert ft["mean"] == pytest.approx(6.0) and ft["std"] == pytest.approx(2.0)  # ddof=1 of (4, 8, 6)
  assert summary["methods"]["pretrained"]["acc_u/y"]["std"] == 0.0
  assert summary["ausuc"]["finetune"]["mean"] == pytest.approx(0.26)
  tally = summary["findings"]["FT lowers Acc_u/y"]
  assert {k: tally[k] for k in ("holds", "fails", "unchecked")} == {"holds": 1, "fails": 1, "unchecked": 1}
  assert tally["estimate"]["mean"] == pytest.approx(-24.0) and tally["estimate"]["std"] == pytest.approx(2.0)
  assert summary["seeds"] == [0, 1, 2]
  assert summary["gammas"]["PCV"]["mean"] == pytest.approx(4.0) and summary["gammas"]["PCV"]["n"] == 2
  table = seeds.markdown(summary)
  assert "| FT | 50.0 ± 0.0 | 60.0 ± 0.0 | 6.0 ± 2.0 | 70.0 ± 0.0 | 40.0 ± 0.0 | 0.260 ± 0.020 |" in table
  assert ("| FT lowers Acc_u/y | 1/3 | -24.00 ± 2.00 | -26.00 [-27.50, -24.50] ✓ | -22.00 [-23.50, -20.50] ✗ | "
          "-24.00 [-25.50, -22.50] ? |") in table
  assert "PCV 4.00 ± 1.41 (n=2)" in table


def test_recipe_screen_candidates_are_valid_configs_scored_on_target_val():
  """Every screened candidate builds a valid config that evaluates on target_val, never target_test."""
  from ftcal_jax import config_validation  # pylint: disable=g-import-not-at-top
  screen = recipes.load_file(os.path.join(EXPERIMENTS, "glyphs_recipe_screen.py"))
  for name, overrides in screen.CANDIDATES.items():
    config = screen._config(overrides, seed=3)  # pylint: disable=protected-access
    config_validation.validate_config(config)
    assert config.dataset.test_split == "target_val" and config.seed == 3, name
    assert config.dataset.config in ("default", "handwriting_outline") or config.dataset.config in screen.DOMAINS
  assert screen.CANDIDATES["cosine_head"] == {}  # The demo's recipe is configs/glyphs.py itself.
  rec = {
      "candidate": "x", "seed": 0,
      **{k: {"margin": 0.6, "interval": [0.5, 0.7], "holds": True} for k in screen.FINDINGS}
  }
  assert "| x | 0 | +0.60 … +0.60 | 0.60 … 0.60 | 1/1 |" in screen.table([rec])
