"""The in-memory source: a dataset held as uint8 arrays, one (images, labels) pair per split.

It serves the offline Glyphs benchmark and the tests. Batches come from `input_pipeline.train_batches` /
`eval_batches` (vectorised numpy augmentation, seeded per (seed, step, host)). It implements the `base.Dataset`
protocol (structurally, as a Protocol is meant; tests/test_input_pipeline.py checks every member).
"""

import dataclasses
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from ftcal_jax import input_pipeline
from ftcal_jax.datasets import base


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
    class_mask, present_classes: as `base.Dataset`; None (the default) means the head's classes are exactly the
      dataset's classes, all scored.
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
  class_mask: Optional[np.ndarray] = None
  present_classes: Optional[np.ndarray] = None
  _cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)

  def arrays(self, split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, C), labels int32 (N,), selected indices) for `split` (with its holdout part)."""
    name, part = base.split_part(split)
    if name not in self._cache:
      images, labels = self.load_split(name)
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{self.name}/{name}: images must be uint8 (N, H, W, C); got {images.dtype} "
                         f"{images.shape}.")
      self._cache[name] = (images, np.asarray(labels, np.int32))
    images, labels = self._cache[name]
    if not part:
      return images, labels, np.arange(labels.shape[0])
    fit, held = input_pipeline.split_holdout(labels, self.holdout_fraction, self.holdout_seed)
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
    return int(input_pipeline.class_indices(labels[idx], classes).shape[0])

  def train_batches(self, split: Optional[str] = None, *, global_batch: int, seed: int,
                    classes: Optional[Sequence[int]] = None, augment: Any = "default",
                    process_index: Optional[int] = None,
                    process_count: Optional[int] = None) -> Iterator[input_pipeline.Batch]:
    """`input_pipeline.train_batches` over `split` (default train_split); augment='default' uses self.augment."""
    images, labels, idx = self.arrays(split or self.train_split)
    return input_pipeline.train_batches(images, labels, global_batch=global_batch, seed=seed, classes=classes,
                                        augment=self.augment if augment == "default" else augment, indices=idx,
                                        process_index=process_index, process_count=process_count)

  def eval_batches(self, split: Optional[str] = None, *, global_batch: int, classes: Optional[Sequence[int]] = None,
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[input_pipeline.Batch]:
    """`input_pipeline.eval_batches` over `split` (default test_split)."""
    images, labels, idx = self.arrays(split or self.test_split)
    return input_pipeline.eval_batches(images, labels, global_batch=global_batch, classes=classes, indices=idx,
                                       process_index=process_index, process_count=process_count)

  def provenance(self) -> Dict[str, Any]:
    return {
        "name": self.name, "num_classes": self.num_classes, "train_split": self.train_split,
        "test_split": self.test_split, "holdout_fraction": self.holdout_fraction, "holdout_seed": self.holdout_seed
    }
