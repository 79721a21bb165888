"""Input pipeline: host-local training and evaluation batches, and their global sharding.

Every batch is a dict of host-local numpy arrays
  {'image': float32 (B_host, H, W, C) in [-1, 1], 'label': int32 (B_host,)}
plus 'mask': bool (B_host,) for evaluation, where B_host = global_batch // process_count and host p holds rows
[p * B_host, (p + 1) * B_host) of the global batch. `shard_batch` turns it into one global `jax.Array` per key.

This module holds the numpy side: host slices and sharding, the vectorised augmentation, per-class holdouts and
the in-memory iterators. Two sources implement the dataset interface (`datasets.base.Dataset`) on top of it:
  * `datasets.array_source.ArrayDataset`: small datasets held in memory as uint8 arrays (the offline Glyphs
    benchmark, tests), batched by `train_batches` / `eval_batches` below, seeded per (seed, step, host).
  * `datasets.tfds_source.TfdsDataset`: the paper's real benchmarks, read from TFDS through tf.data.

`datasets.registry.get_dataset(config)` picks one by name.
"""

import math
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ftcal_jax.datasets.base import config_get

Batch = Dict[str, np.ndarray]

# -- hosts and sharding --------------------------------------------------------------------------------------------


def host_batch_size(global_batch: int, process_count: Optional[int] = None) -> int:
  """B_host = global_batch // process_count, with an error that names the fix when it does not divide."""
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"The global batch ({global_batch}) must be a positive multiple of the process count "
                     f"({process_count}); change batch_size.")
  return global_batch // process_count


def resolve_hosts(process_index: Optional[int], process_count: Optional[int]) -> Tuple[int, int]:
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


InputAffine = Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]


def model_input_affine(mean: Sequence[float], std: Sequence[float]) -> InputAffine:
  """(scale, shift) that take the pipeline's [-1, 1] images to (x01 - mean) / std, the checkpoint's normalisation.

  Args:
    mean, std: per-channel statistics of [0, 1] images (one value, or one per channel), e.g. ImageNet's.

  Returns:
    None when that is the identity (mean = std = 0.5: the [-1, 1] images as they are), else a hashable
    ((scale,) * C, (shift,) * C) for `apply_input_affine`: x01 = (x + 1) / 2, so the map is
    x * 0.5 / std + (0.5 - mean) / std.
  """
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  if np.all(mean == 0.5) and np.all(std == 0.5):
    return None
  return tuple((0.5 / std).tolist()), tuple(((0.5 - mean) / std).tolist())


def apply_input_affine(images, affine: InputAffine):
  """images (..., C) * scale + shift on device (fused into the model's first layer by XLA); None is the identity."""
  if affine is None:
    return images
  return images * np.asarray(affine[0], np.float32) + np.asarray(affine[1], np.float32)


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
  scale = config_get(cfg, "crop_scale", None)
  do_flip = bool(config_get(cfg, "flip", False))
  flip = rng.uniform(size=b) < 0.5 if do_flip else np.zeros((b,), bool)
  if scale is not None or do_flip or out_hw != (h, w):
    if scale is not None:
      ratio = config_get(cfg, "crop_ratio", (3 / 4, 4 / 3))
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
  brightness = config_get(cfg, "brightness", 0.0)
  if brightness:
    x = np.clip(x * factor(brightness), 0.0, 1.0)
  contrast = config_get(cfg, "contrast", 0.0)
  if contrast:
    mean = gray(x).mean(axis=(1, 2, 3), keepdims=True)
    x = np.clip(mean + (x - mean) * factor(contrast), 0.0, 1.0)
  saturation = config_get(cfg, "saturation", 0.0)
  if saturation and c == 3:
    g = gray(x)
    x = np.clip(g + (x - g) * factor(saturation), 0.0, 1.0)
  p_gray = config_get(cfg, "grayscale_prob", 0.0)
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
                  classes: Optional[Sequence[int]] = None, augment: Any = None, indices: Optional[np.ndarray] = None,
                  out_hw: Optional[Tuple[int, int]] = None, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[Batch]:
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
  pi, pc = resolve_hosts(process_index, process_count)
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


def eval_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int, classes: Optional[Sequence[int]] = None,
                 indices: Optional[np.ndarray] = None, out_hw: Optional[Tuple[int, int]] = None,
                 process_index: Optional[int] = None, process_count: Optional[int] = None) -> Iterator[Batch]:
  """Deterministic host-local eval batches in dataset order; the last global batch is padded and masked.

  Global batch k holds examples [k * global_batch, (k + 1) * global_batch) of the selection; padded rows have a
  zero image, label 0 and mask False, so summing over mask counts every example exactly once.

  Yields:
    {'image': float32 (B_host, H, W, C), 'label': int32 (B_host,), 'mask': bool (B_host,)}.
  """
  pi, pc = resolve_hosts(process_index, process_count)
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
