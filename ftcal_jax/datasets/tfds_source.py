"""The tf.data source for the paper's real benchmarks (ImageNet-R/-Sketch, DomainNet, Office-Home, VTAB).

It yields the same host-local batches as `array_source.ArrayDataset` and implements the same `base.Dataset`
protocol. TensorFlow is imported only when one of these datasets is used, so the in-memory Glyphs path never pays
for it.
"""

import dataclasses
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from ftcal_jax.datasets.base import config_get, split_part
from ftcal_jax.input_pipeline import (Batch, class_indices, host_batch_size, num_eval_batches, resolve_hosts,
                                      split_holdout)

# ImageNet-style recipe (paper.md, Office-Home): RandomResizedCrop(scale 0.7-1), flip, colour jitter 0.3, grayscale.
OFFICE_HOME_AUGMENT = dict(crop_scale=(0.7, 1.0), flip=True, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0,
                           grayscale_prob=0.1)
# ImageNet-R/-Sketch and VTAB: the same recipe (the official code uses one transform for all).
IMAGENET_AUGMENT = OFFICE_HOME_AUGMENT


def tfds_fields(cfg: Any, augment_default: Any) -> Dict[str, Any]:
  """The TfdsDataset fields that every TFDS-backed dataset reads from its config."""
  return dict(image_size=int(config_get(cfg, "image_size", 224)), data_dir=config_get(cfg, "data_dir", None),
              manual_dir=config_get(cfg, "manual_dir", None), augment=config_get(cfg, "augment", augment_default),
              holdout_fraction=config_get(cfg, "holdout_fraction",
                                          0.2), holdout_seed=config_get(cfg, "holdout_seed",
                                                                        0), split_seed=config_get(cfg, "split_seed", 0),
              eval_crop_fraction=config_get(cfg, "eval_crop_fraction",
                                            0.875), shuffle_buffer=config_get(cfg, "shuffle_buffer", 10_000))


@dataclasses.dataclass
class TfdsDataset:
  """A TFDS dataset read through tf.data into the same host-local batches as `ArrayDataset` (a `base.Dataset`).

  Images are decoded after filtering (the records are read with SkipDecoding), resized to image_size, augmented
  with stateless TF ops seeded per (seed, host, element) for training, and resized-then-centre-cropped for eval.

  Split names: a TFDS split ('train', 'test', ...), optionally with ':fit' / ':heldout' (a per-class holdout of
  it, as `ArrayDataset`). With `carve`, 'train' and 'test' are a seeded per-class split of the one TFDS split
  carve['from'] (test_fraction or test_per_class per class).

  Host sharding: training on a whole TFDS split reads `tfds.even_splits(split, process_count)[process_index]`;
  anything that selects examples by index (carved splits, holdouts, and every eval split) reads the split's
  records on each host and decodes only its own. Eval batches are exact: global batch k holds examples
  [k * B, (k + 1) * B) of the selection, the last one padded with mask False on every host.

  Label selection needs the split's labels: one label-only pass per split and process, cached.
  """
  name: str
  builder_name: str
  train_split: str
  test_split: str
  image_size: int = 224
  data_dir: Optional[str] = None
  manual_dir: Optional[str] = None
  prepare: bool = False
  augment: Any = None
  carve: Optional[Mapping[str, Any]] = None
  split_seed: int = 0
  holdout_fraction: float = 0.2
  holdout_seed: int = 0
  class_mask: Optional[np.ndarray] = None
  present_classes: Optional[np.ndarray] = None
  eval_crop_fraction: float = 0.875
  shuffle_buffer: int = 10_000
  extra_provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  _labels: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
  _builder: Any = dataclasses.field(default=None, repr=False)

  def builder(self):
    """The TFDS builder; prepared from manual_dir first when `prepare` (Office-Home's zip)."""
    if self._builder is None:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      b = tfds.builder(self.builder_name, data_dir=self.data_dir)
      if self.prepare:
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=self.manual_dir))
      self._builder = b
    return self._builder

  @property
  def num_classes(self) -> int:
    return self.builder().info.features["label"].num_classes

  @property
  def class_names(self) -> Tuple[str, ...]:
    return tuple(self.builder().info.features["label"].names)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return (self.image_size, self.image_size, 3)

  def _records(self, tfds_split: str, **kwargs):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    kwargs.setdefault("shuffle_files", False)
    return self.builder().as_dataset(split=tfds_split, decoders={"image": tfds.decode.SkipDecoding()}, **kwargs)

  def labels(self, tfds_split: str) -> np.ndarray:
    """int32 (N,): the labels of a TFDS split in read order (a label-only pass, cached)."""
    if tfds_split not in self._labels:
      ds = self._records(tfds_split).map(lambda ex: ex["label"]).batch(4096)
      labels = np.concatenate([np.asarray(b, np.int32) for b in ds.as_numpy_iterator()] or [np.zeros(0, np.int32)])
      if self.present_classes is not None:
        bad = np.setdiff1d(np.unique(labels), self.present_classes)
        if bad.size:
          raise ValueError(f"{self.name}/{tfds_split} has labels {bad[:10].tolist()} outside its "
                           f"{len(self.present_classes)} known classes; check the TFDS version's label space.")
      self._labels[tfds_split] = labels
    return self._labels[tfds_split]

  def _resolve(self, split: str) -> Tuple[str, Optional[np.ndarray]]:
    """split name -> (TFDS split, selected indices in read order or None for all)."""
    name, part = split_part(split)
    tfds_split, idx = name, None
    if self.carve is not None and name in ("train", "test"):
      tfds_split = self.carve["from"]
      fit, held = split_holdout(self.labels(tfds_split), self.carve.get("test_fraction"), self.split_seed,
                                self.carve.get("test_per_class"))
      idx = fit if name == "train" else held
    if part:
      labels = self.labels(tfds_split)
      idx = np.arange(labels.shape[0]) if idx is None else idx
      fit, held = split_holdout(labels[idx], self.holdout_fraction, self.holdout_seed)
      idx = idx[fit if part == "fit" else held]
    return tfds_split, idx

  def num_examples(self, split: str, classes: Optional[Sequence[int]] = None) -> int:
    tfds_split, idx = self._resolve(split)
    labels = self.labels(tfds_split)
    labels = labels if idx is None else labels[idx]
    return int(class_indices(labels, classes).shape[0])

  def _class_table(self, classes: Optional[Sequence[int]]):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    keep = np.zeros((self.num_classes,), bool)
    keep[np.asarray(list(classes), np.int64)] = True
    return tf.constant(keep)

  def train_batches(self, split: Optional[str] = None, *, global_batch: int, seed: int,
                    classes: Optional[Sequence[int]] = None, augment: Any = "default",
                    process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[Batch]:
    """Infinite host-local training batches of `split` (default train_split), filtered to `classes`."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    pi, pc = resolve_hosts(process_index, process_count)
    b_host = host_batch_size(global_batch, pc)
    augment = self.augment if augment == "default" else augment
    tfds_split, idx = self._resolve(split or self.train_split)
    if idx is None:
      ds = self._records(
          tfds.even_splits(tfds_split, n=pc, drop_remainder=False)[pi], shuffle_files=True,
          read_config=tfds.ReadConfig(shuffle_seed=seed))
    else:
      own = np.zeros((self.labels(tfds_split).shape[0],), bool)
      own[idx[pi::pc]] = True  # Host p takes every pc-th selected example.
      own = tf.constant(own)
      ds = self._records(tfds_split).enumerate().filter(lambda i, ex: own[i]).map(lambda i, ex: ex)
    if classes is not None:
      table = self._class_table(classes)
      ds = ds.filter(lambda ex: table[ex["label"]])
    ds = ds.shuffle(self.shuffle_buffer, seed=seed + 7919 * pi, reshuffle_each_iteration=True).repeat()
    host_seed = tf.constant([seed, pi], tf.int64)
    size = self.image_size

    def prep(i, ex):
      elem_seed = tf.random.experimental.stateless_fold_in(host_seed, i)
      image = tf.io.decode_image(ex["image"], channels=3, expand_animations=False)
      return {"image": _tf_augment(image, elem_seed, augment, size), "label": tf.cast(ex["label"], tf.int32)}

    ds = ds.enumerate().map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(b_host, drop_remainder=True).prefetch(2)
    for batch in ds.as_numpy_iterator():
      yield {"image": batch["image"], "label": batch["label"]}

  def eval_batches(self, split: Optional[str] = None, *, global_batch: int, classes: Optional[Sequence[int]] = None,
                   process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[Batch]:
    """Deterministic host-local eval batches of `split` (default test_split), padded and masked."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    pi, pc = resolve_hosts(process_index, process_count)
    b_host = host_batch_size(global_batch, pc)
    tfds_split, idx = self._resolve(split or self.test_split)
    labels = self.labels(tfds_split)
    sel = np.arange(labels.shape[0]) if idx is None else idx
    sel = sel[class_indices(labels[sel], classes)]
    rank = np.arange(sel.shape[0])
    mine = sel[(rank % global_batch) // b_host == pi]
    own = np.zeros((labels.shape[0],), bool)
    own[mine] = True
    own = tf.constant(own)
    pad = num_eval_batches(sel.shape[0], global_batch) * b_host - mine.shape[0]
    size, crop = self.image_size, self.eval_crop_fraction

    def prep(ex):
      image = tf.io.decode_image(ex["image"], channels=3, expand_animations=False)
      return {
          "image": _tf_center_crop(image, size, crop), "label": tf.cast(ex["label"], tf.int32),
          "mask": tf.constant(True)
      }

    ds = self._records(tfds_split).enumerate().filter(lambda i, ex: own[i]).map(lambda i, ex: ex)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    blank = {
        "image": tf.zeros((size, size, 3), tf.float32), "label": tf.constant(0, tf.int32), "mask": tf.constant(False)
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))
    for batch in ds.batch(b_host).prefetch(2).as_numpy_iterator():
      yield batch

  def provenance(self) -> Dict[str, Any]:
    out = {
        "name": self.name, "builder": self.builder_name, "train_split": self.train_split, "test_split": self.test_split,
        "image_size": self.image_size, "carve": dict(self.carve or {}), "split_seed": self.split_seed,
        "holdout_fraction": self.holdout_fraction, "holdout_seed": self.holdout_seed
    }
    out.update(self.extra_provenance)
    return out


def _tf_center_crop(image, size: int, crop_fraction: float):
  """uint8 (h, w, 3) -> float32 (size, size, 3) in [-1, 1]: resize the short side to size / crop_fraction, crop."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = (size / crop_fraction) / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)
  image = tf.image.resize(image, new, method="bilinear", antialias=True)
  top = (new[0] - size) // 2
  left = (new[1] - size) // 2
  image = image[top:top + size, left:left + size]
  return tf.clip_by_value(image, 0.0, 255.0) * (2.0 / 255.0) - 1.0


def _tf_augment(image, seed, cfg: Any, size: int):
  """uint8 (h, w, 3) -> float32 (size, size, 3) in [-1, 1]: the ops of `augment_images`, stateless in TF."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seeds = tf.random.experimental.stateless_split(seed, num=8)
  scale = config_get(cfg, "crop_scale", None)
  if scale is not None:
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0], min_object_covered=0.0,
        aspect_ratio_range=tuple(config_get(cfg, "crop_ratio", (3 / 4, 4 / 3))), area_range=tuple(scale),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
  x = tf.image.resize(image, (size, size), method="bilinear") / 255.0
  if config_get(cfg, "flip", False):
    x = tf.image.stateless_random_flip_left_right(x, seeds[1])

  def factor(strength, s):
    return tf.random.stateless_uniform([], s, 1.0 - strength, 1.0 + strength)

  gray = lambda v: tf.reduce_sum(v * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)
  if config_get(cfg, "brightness", 0.0):
    x = tf.clip_by_value(x * factor(config_get(cfg, "brightness", 0.0), seeds[2]), 0.0, 1.0)
  if config_get(cfg, "contrast", 0.0):
    mean = tf.reduce_mean(gray(x))
    x = tf.clip_by_value(mean + (x - mean) * factor(config_get(cfg, "contrast", 0.0), seeds[3]), 0.0, 1.0)
  if config_get(cfg, "saturation", 0.0):
    g = gray(x)
    x = tf.clip_by_value(g + (x - g) * factor(config_get(cfg, "saturation", 0.0), seeds[4]), 0.0, 1.0)
  if config_get(cfg, "hue", 0.0):
    x = tf.image.stateless_random_hue(x, config_get(cfg, "hue", 0.0), seeds[5])
  p_gray = config_get(cfg, "grayscale_prob", 0.0)
  if p_gray:
    to_gray = tf.random.stateless_uniform([], seeds[6]) < p_gray
    x = tf.where(to_gray, tf.broadcast_to(gray(x), tf.shape(x)), x)
  return x * 2.0 - 1.0
