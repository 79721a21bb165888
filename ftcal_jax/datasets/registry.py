"""Datasets by name: `get_dataset(config)` returns an in-memory or a TFDS-backed `base.Dataset`.

Importing this module is cheap: each factory imports its source (and TFDS, TensorFlow, the fonts) only when a
dataset is built.
"""

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ftcal_jax.datasets import base
from ftcal_jax.datasets.base import config_get

# Glyphs: mild augmentation, no flip (a mirrored glyph can be another class or none).
GLYPHS_AUGMENT = dict(crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), brightness=0.3, contrast=0.3)


def _glyphs(cfg: Any) -> base.Dataset:
  # pylint: disable=g-import-not-at-top  (TFDS and the fonts load only when a dataset is built)
  from ftcal_jax.datasets import array_source, fonts, glyphs
  builder_config = config_get(cfg, "config", "default")
  data_dir = config_get(cfg, "data_dir", None)
  load = lambda split: glyphs.load_glyphs_arrays(split, config=builder_config, data_dir=data_dir)
  splits = dict(train_split=config_get(cfg, "train_split", "target_train"),
                test_split=config_get(cfg, "test_split", "target_test"))
  holdout = dict(holdout_fraction=config_get(cfg, "holdout_fraction", 0.2),
                 holdout_seed=config_get(cfg, "holdout_seed", 0))
  return array_source.ArrayDataset(name="glyphs", load_split=load, num_classes=len(fonts.CLASSES),
                                   class_names=tuple(fonts.CLASSES), augment=config_get(cfg, "augment", GLYPHS_AUGMENT),
                                   **splits, **holdout)


def _imagenet_variant(name: str, carve: Mapping[str, Any]) -> Callable[[Any], base.Dataset]:

  def make(cfg):
    # pylint: disable=g-import-not-at-top
    from ftcal_jax.datasets import imagenet_variants as iv
    from ftcal_jax.datasets import tfds_source as src
    head_classes = config_get(cfg, "head_classes", "mask")
    return src.TfdsDataset(name=name, builder_name=name, train_split="train", test_split="test", carve=carve,
                           class_mask=iv.class_mask(name, head_classes), present_classes=iv.present_classes(name),
                           extra_provenance=iv.provenance(name, head_classes),
                           **src.tfds_fields(cfg, src.IMAGENET_AUGMENT))

  return make


def _tfds_plain(builder_name: str, train: str = "train", test: str = "test", domain_default: Optional[str] = None,
                augment: Any = None) -> Callable[[Any], base.Dataset]:

  def make(cfg):
    from ftcal_jax.datasets import tfds_source as src  # pylint: disable=g-import-not-at-top
    full = builder_name
    if domain_default is not None:
      full = f"{builder_name}/{config_get(cfg, 'domain', domain_default)}"
    return src.TfdsDataset(name=builder_name, builder_name=full, train_split=config_get(cfg, "train_split", train),
                           test_split=config_get(cfg, "test_split", test),
                           **src.tfds_fields(cfg, augment or src.IMAGENET_AUGMENT))

  return make


def _office_home(cfg: Any) -> base.Dataset:
  # pylint: disable=g-import-not-at-top
  from ftcal_jax.datasets import office_home  # Registers the builder.
  from ftcal_jax.datasets import tfds_source as src
  domain = config_get(cfg, "domain", "Art")
  if domain not in office_home.DOMAINS:
    raise ValueError(f"Unknown Office-Home domain {domain!r}; valid: {', '.join(office_home.DOMAINS)}.")
  return src.TfdsDataset(name="office_home", builder_name=f"office_home/{domain}", train_split="train",
                         test_split="test", prepare=True, **src.tfds_fields(cfg, src.OFFICE_HOME_AUGMENT))


def _iwildcam(cfg: Any) -> base.Dataset:
  # pylint: disable=g-import-not-at-top
  from ftcal_jax.datasets import iwildcam  # Registers the builder.
  from ftcal_jax.datasets import tfds_source as src
  return iwildcam.IWildCamDataset(name="iwildcam", builder_name="iwildcam_wilds",
                                  train_split=config_get(cfg, "train_split", "train"),
                                  test_split=config_get(cfg, "test_split", "test"), prepare=True,
                                  **src.tfds_fields(cfg, src.IMAGENET_AUGMENT))


def natural_split(dataset: Any) -> Any:
  """The dataset's own (seen, absent) classes, for class_split.kind = 'natural' (iWildCam)."""
  if not isinstance(dataset, base.NaturalSplitDataset):
    raise ValueError(f"class_split.kind='natural' needs a dataset that defines its own S and U (iwildcam); "
                     f"{dataset.name!r} does not. Use kind 'random' or 'explicit'.")
  return dataset.natural_split()


_REGISTRY: Dict[str, Callable[[Any], Any]] = {
    "glyphs": _glyphs,
    # TFDS ships ImageNet-R and ImageNet-Sketch as one split; carve a seeded per-class train/test split (paper.md:
    # ImageNet-R 24,076 / 5,924, ImageNet-Sketch 40,889 / 10,000, i.e. 10 test images per class).
    "imagenet_r": _imagenet_variant("imagenet_r", {"from": "test", "test_fraction": 0.2}),
    "imagenet_sketch": _imagenet_variant("imagenet_sketch", {"from": "test", "test_per_class": 10}),
    "domainnet": _tfds_plain("domainnet", domain_default="clipart"),
    "office_home": _office_home,
    # WILDS iWildCam v2.0 from manual_dir; its class split is the data's own (class_split.kind = 'natural').
    "iwildcam": _iwildcam,
    "caltech101": _tfds_plain("caltech101"),
    "dtd": _tfds_plain("dtd"),
    "oxford_flowers102": _tfds_plain("oxford_flowers102"),
}


def register_dataset(name: str, factory: Callable[[Any], Any]) -> None:
  """Adds `factory(config) -> dataset` under `name` (e.g. a test dataset)."""
  _REGISTRY[name] = factory


def list_datasets() -> Sequence[str]:
  return sorted(_REGISTRY)


def get_dataset(config: Any) -> base.Dataset:
  """The dataset named by `config.name`, built from the rest of `config` (a ConfigDict or dict)."""
  name = config_get(config, "name", None)
  if name not in _REGISTRY:
    raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(list_datasets())}.")
  return _REGISTRY[name](config)
