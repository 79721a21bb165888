"""Datasets by name: `get_dataset(config)` returns an in-memory or a TFDS-backed dataset with one surface."""

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ftcal_jax.datasets.tfds_source import IMAGENET_AUGMENT, OFFICE_HOME_AUGMENT, TfdsDataset, tfds_fields
from ftcal_jax.input_pipeline import ArrayDataset, config_get

# Glyphs: mild augmentation, no flip (a mirrored glyph can be another class or none).
GLYPHS_AUGMENT = dict(crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), brightness=0.3, contrast=0.3)


def _glyphs(cfg: Any) -> ArrayDataset:
  from ftcal_jax.datasets import fonts, glyphs  # pylint: disable=g-import-not-at-top  (builds only when asked)
  builder_config = config_get(cfg, "config", "default")
  data_dir = config_get(cfg, "data_dir", None)
  load = lambda split: glyphs.load_glyphs_arrays(split, config=builder_config, data_dir=data_dir)
  return ArrayDataset(name="glyphs", load_split=load, num_classes=len(fonts.CLASSES), class_names=tuple(fonts.CLASSES),
                      train_split=config_get(cfg, "train_split",
                                             "target_train"), test_split=config_get(cfg, "test_split", "target_test"),
                      augment=config_get(cfg, "augment",
                                         GLYPHS_AUGMENT), holdout_fraction=config_get(cfg, "holdout_fraction", 0.2),
                      holdout_seed=config_get(cfg, "holdout_seed", 0))


def _imagenet_variant(name: str, carve: Mapping[str, Any]) -> Callable[[Any], "TfdsDataset"]:

  def make(cfg):
    from ftcal_jax.datasets import imagenet_variants as iv  # pylint: disable=g-import-not-at-top
    head_classes = config_get(cfg, "head_classes", "mask")
    return TfdsDataset(name=name, builder_name=name, train_split="train", test_split="test", carve=carve,
                       class_mask=iv.class_mask(name, head_classes), present_classes=iv.present_classes(name),
                       extra_provenance=iv.provenance(name, head_classes), **tfds_fields(cfg, IMAGENET_AUGMENT))

  return make


def _tfds_plain(builder_name: str, train: str = "train", test: str = "test", domain_default: Optional[str] = None,
                augment: Any = None) -> Callable[[Any], "TfdsDataset"]:

  def make(cfg):
    full = builder_name
    if domain_default is not None:
      full = f"{builder_name}/{config_get(cfg, 'domain', domain_default)}"
    return TfdsDataset(name=builder_name, builder_name=full, train_split=config_get(cfg, "train_split", train),
                       test_split=config_get(cfg, "test_split", test), **tfds_fields(cfg, augment or IMAGENET_AUGMENT))

  return make


def _office_home(cfg: Any) -> "TfdsDataset":
  from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top  (registers the builder)
  domain = config_get(cfg, "domain", "Art")
  if domain not in office_home.DOMAINS:
    raise ValueError(f"Unknown Office-Home domain {domain!r}; valid: {', '.join(office_home.DOMAINS)}.")
  return TfdsDataset(name="office_home", builder_name=f"office_home/{domain}", train_split="train", test_split="test",
                     prepare=True, **tfds_fields(cfg, OFFICE_HOME_AUGMENT))


_REGISTRY: Dict[str, Callable[[Any], Any]] = {
    "glyphs": _glyphs,
    # TFDS ships ImageNet-R and ImageNet-Sketch as one split; carve a seeded per-class train/test split (paper.md:
    # ImageNet-R 24,076 / 5,924, ImageNet-Sketch 40,889 / 10,000, i.e. 10 test images per class).
    "imagenet_r": _imagenet_variant("imagenet_r", {"from": "test", "test_fraction": 0.2}),
    "imagenet_sketch": _imagenet_variant("imagenet_sketch", {"from": "test", "test_per_class": 10}),
    "domainnet": _tfds_plain("domainnet", domain_default="clipart"),
    "office_home": _office_home,
    "caltech101": _tfds_plain("caltech101"),
    "dtd": _tfds_plain("dtd"),
    "oxford_flowers102": _tfds_plain("oxford_flowers102"),
}


def register_dataset(name: str, factory: Callable[[Any], Any]) -> None:
  """Adds `factory(config) -> dataset` under `name` (e.g. a test dataset)."""
  _REGISTRY[name] = factory


def list_datasets() -> Sequence[str]:
  return sorted(_REGISTRY)


def get_dataset(config: Any):
  """The dataset named by `config.name`, built from the rest of `config` (a ConfigDict or dict)."""
  name = config_get(config, "name", None)
  if name not in _REGISTRY:
    raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(list_datasets())}.")
  return _REGISTRY[name](config)
