"""The dataset interface: what the training loop reads from a dataset, whichever source holds it.

Two sources implement it: `array_source.ArrayDataset` (uint8 arrays in memory: the offline Glyphs benchmark, tests)
and `tfds_source.TfdsDataset` (the paper's benchmarks through tf.data). `registry.get_dataset(config.dataset)`
builds one by name. This module is dependency-free (numpy and typing only).

Split names: a source's split ('target_train', 'train', ...), optionally with a holdout part, 'SPLIT:fit' or
'SPLIT:heldout': a seeded per-class split of SPLIT (`input_pipeline.split_holdout` with the dataset's
holdout_fraction and holdout_seed), e.g. PCV's held-out training data.

Batches are dicts of host-local numpy arrays (input_pipeline's module docstring):
  train: {'image': float32 (B_host, H, W, C) in [-1, 1], 'label': int32 (B_host,)};
  eval: the same plus 'mask': bool (B_host,), False on padded rows.
"""

from typing import Any, Dict, Iterator, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

HOLDOUT_PARTS = ("fit", "heldout")


def split_part(split: str) -> Tuple[str, str]:
  """'target_train:fit' -> ('target_train', 'fit'); the part is '' for a whole split.

  Raises:
    ValueError: a part other than HOLDOUT_PARTS.
  """
  base, _, part = split.partition(":")
  if part and part not in HOLDOUT_PARTS:
    raise ValueError(f"Unknown split part {part!r} in {split!r}; valid parts: {', '.join(HOLDOUT_PARTS)}.")
  return base, part


def config_get(cfg: Any, key: str, default: Any) -> Any:
  """cfg[key] from a ConfigDict, dict or object; `default` when cfg is None or the field is missing or None."""
  if cfg is None:
    return default
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  return default if value is None else value


@runtime_checkable
class Dataset(Protocol):
  """A labelled image dataset with a training and a test split, read as host-local batches.

  Attributes:
    name: registry name, recorded in provenance.
    num_classes: size of the label space (the head's width).
    class_names: one name per class.
    image_shape: (H, W, C) of the batches' images.
    train_split: the fine-tuning split.
    test_split: the evaluation split.
    present_classes: int (K,), the classes the data can hold when that is fewer than num_classes (ImageNet-R's 200
      of a 1000-way head), else None: the class split is drawn among them.
    class_mask: bool (num_classes,), the head classes scored by every argmax, else None: all are scored.
  """
  name: str
  train_split: str
  test_split: str
  present_classes: Optional[np.ndarray]
  class_mask: Optional[np.ndarray]

  @property
  def num_classes(self) -> int:
    ...

  @property
  def class_names(self) -> Tuple[str, ...]:
    ...

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    ...

  def num_examples(self, split: str, classes: Optional[Sequence[int]] = None) -> int:
    """The examples of `split` whose label is in `classes` (all when None)."""
    ...

  def train_batches(self, split: Optional[str] = None, *, global_batch: int, seed: int,
                    classes: Optional[Sequence[int]] = None, augment: Any = "default",
                    process_index: Optional[int] = None,
                    process_count: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
    """Infinite, seeded training batches of `split` (default train_split) restricted to `classes`.

    augment='default' uses the dataset's own augmentation, None none, else an augmentation config.
    """
    ...

  def eval_batches(self, split: Optional[str] = None, *, global_batch: int, classes: Optional[Sequence[int]] = None,
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
    """Every example of `split` (default test_split) in `classes` once, in order; the last batch padded, masked."""
    ...

  def provenance(self) -> Dict[str, Any]:
    """What the report records about the data (name, splits, holdout, ...)."""
    ...


@runtime_checkable
class NaturalSplitDataset(Dataset, Protocol):
  """A dataset that defines its own S and U (iWildCam: the species of the fine-tuning split, and those only in
  the test split); class_split.kind = 'natural' uses it."""

  def natural_split(self) -> Tuple[np.ndarray, np.ndarray]:
    """(seen, absent): sorted int class ids."""
    ...
