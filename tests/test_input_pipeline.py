"""In-memory input pipeline: class filtering, epoch shuffles, eval padding, host slices, global sharding."""

import collections
import inspect
import itertools
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from ftcal_jax import input_pipeline as ip
from ftcal_jax.datasets import array_source
from ftcal_jax.datasets import base
from ftcal_jax.datasets import registry
from ftcal_jax.datasets import tfds_source


def _data(n=50, num_classes=5, hw=8, c=1, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
  labels = np.arange(n) % num_classes
  # Tag each image with its index, so tests can recover which example a row holds.
  images[:, 0, 0, 0] = np.arange(n)
  return images, labels.astype(np.int32)


def _ids(batch):
  return np.rint((batch["image"][:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def test_normalize_range():
  x = ip.normalize(np.array([0, 255, 128], np.uint8))
  np.testing.assert_allclose(x, [-1.0, 1.0, 128 / 127.5 - 1.0], atol=1e-6)
  assert x.dtype == np.float32


def test_train_filters_to_classes_and_reshuffles_each_epoch():
  images, labels = _data(n=50)
  seen = [1, 3]  # 20 examples
  it = ip.train_batches(images, labels, global_batch=10, seed=0, classes=seen, process_count=1, process_index=0)
  batches = list(itertools.islice(it, 6))  # 3 epochs of 20
  for b in batches:
    assert b["image"].shape == (10, 8, 8, 1) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32
    assert set(b["label"]) <= set(seen)
    np.testing.assert_array_equal(labels[_ids(b)], b["label"])
  epochs = [np.concatenate([_ids(batches[2 * e]), _ids(batches[2 * e + 1])]) for e in range(3)]
  expected = np.flatnonzero(np.isin(labels, seen))
  for e in epochs:
    np.testing.assert_array_equal(np.sort(e), expected)  # Each epoch visits every seen example once.
  assert not np.array_equal(epochs[0], epochs[1])  # ...in a new order.
  again = list(
      itertools.islice(
          ip.train_batches(images, labels, global_batch=10, seed=0, classes=seen, process_count=1, process_index=0), 6))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["image"], b["image"])  # Seeded: the same stream again.


def test_train_batches_span_epoch_boundaries():
  images, labels = _data(n=12, num_classes=3)
  it = ip.train_batches(images, labels, global_batch=8, seed=1, process_count=1, process_index=0)
  ids = np.concatenate([_ids(next(it)) for _ in range(3)])  # 24 = two epochs of 12
  assert collections.Counter(ids.tolist()) == {i: 2 for i in range(12)}
  np.testing.assert_array_equal(np.sort(ids[:12]), np.arange(12))


def test_train_host_slices_partition_the_global_batch():
  images, labels = _data(n=40)
  kw = dict(global_batch=8, seed=3, process_count=2)
  h0 = ip.train_batches(images, labels, process_index=0, **kw)
  h1 = ip.train_batches(images, labels, process_index=1, **kw)
  one = ip.train_batches(images, labels, global_batch=8, seed=3, process_count=1, process_index=0)
  for _ in range(7):
    a, b, g = next(h0), next(h1), next(one)
    assert a["label"].shape == (4,)
    np.testing.assert_array_equal(np.concatenate([_ids(a), _ids(b)]), _ids(g))
  with pytest.raises(ValueError, match="multiple of the process count"):
    next(ip.train_batches(images, labels, global_batch=7, seed=0, process_count=2, process_index=0))


def test_train_unknown_classes_fail():
  images, labels = _data(n=10)
  with pytest.raises(ValueError, match="No training examples"):
    next(ip.train_batches(images, labels, global_batch=2, seed=0, classes=[9], process_count=1))


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_pads_last_batch_and_counts_each_example_once(process_count):
  images, labels = _data(n=23)
  classes = [0, 2, 4]  # 5 + 5 + 4 = 14 examples
  seen_ids = []
  steps = []
  for p in range(process_count):
    batches = list(
        ip.eval_batches(images, labels, global_batch=4, classes=classes, process_index=p, process_count=process_count))
    steps.append(len(batches))
    for b in batches:
      assert b["image"].shape == (4 // process_count, 8, 8, 1)
      assert b["mask"].dtype == np.bool_
      seen_ids.extend(_ids(b)[b["mask"]].tolist())
      assert np.all(b["image"][~b["mask"]] == 0) and np.all(b["label"][~b["mask"]] == 0)
      np.testing.assert_array_equal(labels[_ids(b)[b["mask"]]], b["label"][b["mask"]])
  assert steps == [4] * process_count  # ceil(14 / 4) on every host.
  assert sorted(seen_ids) == np.flatnonzero(np.isin(labels, classes)).tolist()


def test_eval_is_deterministic_and_in_order():
  images, labels = _data(n=10)
  ids = np.concatenate(
      [_ids(b)[b["mask"]] for b in ip.eval_batches(images, labels, global_batch=4, process_count=1, process_index=0)])
  np.testing.assert_array_equal(ids, np.arange(10))


def test_split_holdout_per_class():
  labels = np.repeat(np.arange(4), [10, 5, 2, 1])
  fit, held = ip.split_holdout(labels, 0.2, seed=0)
  assert set(fit) | set(held) == set(range(18)) and not set(fit) & set(held)
  assert collections.Counter(labels[held].tolist()) == {0: 2, 1: 1, 2: 1}  # Class 3 has one example: fit only.
  np.testing.assert_array_equal(held, ip.split_holdout(labels, 0.2, seed=0)[1])
  assert not np.array_equal(held, ip.split_holdout(labels, 0.2, seed=1)[1])
  with pytest.raises(ValueError, match="holdout fraction"):
    ip.split_holdout(labels, 1.0, seed=0)


def test_augment_shapes_range_and_seed():
  images, _ = _data(n=16, hw=12, c=3)
  cfg = dict(crop_scale=(0.5, 1.0), flip=True, brightness=0.3, contrast=0.3, saturation=0.3, grayscale_prob=0.5)
  a = ip.augment_images(images, np.random.default_rng(0), cfg, out_hw=(10, 10))
  b = ip.augment_images(images, np.random.default_rng(0), cfg, out_hw=(10, 10))
  c = ip.augment_images(images, np.random.default_rng(1), cfg, out_hw=(10, 10))
  assert a.shape == (16, 10, 10, 3) and a.dtype == np.float32
  assert a.min() >= -1.0 and a.max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_augment_identity_window_and_flip_are_exact():
  images, _ = _data(n=4, hw=6, c=1)
  plain = ip.augment_images(images, np.random.default_rng(0), None)
  np.testing.assert_allclose(plain, ip.normalize(images), atol=1e-6)
  flipped = ip._resample(images, np.zeros(4), np.zeros(4), np.full(4, 6.0), np.full(4, 6.0), np.ones(4, bool), (6, 6))
  np.testing.assert_allclose(flipped, images[:, :, ::-1].astype(np.float32), atol=1e-4)


def test_shard_batch_on_8_devices():
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  batch = {"image": np.arange(16 * 2, dtype=np.float32).reshape(16, 2), "label": np.arange(16, dtype=np.int32)}
  out = ip.shard_batch(batch, mesh)
  assert out["image"].shape == (16, 2)
  assert len(out["label"].addressable_shards) == 8
  assert out["label"].addressable_shards[3].data.tolist() == [6, 7]
  np.testing.assert_array_equal(np.asarray(out["image"]), batch["image"])
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    ip.shard_batch({"label": np.arange(12)}, mesh)


def test_array_dataset_holdout_splits_and_registry():
  images, labels = _data(n=40)
  ds = array_source.ArrayDataset(name="toy", load_split=lambda s: (images, labels), num_classes=5,
                                 class_names=tuple("abcde"), train_split="train", test_split="test",
                                 holdout_fraction=0.25)
  assert ds.image_shape == (8, 8, 1)
  assert ds.num_examples("train") == 40
  assert ds.num_examples("train:heldout") == 10 and ds.num_examples("train:fit") == 30
  assert ds.num_examples("train:fit", classes=[0, 1]) == 12
  assert ds.class_mask is None and ds.labels("train:heldout").shape == (10,)
  held = np.concatenate(
      [_ids(b)[b["mask"]] for b in ds.eval_batches("train:heldout", global_batch=4, process_count=1, process_index=0)])
  fit = np.concatenate([
      _ids(next(it))
      for it in [ds.train_batches("train:fit", global_batch=30, seed=0, process_count=1, process_index=0)]
  ])
  assert not set(held) & set(fit) and len(set(fit)) == 30
  with pytest.raises(ValueError, match="valid parts"):
    ds.num_examples("train:oops")
  registry.register_dataset("toy", lambda cfg: ds)
  assert registry.get_dataset(ml_collections.ConfigDict({"name": "toy"})) is ds
  with pytest.raises(ValueError, match="Valid names: .*glyphs"):
    registry.get_dataset({"name": "nope"})


def test_glyphs_small_through_the_registry(tmp_path):
  glyphs = pytest.importorskip("ftcal_jax.datasets.glyphs")
  del glyphs  # The registry imports it; skip only while the builder has not landed.
  ds = registry.get_dataset({"name": "glyphs", "config": "small", "data_dir": str(tmp_path)})
  assert ds.num_classes == 47 and len(ds.class_names) == 47
  assert ds.image_shape == (32, 32, 1)
  _, labels, _ = ds.arrays("target_train")
  assert set(np.unique(labels)) == set(range(47))
  seen = list(range(0, 47, 2))
  b = next(ds.train_batches(global_batch=16, seed=0, classes=seen, process_index=0, process_count=1))
  assert b["image"].shape == (16, 32, 32, 1) and set(b["label"]) <= set(seen)
  assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
  n_test = ds.num_examples("target_test")
  evals = list(ds.eval_batches(global_batch=16, process_index=0, process_count=1))
  assert sum(int(e["mask"].sum()) for e in evals) == n_test
  assert ds.num_examples("target_train:fit") + ds.num_examples("target_train:heldout") == labels.shape[0]


def _protocol_members():
  """The members of base.Dataset: its annotated attributes, properties and methods."""
  members = set(base.Dataset.__annotations__)
  members |= {
      k for k, v in vars(base.Dataset).items() if not k.startswith("_") and (callable(v) or isinstance(v, property))
  }
  return members


def test_both_sources_implement_the_dataset_protocol():
  images, labels = _data(n=10)
  array_ds = array_source.ArrayDataset(name="toy", load_split=lambda s: (images, labels), num_classes=5,
                                       class_names=tuple("abcde"), train_split="train", test_split="test")
  tfds_ds = tfds_source.TfdsDataset(name="dtd", builder_name="dtd", train_split="train", test_split="test")
  members = _protocol_members()
  assert {
      "name", "num_classes", "class_names", "image_shape", "train_split", "test_split", "present_classes", "class_mask",
      "num_examples", "train_batches", "eval_batches", "provenance"
  } <= members
  for ds in (array_ds, tfds_ds):
    for member in members:
      # getattr_static raises AttributeError on a missing member, and does not run TfdsDataset's properties (they
      # would build the TFDS builder). A member must be the source's own, not a protocol stub.
      assert inspect.getattr_static(ds, member) is not vars(base.Dataset).get(member, object()), member
    assert ds.present_classes is None and ds.class_mask is None  # Attributes, None when the data has no such limits.
  assert isinstance(array_ds, base.Dataset)  # runtime_checkable: every member present.
  assert not isinstance(object(), base.Dataset)


def test_importing_the_registry_loads_no_tfds_tensorflow_or_fonts():
  code = ("import sys; import ftcal_jax.datasets.registry as r; r.list_datasets(); "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'PIL', "
          "'fontTools', 'matplotlib') or m in ('ftcal_jax.datasets.fonts', 'ftcal_jax.datasets.glyphs', "
          "'ftcal_jax.datasets.glyph_render', 'ftcal_jax.datasets.tfds_source')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert out.strip() == "[]", out


def test_model_input_affine_maps_minus_one_one_to_the_checkpoints_normalisation():
  """The pipeline's [-1, 1] images become (x01 - mean) / std on device; mean = std = 0.5 is the identity (None)."""
  assert ip.model_input_affine((0.5,), (0.5,)) is None
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  affine = ip.model_input_affine(mean, std)
  x01 = np.random.default_rng(0).uniform(size=(2, 4, 4, 3)).astype(np.float32)
  got = np.asarray(ip.apply_input_affine(jax.numpy.asarray(2.0 * x01 - 1.0), affine))
  np.testing.assert_allclose(got, (x01 - np.float32(mean)) / np.float32(std), rtol=1e-5, atol=1e-5)
  x = np.ones((1, 2, 2, 1), np.float32)
  assert ip.apply_input_affine(x, None) is x
