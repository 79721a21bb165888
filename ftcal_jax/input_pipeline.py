"""Input pipeline: host-local training and evaluation batches, and their global sharding.

Every batch is a dict of host-local numpy arrays
  {'image': float32 (B_host, H, W, C) in [-1, 1], 'label': int32 (B_host,)}
plus 'mask': bool (B_host,) for evaluation, where B_host = global_batch // process_count and host p holds rows
[p * B_host, (p + 1) * B_host) of the global batch. `shard_batch` turns it into one global `jax.Array` per key.

Two sources produce these batches:
  * `ArrayDataset`: small datasets held in memory as uint8 arrays (the offline Glyphs benchmark, tests).
    Augmentation is vectorised numpy, seeded per (seed, step, host).
  * `TfdsDataset`: the paper's real benchmarks, read from TFDS through tf.data (TensorFlow is imported only
    when one is used).

`get_dataset(config)` picks one by name.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Batch = Dict[str, np.ndarray]


# -- hosts and sharding --------------------------------------------------------------------------------------------

def host_batch_size(global_batch: int, process_count: Optional[int] = None) -> int:
  """B_host = global_batch // process_count, with an error that names the fix when it does not divide."""
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"The global batch ({global_batch}) must be a positive multiple of the process count "
                     f"({process_count}); change batch_size.")
  return global_batch // process_count


def _hosts(process_index: Optional[int], process_count: Optional[int]) -> Tuple[int, int]:
  pc = jax.process_count() if process_count is None else int(process_count)
  pi = jax.process_index() if process_index is None else int(process_index)
  if not 0 <= pi < pc:
    raise ValueError(f"process_index {pi} is outside [0, {pc}).")
  return pi, pc


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, axis: str = "data") -> Dict[str, jax.Array]:
  """Host-local numpy arrays (B_host, ...) -> global jax.Arrays (B_host * process_count, ...) split on `axis`.

  Raises:
    ValueError: if the global batch is not divisible by the number of devices along `axis`.
  """
  n_dev = mesh.shape[axis]
  sharding = NamedSharding(mesh, P(axis))
  out = {}
  for k, v in batch.items():
    global_b = v.shape[0] * jax.process_count()
    if global_b % n_dev:
      raise ValueError(f"The global batch {global_b} (key {k!r}) is not divisible by the {n_dev} devices of mesh "
                       f"axis {axis!r}; use a batch_size that is a multiple of {n_dev}.")
    out[k] = jax.make_array_from_process_local_data(sharding, v, (global_b,) + v.shape[1:])
  return out


# -- numpy augmentation --------------------------------------------------------------------------------------------

def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 (..., H, W, C) in [0, 255] -> float32 in [-1, 1]."""
  return images.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _config_get(cfg: Any, key: str, default: Any) -> Any:
  if cfg is None:
    return default
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  return default if value is None else value


def _crop_windows(rng: np.random.Generator, b: int, h: int, w: int, scale: Sequence[float],
                  ratio: Sequence[float]) -> Tuple[np.ndarray, ...]:
  """Random-resized-crop windows (top, left, height, width) in pixels, each (b,).

  Area fraction ~ U(scale), log aspect ratio ~ U(log ratio), as torchvision samples them; a window that does not
  fit is shrunk to fit rather than re-drawn (torchvision retries 10 times then centre-crops), which keeps this
  vectorised and only narrows the ratio range for very elongated draws.
  """
  area = rng.uniform(scale[0], scale[1], b) * h * w
  log_r = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), b)
  cw = np.sqrt(area * np.exp(log_r))
  ch = np.sqrt(area / np.exp(log_r))
  cw = np.clip(cw, 1.0, w)
  ch = np.clip(ch, 1.0, h)
  top = rng.uniform(0.0, 1.0, b) * (h - ch)
  left = rng.uniform(0.0, 1.0, b) * (w - cw)
  return top, left, ch, cw


def _resample(images: np.ndarray, top, left, ch, cw, flip: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
  """Bilinear resampling of per-image windows to out_hw, flipping where `flip`; float32 (B, oh, ow, C)."""
  b, h, w, _ = images.shape
  oh, ow = out_hw
  # Pixel-centre sampling (align_corners=False), as tf.image.resize and torchvision use.
  ty = (np.arange(oh, dtype=np.float32) + 0.5) / oh
  tx = (np.arange(ow, dtype=np.float32) + 0.5) / ow
  tx = np.where(flip[:, None], 1.0 - tx[None], tx[None])  # (B, ow)
  ys = top[:, None] + ty[None] * ch[:, None] - 0.5  # (B, oh)
  xs = left[:, None] + tx * cw[:, None] - 0.5  # (B, ow)
  ys = np.clip(ys, 0.0, h - 1.0)
  xs = np.clip(xs, 0.0, w - 1.0)
  y0 = np.floor(ys).astype(np.int32)
  x0 = np.floor(xs).astype(np.int32)
  y1 = np.minimum(y0 + 1, h - 1)
  x1 = np.minimum(x0 + 1, w - 1)
  wy = (ys - y0).astype(np.float32)[:, :, None, None]
  wx = (xs - x0).astype(np.float32)[:, None, :, None]
  bi = np.arange(b)[:, None, None]
  img = images.astype(np.float32)
  g = lambda yy, xx: img[bi, yy[:, :, None], xx[:, None, :]]
  top_row = g(y0, x0) * (1 - wx) + g(y0, x1) * wx
  bot_row = g(y1, x0) * (1 - wx) + g(y1, x1) * wx
  return top_row * (1 - wy) + bot_row * wy


def augment_images(images: np.ndarray, rng: np.random.Generator, cfg: Any = None,
                   out_hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """Training augmentation of a uint8 batch, all numpy and vectorised over the batch.

  Config fields (all optional; a missing or None field turns the op off):
    crop_scale: (min, max) area fraction for random-resized crop, e.g. (0.7, 1.0) as paper.md's Office-Home.
    crop_ratio: (min, max) aspect ratio, default (3/4, 4/3).
    flip: bool, random horizontal flip (off by default: it changes some glyphs' meaning, e.g. 'b'/'d').
    brightness, contrast, saturation: jitter strength j; a factor ~ U(1 - j, 1 + j) per image, applied in that
      fixed order (torchvision draws a random order; hue is not jittered here).
    grayscale_prob: probability of replacing an RGB image by its luminance (ignored for 1 channel).

  Args:
    images: uint8 (B, H, W, C).
    rng: the generator that all random draws come from.
    cfg: a ConfigDict/dict with the fields above, or None for no augmentation.
    out_hw: output (height, width); default the input size.

  Returns:
    float32 (B, oh, ow, C) in [-1, 1].
  """
  b, h, w, c = images.shape
  out_hw = (h, w) if out_hw is None else tuple(out_hw)
  scale = _config_get(cfg, "crop_scale", None)
  do_flip = bool(_config_get(cfg, "flip", False))
  flip = rng.uniform(size=b) < 0.5 if do_flip else np.zeros((b,), bool)
  if scale is not None or do_flip or out_hw != (h, w):
    if scale is not None:
      ratio = _config_get(cfg, "crop_ratio", (3 / 4, 4 / 3))
      top, left, ch, cw = _crop_windows(rng, b, h, w, scale, ratio)
    else:
      top, left = np.zeros(b), np.zeros(b)
      ch, cw = np.full(b, float(h)), np.full(b, float(w))
    x = _resample(images, top, left, ch, cw, flip, out_hw) / np.float32(255.0)
  else:
    x = images.astype(np.float32) / np.float32(255.0)

  def factor(strength):
    return rng.uniform(1.0 - strength, 1.0 + strength, (b, 1, 1, 1)).astype(np.float32)

  gray = lambda v: v.mean(-1, keepdims=True) if c == 1 else (v @ np.float32([0.299, 0.587, 0.114]))[..., None]
  brightness = _config_get(cfg, "brightness", 0.0)
  if brightness:
    x = np.clip(x * factor(brightness), 0.0, 1.0)
  contrast = _config_get(cfg, "contrast", 0.0)
  if contrast:
    mean = gray(x).mean(axis=(1, 2, 3), keepdims=True)
    x = np.clip(mean + (x - mean) * factor(contrast), 0.0, 1.0)
  saturation = _config_get(cfg, "saturation", 0.0)
  if saturation and c == 3:
    g = gray(x)
    x = np.clip(g + (x - g) * factor(saturation), 0.0, 1.0)
  p_gray = _config_get(cfg, "grayscale_prob", 0.0)
  if p_gray and c == 3:
    to_gray = (rng.uniform(size=b) < p_gray)[:, None, None, None]
    x = np.where(to_gray, np.broadcast_to(gray(x), x.shape), x)
  return x * np.float32(2.0) - np.float32(1.0)


# -- index selection -----------------------------------------------------------------------------------------------

def class_indices(labels: np.ndarray, classes: Optional[Sequence[int]] = None) -> np.ndarray:
  """Indices (sorted, int64) of the examples whose label is in `classes` (all examples when None)."""
  labels = np.asarray(labels)
  if classes is None:
    return np.arange(labels.shape[0])
  return np.flatnonzero(np.isin(labels, np.asarray(list(classes), dtype=labels.dtype)))


def split_holdout(labels: np.ndarray, fraction: Optional[float] = None, seed: int = 0,
                  per_class: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Splits examples per class into 'fit' and 'heldout' index arrays (both sorted).

  Each class with n examples gives k = round(fraction * n) (or k = per_class) to heldout, clipped to at least one
  when n >= 2 and at most n - 1, so every class stays in both parts whenever it can. The draw depends only on
  (labels, fraction or per_class, seed).

  Args:
    labels: int (N,).
    fraction: heldout share in (0, 1); exactly one of fraction and per_class.
    seed: seeds the per-class draw.
    per_class: heldout examples per class.

  Returns:
    (fit_idx, heldout_idx): disjoint int64 arrays whose union is range(N).
  """
  if (fraction is None) == (per_class is None):
    raise ValueError("Give exactly one of holdout fraction and per_class.")
  if fraction is not None and not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout fraction must be in (0, 1); got {fraction}.")
  if per_class is not None and per_class < 1:
    raise ValueError(f"holdout per_class must be >= 1; got {per_class}.")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n = idx.shape[0]
    k = int(round(fraction * n)) if per_class is None else int(per_class)
    k = min(max(k, 1 if n >= 2 else 0), n - 1)
    held.append(rng.permutation(idx)[:k])
  held = np.sort(np.concatenate(held)) if held else np.zeros((0,), np.int64)
  mask = np.zeros(labels.shape[0], bool)
  mask[held] = True
  return np.flatnonzero(~mask), held


# -- in-memory iterators -------------------------------------------------------------------------------------------

def train_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                  classes: Optional[Sequence[int]] = None, augment: Any = None,
                  indices: Optional[np.ndarray] = None, out_hw: Optional[Tuple[int, int]] = None,
                  process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[Batch]:
  """An infinite, seeded, epoch-shuffled iterator of host-local training batches.

  The examples (restricted to `indices`, then to labels in `classes`) are reshuffled each epoch with a
  permutation drawn from (seed, epoch); batches run across epoch boundaries, so every example is seen once per
  epoch and none is dropped. Every host draws the same permutation and keeps its own rows of each global batch.

  Args:
    images: uint8 (N, H, W, C).
    labels: int (N,).
    global_batch: examples per step over all hosts.
    seed: seeds the shuffle and the augmentation.
    classes: keep only these labels (the seen classes S); None keeps all.
    augment: augmentation config for `augment_images`; None gives plain normalisation.
    indices: optional subset of example indices (e.g. a holdout 'fit' part).
    out_hw: output image size; default the stored size.
    process_index, process_count: this host and the host count; default jax's.

  Yields:
    {'image': float32 (B_host, H, W, C) in [-1, 1], 'label': int32 (B_host,)}.
  """
  pi, pc = _hosts(process_index, process_count)
  b_host = host_batch_size(global_batch, pc)
  labels = np.asarray(labels)
  pool = np.arange(labels.shape[0]) if indices is None else np.asarray(indices)
  pool = pool[class_indices(labels[pool], classes)]
  if pool.shape[0] == 0:
    raise ValueError(f"No training examples have a label in classes={list(classes) if classes else classes}.")
  ss = np.random.SeedSequence(seed)
  order = np.zeros((0,), np.int64)
  epoch, step = 0, 0
  while True:
    while order.shape[0] < global_batch:
      perm = np.random.default_rng([ss.entropy, 0, epoch]).permutation(pool)
      order = np.concatenate([order, perm])
      epoch += 1
    rows = order[pi * b_host:(pi + 1) * b_host]
    order = order[global_batch:]
    imgs = images[rows]
    if augment is None and (out_hw is None or tuple(out_hw) == imgs.shape[1:3]):
      x = normalize(imgs)
    else:
      x = augment_images(imgs, np.random.default_rng([ss.entropy, 1, step, pi]), augment, out_hw)
    yield {"image": x, "label": labels[rows].astype(np.int32)}
    step += 1


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  """ceil(num_examples / global_batch): the eval steps every host runs."""
  return -(-num_examples // global_batch)


def eval_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int,
                 classes: Optional[Sequence[int]] = None, indices: Optional[np.ndarray] = None,
                 out_hw: Optional[Tuple[int, int]] = None, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[Batch]:
  """Deterministic host-local eval batches in dataset order; the last global batch is padded and masked.

  Global batch k holds examples [k * global_batch, (k + 1) * global_batch) of the selection; padded rows have a
  zero image, label 0 and mask False, so summing over mask counts every example exactly once.

  Yields:
    {'image': float32 (B_host, H, W, C), 'label': int32 (B_host,), 'mask': bool (B_host,)}.
  """
  pi, pc = _hosts(process_index, process_count)
  b_host = host_batch_size(global_batch, pc)
  labels = np.asarray(labels)
  sel = np.arange(labels.shape[0]) if indices is None else np.asarray(indices)
  sel = sel[class_indices(labels[sel], classes)]
  for k in range(num_eval_batches(sel.shape[0], global_batch)):
    rows = sel[k * global_batch + pi * b_host:k * global_batch + (pi + 1) * b_host]
    n = rows.shape[0]
    imgs = images[rows]
    if out_hw is not None and tuple(out_hw) != imgs.shape[1:3]:
      x = augment_images(imgs, np.random.default_rng(0), None, out_hw)  # Deterministic: a plain resize.
    else:
      x = normalize(imgs)
    image = np.zeros((b_host,) + x.shape[1:], np.float32)
    image[:n] = x
    label = np.zeros((b_host,), np.int32)
    label[:n] = labels[rows]
    mask = np.zeros((b_host,), bool)
    mask[:n] = True
    yield {"image": image, "label": label, "mask": mask}


# -- datasets ------------------------------------------------------------------------------------------------------

_HOLDOUT_PARTS = ("fit", "heldout")


@dataclasses.dataclass
class ArrayDataset:
  """A dataset held in memory as uint8 arrays, one (images, labels) pair per split.

  Split names may carry a holdout part: 'target_train:fit' and 'target_train:heldout' split 'target_train' per
  class (`split_holdout` with holdout_fraction, holdout_seed), e.g. for PCV's held-out training data.

  Attributes:
    name: registry name, recorded in provenance.
    load_split: split name -> (uint8 (N, H, W, C), int (N,)); called once per split, then cached.
    num_classes: size of the label space.
    class_names: one name per class.
    train_split: the fine-tuning split.
    test_split: the evaluation split.
    augment: default training augmentation config (None: none).
    holdout_fraction, holdout_seed: the per-class holdout of ':fit' / ':heldout' splits.
  """
  name: str
  load_split: Callable[[str], Tuple[np.ndarray, np.ndarray]]
  num_classes: int
  class_names: Tuple[str, ...]
  train_split: str
  test_split: str
  augment: Any = None
  holdout_fraction: float = 0.2
  holdout_seed: int = 0
  # As on TfdsDataset: None means the head's classes are exactly the dataset's classes, all scored.
  class_mask: Optional[np.ndarray] = None
  present_classes: Optional[np.ndarray] = None
  _cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)

  def arrays(self, split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, C), labels int32 (N,), selected indices) for `split` (with its holdout part)."""
    base, _, part = split.partition(":")
    if base not in self._cache:
      images, labels = self.load_split(base)
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{self.name}/{base}: images must be uint8 (N, H, W, C); got {images.dtype} "
                         f"{images.shape}.")
      self._cache[base] = (images, np.asarray(labels, np.int32))
    images, labels = self._cache[base]
    if not part:
      return images, labels, np.arange(labels.shape[0])
    if part not in _HOLDOUT_PARTS:
      raise ValueError(f"Unknown split part {part!r} in {split!r}; valid parts: {', '.join(_HOLDOUT_PARTS)}.")
    fit, held = split_holdout(labels, self.holdout_fraction, self.holdout_seed)
    return images, labels, fit if part == "fit" else held

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.arrays(self.train_split)[0].shape[1:])

  def labels(self, split: str) -> np.ndarray:
    """int32 (N,): the labels of `split` (with its holdout part), in order."""
    _, labels, idx = self.arrays(split)
    return labels[idx]

  def num_examples(self, split: str, classes: Optional[Sequence[int]] = None) -> int:
    _, labels, idx = self.arrays(split)
    return int(class_indices(labels[idx], classes).shape[0])

  def train_batches(self, split: Optional[str] = None, *, global_batch: int, seed: int,
                    classes: Optional[Sequence[int]] = None, augment: Any = "default",
                    process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[Batch]:
    """`train_batches` over `split` (default train_split); augment='default' uses self.augment."""
    images, labels, idx = self.arrays(split or self.train_split)
    return train_batches(images, labels, global_batch=global_batch, seed=seed, classes=classes,
                         augment=self.augment if augment == "default" else augment, indices=idx,
                         process_index=process_index, process_count=process_count)

  def eval_batches(self, split: Optional[str] = None, *, global_batch: int,
                   classes: Optional[Sequence[int]] = None, process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[Batch]:
    """`eval_batches` over `split` (default test_split)."""
    images, labels, idx = self.arrays(split or self.test_split)
    return eval_batches(images, labels, global_batch=global_batch, classes=classes, indices=idx,
                        process_index=process_index, process_count=process_count)

  def provenance(self) -> Dict[str, Any]:
    return {"name": self.name, "num_classes": self.num_classes, "train_split": self.train_split,
            "test_split": self.test_split, "holdout_fraction": self.holdout_fraction,
            "holdout_seed": self.holdout_seed}


# -- tf.data path for the real benchmarks --------------------------------------------------------------------------

# ImageNet-style recipe (paper.md, Office-Home): RandomResizedCrop(scale 0.7-1), flip, colour jitter 0.3, grayscale.
OFFICE_HOME_AUGMENT = dict(crop_scale=(0.7, 1.0), flip=True, brightness=0.3, contrast=0.3, saturation=0.3,
                           hue=0.0, grayscale_prob=0.1)
# ImageNet-R/-Sketch and VTAB: the same recipe (the official code uses one transform for all).
IMAGENET_AUGMENT = OFFICE_HOME_AUGMENT


def _tfds_common(cfg: Any, augment_default: Any) -> Dict[str, Any]:
  """The TfdsDataset fields that every TFDS-backed dataset reads from its config."""
  return dict(image_size=int(_config_get(cfg, "image_size", 224)), data_dir=_config_get(cfg, "data_dir", None),
              manual_dir=_config_get(cfg, "manual_dir", None), augment=_config_get(cfg, "augment", augment_default),
              holdout_fraction=_config_get(cfg, "holdout_fraction", 0.2),
              holdout_seed=_config_get(cfg, "holdout_seed", 0), split_seed=_config_get(cfg, "split_seed", 0),
              eval_crop_fraction=_config_get(cfg, "eval_crop_fraction", 0.875),
              shuffle_buffer=_config_get(cfg, "shuffle_buffer", 10_000))


@dataclasses.dataclass
class TfdsDataset:
  """A TFDS dataset read through tf.data into the same host-local batches as `ArrayDataset`.

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
    base, _, part = split.partition(":")
    tfds_split, idx = base, None
    if self.carve is not None and base in ("train", "test"):
      tfds_split = self.carve["from"]
      fit, held = split_holdout(self.labels(tfds_split), self.carve.get("test_fraction"), self.split_seed,
                                self.carve.get("test_per_class"))
      idx = fit if base == "train" else held
    if part:
      if part not in _HOLDOUT_PARTS:
        raise ValueError(f"Unknown split part {part!r} in {split!r}; valid parts: {', '.join(_HOLDOUT_PARTS)}.")
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
    pi, pc = _hosts(process_index, process_count)
    b_host = host_batch_size(global_batch, pc)
    augment = self.augment if augment == "default" else augment
    tfds_split, idx = self._resolve(split or self.train_split)
    if idx is None:
      ds = self._records(tfds.even_splits(tfds_split, n=pc, drop_remainder=False)[pi], shuffle_files=True,
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

  def eval_batches(self, split: Optional[str] = None, *, global_batch: int,
                   classes: Optional[Sequence[int]] = None, process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[Batch]:
    """Deterministic host-local eval batches of `split` (default test_split), padded and masked."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    pi, pc = _hosts(process_index, process_count)
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
      return {"image": _tf_center_crop(image, size, crop), "label": tf.cast(ex["label"], tf.int32),
              "mask": tf.constant(True)}

    ds = self._records(tfds_split).enumerate().filter(lambda i, ex: own[i]).map(lambda i, ex: ex)
    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    blank = {"image": tf.zeros((size, size, 3), tf.float32), "label": tf.constant(0, tf.int32),
             "mask": tf.constant(False)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))
    for batch in ds.batch(b_host).prefetch(2).as_numpy_iterator():
      yield batch

  def provenance(self) -> Dict[str, Any]:
    out = {"name": self.name, "builder": self.builder_name, "train_split": self.train_split,
           "test_split": self.test_split, "image_size": self.image_size, "carve": dict(self.carve or {}),
           "split_seed": self.split_seed, "holdout_fraction": self.holdout_fraction,
           "holdout_seed": self.holdout_seed}
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
  scale = _config_get(cfg, "crop_scale", None)
  if scale is not None:
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=tuple(_config_get(cfg, "crop_ratio", (3 / 4, 4 / 3))),
        area_range=tuple(scale), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
  x = tf.image.resize(image, (size, size), method="bilinear") / 255.0
  if _config_get(cfg, "flip", False):
    x = tf.image.stateless_random_flip_left_right(x, seeds[1])

  def factor(strength, s):
    return tf.random.stateless_uniform([], s, 1.0 - strength, 1.0 + strength)

  gray = lambda v: tf.reduce_sum(v * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)
  if _config_get(cfg, "brightness", 0.0):
    x = tf.clip_by_value(x * factor(_config_get(cfg, "brightness", 0.0), seeds[2]), 0.0, 1.0)
  if _config_get(cfg, "contrast", 0.0):
    mean = tf.reduce_mean(gray(x))
    x = tf.clip_by_value(mean + (x - mean) * factor(_config_get(cfg, "contrast", 0.0), seeds[3]), 0.0, 1.0)
  if _config_get(cfg, "saturation", 0.0):
    g = gray(x)
    x = tf.clip_by_value(g + (x - g) * factor(_config_get(cfg, "saturation", 0.0), seeds[4]), 0.0, 1.0)
  if _config_get(cfg, "hue", 0.0):
    x = tf.image.stateless_random_hue(x, _config_get(cfg, "hue", 0.0), seeds[5])
  p_gray = _config_get(cfg, "grayscale_prob", 0.0)
  if p_gray:
    to_gray = tf.random.stateless_uniform([], seeds[6]) < p_gray
    x = tf.where(to_gray, tf.broadcast_to(gray(x), tf.shape(x)), x)
  return x * 2.0 - 1.0


# -- registry ------------------------------------------------------------------------------------------------------

# Glyphs: mild augmentation, no flip (a mirrored glyph can be another class or none).
GLYPHS_AUGMENT = dict(crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), brightness=0.3, contrast=0.3)


def _glyphs(cfg: Any) -> ArrayDataset:
  from ftcal_jax.datasets import fonts, glyphs  # pylint: disable=g-import-not-at-top  (builds only when asked)
  builder_config = _config_get(cfg, "config", "default")
  data_dir = _config_get(cfg, "data_dir", None)
  load = lambda split: glyphs.load_glyphs_arrays(split, config=builder_config, data_dir=data_dir)
  return ArrayDataset(
      name="glyphs", load_split=load, num_classes=len(fonts.CLASSES), class_names=tuple(fonts.CLASSES),
      train_split=_config_get(cfg, "train_split", "target_train"),
      test_split=_config_get(cfg, "test_split", "target_test"),
      augment=_config_get(cfg, "augment", GLYPHS_AUGMENT),
      holdout_fraction=_config_get(cfg, "holdout_fraction", 0.2),
      holdout_seed=_config_get(cfg, "holdout_seed", 0))


def _imagenet_variant(name: str, carve: Mapping[str, Any]) -> Callable[[Any], "TfdsDataset"]:
  def make(cfg):
    from ftcal_jax.datasets import imagenet_variants as iv  # pylint: disable=g-import-not-at-top
    head_classes = _config_get(cfg, "head_classes", "mask")
    return TfdsDataset(
        name=name, builder_name=name, train_split="train", test_split="test", carve=carve,
        class_mask=iv.class_mask(name, head_classes), present_classes=iv.present_classes(name),
        extra_provenance=iv.provenance(name, head_classes), **_tfds_common(cfg, IMAGENET_AUGMENT))
  return make


def _tfds_plain(builder_name: str, train: str = "train", test: str = "test",
                domain_default: Optional[str] = None, augment: Any = None) -> Callable[[Any], "TfdsDataset"]:
  def make(cfg):
    full = builder_name
    if domain_default is not None:
      full = f"{builder_name}/{_config_get(cfg, 'domain', domain_default)}"
    return TfdsDataset(name=builder_name, builder_name=full, train_split=_config_get(cfg, "train_split", train),
                       test_split=_config_get(cfg, "test_split", test),
                       **_tfds_common(cfg, augment or IMAGENET_AUGMENT))
  return make


def _office_home(cfg: Any) -> "TfdsDataset":
  from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top  (registers the builder)
  domain = _config_get(cfg, "domain", "Art")
  if domain not in office_home.DOMAINS:
    raise ValueError(f"Unknown Office-Home domain {domain!r}; valid: {', '.join(office_home.DOMAINS)}.")
  return TfdsDataset(name="office_home", builder_name=f"office_home/{domain}", train_split="train",
                     test_split="test", prepare=True, **_tfds_common(cfg, OFFICE_HOME_AUGMENT))


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
  name = _config_get(config, "name", None)
  if name not in _REGISTRY:
    raise ValueError(f"Unknown dataset {name!r}. Valid names: {', '.join(list_datasets())}.")
  return _REGISTRY[name](config)
