"""The paper's real benchmarks through TFDS, offline: tfds.testing.mock_data, and Office-Home from a fake zip."""

import collections
import io
import itertools
import zipfile

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from ftcal_jax.datasets import base  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import registry  # pylint: disable=g-import-not-at-top
from ftcal_jax.class_split import ClassSplit  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import imagenet_variants as iv  # pylint: disable=g-import-not-at-top

SIZE = 16


def _check_batches(ds, split_train, split_test, classes, num_test):
  train = list(
      itertools.islice(
          ds.train_batches(split_train, global_batch=4, seed=0, classes=classes, process_index=0, process_count=1), 2))
  for b in train:
    assert b["image"].shape == (4, SIZE, SIZE, 3) and b["image"].dtype == np.float32
    assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["label"].dtype == np.int32 and set(b["label"]) <= set(classes)
  evals = list(ds.eval_batches(split_test, global_batch=4, process_index=0, process_count=1))
  assert all(b["image"].shape == (4, SIZE, SIZE, 3) for b in evals)
  assert sum(int(b["mask"].sum()) for b in evals) == num_test
  assert len(evals) == -(-num_test // 4)


@pytest.mark.parametrize("name, extra, train, test", [
    ("domainnet", {"domain": "sketch"}, "train", "test"),
    ("caltech101", {}, "train", "test"),
    ("dtd", {}, "train", "test"),
    ("oxford_flowers102", {}, "train", "test"),
])
def test_tfds_benchmarks_under_mock_data(name, extra, train, test):
  with tfds.testing.mock_data(num_examples=12):
    ds = registry.get_dataset({"name": name, "image_size": SIZE, **extra})
    assert ds.num_classes == len(
        ds.class_names) == {"domainnet": 345, "caltech101": 102, "dtd": 47, "oxford_flowers102": 102}[name]
    labels = ds.labels(train)
    seen = sorted(set(labels.tolist()))[:3]  # Classes that occur in the mock data.
    _check_batches(ds, train, test, seen, num_test=12)
    assert ds.num_examples(train, classes=seen) == int(np.isin(labels, seen).sum())


def test_tfds_datasets_are_datasets():
  with tfds.testing.mock_data(num_examples=4):
    for name in ("dtd", "imagenet_r"):  # A plain builder and one with a head mask.
      ds = registry.get_dataset({"name": name, "image_size": SIZE})
      assert isinstance(ds, base.Dataset)  # runtime_checkable: reads every member, properties included.
      assert (ds.class_mask is None) == (name == "dtd") and (ds.present_classes is None) == (name == "dtd")


def test_imagenet_sketch_carves_10_test_images_per_class():
  labels = np.repeat([0, 5, 999], [13, 11, 1])  # A class with one image stays in train.
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(labels)):
    ds = registry.get_dataset({"name": "imagenet_sketch", "image_size": SIZE})
    assert ds.num_classes == 1000 and ds.class_names[0] == "n01440764"
    np.testing.assert_array_equal(ds.labels("test"), labels)  # The one TFDS split, 1000-way.
    _, test_idx = ds._resolve("test")
    _, train_idx = ds._resolve("train")
    assert not set(test_idx) & set(train_idx) and len(test_idx) + len(train_idx) == 25
    assert collections.Counter(labels[test_idx].tolist()) == {0: 10, 5: 10}
    assert ds.class_mask.all()  # Sketch covers all 1000 head classes.
    _check_batches(ds, "train", "test", [0, 999], num_test=20)


def _fake_as_dataset(labels):
  """A mock as_dataset that yields JPEG examples with the given labels, in order."""
  rng = np.random.default_rng(0)
  encoded = []
  for _ in labels:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buf, format="JPEG")
    encoded.append(buf.getvalue())

  def as_dataset(self, split, decoders=None, **kwargs):
    del split, kwargs
    ds = tf.data.Dataset.from_tensor_slices({
        "image": encoded, "label": np.asarray(labels, np.int64), "file_name": [f"{i}.jpg" for i in range(len(labels))]
    })
    return ds.map(lambda ex: self.info.features.decode_example(ex, decoders=decoders))

  return as_dataset


@pytest.mark.parametrize("head_classes", ["mask", "keep"])
def test_imagenet_r_label_map_and_head_classes(head_classes):
  head = iv.imagenet_r_head_indices()
  assert head.shape == (200,) and len(set(head.tolist())) == 200
  wnids = iv.imagenet1k_wnids()
  assert [wnids[i] for i in head] == list(iv.IMAGENET_R_WNIDS)
  assert wnids[head[0]] == "n01443537"  # goldfish, head index 1
  assert head[0] == 1
  labels = np.repeat(head[:10], 5)  # 10 classes x 5 images
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset(labels)):
    ds = registry.get_dataset({"name": "imagenet_r", "image_size": SIZE, "head_classes": head_classes})
    assert ds.num_classes == 1000
    assert int(ds.class_mask.sum()) == (200 if head_classes == "mask" else 1000)
    assert ds.provenance()["head_classes"] == head_classes
    np.testing.assert_array_equal(ds.labels("test"), labels)
    split = ClassSplit.random(1000, 100, seed=0, candidates=ds.present_classes)
    assert set(split.seen) | set(split.absent) == set(head.tolist())
    assert ds.num_examples("train") == 40 and ds.num_examples("test") == 10  # round(0.2 * 5) per class
    seen = [int(c) for c in head[:5]]
    _check_batches(ds, "train", "test", seen, num_test=10)


def test_imagenet_r_rejects_labels_outside_its_200_classes():
  with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset([0, 1, 2])):  # 0 (tench) is not in ImageNet-R
    ds = registry.get_dataset({"name": "imagenet_r", "image_size": SIZE})
    with pytest.raises(ValueError, match=r"labels \[0\] outside"):
      ds.labels("test")


def test_tfds_eval_two_hosts_and_holdout_parts():
  with tfds.testing.mock_data(num_examples=23):
    ds = registry.get_dataset({"name": "dtd", "image_size": SIZE, "holdout_fraction": 0.5})
    labels = ds.labels("test")
    got = collections.Counter()
    steps = []
    for p in range(2):
      batches = list(ds.eval_batches("test", global_batch=8, process_index=p, process_count=2))
      steps.append(len(batches))
      for b in batches:
        assert b["label"].shape == (4,)
        got.update(b["label"][b["mask"]].tolist())
    assert steps == [3, 3]
    assert got == collections.Counter(labels.tolist())
    n_fit, n_held = ds.num_examples("train:fit"), ds.num_examples("train:heldout")
    assert n_fit + n_held == 23 and n_held > 0
    held = list(ds.eval_batches("train:heldout", global_batch=4, process_index=0, process_count=1))
    assert sum(int(b["mask"].sum()) for b in held) == n_held


def _fake_office_home_zip(path, domain_folder="Art", per_class=4, drop_class=None):
  rng = np.random.default_rng(0)
  from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(path, "w") as zf:
    for cls in office_home.CLASSES:
      if cls == drop_class:
        continue
      for i in range(per_class):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format="JPEG")
        zf.writestr(f"OfficeHomeDataset_10072016/{domain_folder}/{cls}/{i + 1:05d}.jpg", buf.getvalue())
    zf.writestr("OfficeHomeDataset_10072016/ImageInfo.csv", "image,license\n")


def test_office_home_from_fake_zip(tmp_path):
  from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  manual.mkdir()
  _fake_office_home_zip(manual / office_home.ZIP_NAME, domain_folder="Real World")
  ds = registry.get_dataset({
      "name": "office_home", "domain": "Real_World", "image_size": SIZE, "data_dir": str(tmp_path / "tfds"),
      "manual_dir": str(manual)
  })
  assert ds.num_classes == 65 and ds.class_names == office_home.CLASSES
  assert ds.num_examples("train") == 65 * 3 and ds.num_examples("test") == 65  # 7:3 of 4 per class
  np.testing.assert_array_equal(np.bincount(ds.labels("test"), minlength=65), np.ones(65))
  split = ClassSplit.random(65, 30, seed=0)
  _check_batches(ds, "train", "test", list(split.seen), num_test=65)
  assert ds.num_examples("test", classes=split.absent) == 35
  # Seeded: a second build of the split gives the same test files.
  again = office_home.per_class_split({c: [f"x/{c}/{i}.jpg" for i in range(4)] for c in office_home.CLASSES})
  first = office_home.per_class_split({c: [f"x/{c}/{i}.jpg" for i in range(4)] for c in office_home.CLASSES})
  assert again == first and len(first[1]) == 65


def test_office_home_missing_class_fails_clearly(tmp_path):
  from ftcal_jax.datasets import office_home  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  manual.mkdir()
  _fake_office_home_zip(manual / office_home.ZIP_NAME, per_class=2, drop_class="Mop")
  with pytest.raises(ValueError, match=r"missing class folders \['Mop'\]"):
    registry.get_dataset(
        {"name": "office_home", "domain": "Art", "data_dir": str(tmp_path / "tfds"),
         "manual_dir": str(manual)}).builder()
  with pytest.raises(ValueError, match="Unknown Office-Home domain"):
    registry.get_dataset({"name": "office_home", "domain": "Sketch"})
