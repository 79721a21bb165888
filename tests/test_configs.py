"""Every config (configs/, experiments/) loads, is locked, has base_config's keys and refuses an unknown argument."""

import glob
import os

import ml_collections
import pytest

from ftcal_jax import base_config
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


def _keys(config, prefix=""):
  """Every nested key path of a ConfigDict ('dataset', 'dataset.name', ...)."""
  out = set()
  for key in config.keys():
    out.add(prefix + key)
    if isinstance(config[key], ml_collections.ConfigDict):
      out |= _keys(config[key], f"{prefix}{key}.")
  return out


_PAIRS = ("Ar-Cl", "Ar-Pr", "Ar-Rw", "Rw-Ar", "Rw-Cl", "Rw-Pr")
# Every config file with each valid argument (runlocal included).
_ALL_CONFIGS = {
    "configs/glyphs.py": (None, "all", "runlocal", "all,runlocal"),
    "configs/glyphs_pretrain.py": (None, "runlocal"),
    "configs/testing.py": (None,),
    "experiments/ablation_methods.py":
        ("imagenet_r", "imagenet_r,runlocal") + tuple(p + ",runlocal" for p in _PAIRS) + _PAIRS,
    "experiments/ablation_head.py": (None, "linear", "cosine", "cosine,epochs=3,scale=10", "cosine,runlocal"),
    "experiments/ablation_num_classes.py": (None, "runlocal", "num_seen=20", "num_seen=150,runlocal"),
    "experiments/ablation_optimizer.py":
        ("sgd", "adam", "sgd,runlocal", "adam,runlocal", "adabelief", "adadelta", "adagrad", "rmsprop,runlocal",
         "rmsprop,base=glyphs,lr=1e-3,wd=0,epochs=2", "sgd,base=glyphs,runlocal"),
    "experiments/iwildcam.py": (None, "runlocal"),
    "experiments/imagenet_r.py": (None, "keep", "runlocal", "keep,runlocal", "vit", "vit,runlocal"),
    "experiments/imagenet_sketch.py": (None, "runlocal", "vit", "vit,runlocal"),
    "experiments/office_home.py": tuple(p + s for p in _PAIRS for s in ("", ",source", ",runlocal", ",source,runlocal"))
                                  + ("Ar-Cl,vit", "Ar-Cl,source,vit", "Ar-Cl,vit,runlocal"),
    "experiments/vtab.py": tuple(t + s for t in ("caltech101", "dtd", "oxford_flowers102") for s in ("", ",runlocal")) +
                           ("dtd,vit", "dtd,vit,runlocal"),
}


def test_the_list_names_every_config_file():
  files = glob.glob(os.path.join(REPO, "configs", "*.py")) + glob.glob(os.path.join(REPO, "experiments", "*.py"))
  with_config = set()
  for path in files:
    with open(path) as f:
      if "\ndef get_config(" in f.read():
        with_config.add(os.path.relpath(path, REPO))
  assert with_config == set(_ALL_CONFIGS)


@pytest.mark.parametrize("path, arg", [(p, a) for p, args in _ALL_CONFIGS.items() for a in args])
def test_every_config_has_exactly_the_base_keys(path, arg):
  config = recipes.load_file(os.path.join(REPO, path)).get_config(arg)
  assert config.is_locked
  base, keys = _keys(base_config.get_config()), _keys(config)
  assert keys == base, (f"missing: {sorted(base - keys)}", f"not in base_config: {sorted(keys - base)}")


@pytest.mark.parametrize("name", ["glyphs", "glyphs_pretrain", "testing"])
def test_configs_refuse_an_unknown_argument(name):
  with pytest.raises(ValueError, match=f"Unknown configs/{name}.py argument 'fast'"):
    _load(name).get_config("fast")


def test_recipe_refuses_a_dataset_field_outside_the_schema():
  with pytest.raises(ValueError, match="no field 'colour'.*base_config"):
    recipes.recipe(dataset=dict(name="dtd", colour="red"), num_seen=0.5, weight_decay=5e-4, num_epochs=1,
                   init_checkpoint="", init_head="keep")


@pytest.mark.parametrize("path, arg, model, head_file", [
    ("experiments/office_home.py", "Ar-Cl,source", "ResNet-50", "resnet50-0676ba61.pth"),
    ("experiments/office_home.py", "Ar-Cl", "ResNet-50", "office_home_Art_resnet50.npz"),
    ("experiments/office_home.py", "Ar-Cl,vit", "ViT-B/32", "office_home_Art_vit_b32.npz"),
    ("experiments/imagenet_r.py", None, "ResNet-50", "resnet50-0676ba61.pth"),
    ("experiments/imagenet_sketch.py", "vit", "ViT-B/32", "ViT-B_32_imagenet1k.npz"),
    ("experiments/vtab.py", "dtd", "CLIP-ViT-B/32", "model.safetensors"),
])
def test_the_papers_backbones_and_their_input_normalisation(path, arg, model, head_file):
  config = recipes.load_file(os.path.join(REPO, path)).get_config(arg)
  assert config.model.name == model and os.path.basename(config.init_checkpoint) == head_file
  mean, std = recipes.INPUT_NORMALISATION[recipes.family(model)]
  assert tuple(config.model.input_mean) == mean and tuple(config.model.input_std) == std
  assert (config.model.text_embeddings == "checkpoints/vtab_dtd_clip_b32_text.npy") == (model == "CLIP-ViT-B/32")
  local = recipes.load_file(os.path.join(REPO, path)).get_config(",".join(filter(None, [arg, "runlocal"])))
  assert local.model.name == recipes.family(model) + "-testing" and not local.model.text_embeddings
