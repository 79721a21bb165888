"""iWildCam (WILDS v2.0) from a fake archive: the builder, both archive forms, and the natural class split."""

import csv
import io
import itertools
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from ftcal_jax.class_split import ClassSplit  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import base  # pylint: disable=g-import-not-at-top
from ftcal_jax.datasets import registry  # pylint: disable=g-import-not-at-top

# split -> labels of its images: 'val' holds the only image of class 3, which is then in neither S nor U.
ROWS = {"train": [0, 0, 1, 2, 2, 1], "val": [3], "test": [1, 4, 5, 5, 2]}
SIZE = 16


def _write_archive(root, as_tar):
  """iwildcam_v2.0/{metadata.csv, train/*.jpg} under root, or the same as root/iwildcam_v2.0.tar.gz."""
  rng = np.random.default_rng(0)
  files = {}
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["", "split", "location_remapped", "y", "filename", "datetime"])  # WILDS's columns, in part.
  for i, (split, y) in enumerate((s, y) for s, ys in ROWS.items() for y in ys):
    name = f"{i:04x}.jpg"
    w.writerow([i, split, i % 3, y, name, "2013-01-01 00:00:00.000"])
    img = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)).save(img, format="JPEG")
    files[f"iwildcam_v2.0/train/{name}"] = img.getvalue()
  files["iwildcam_v2.0/metadata.csv"] = buf.getvalue().encode()
  if as_tar:
    with tarfile.open(os.path.join(root, "iwildcam_v2.0.tar.gz"), "w:gz") as tf:
      for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return
  for name, data in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)


@pytest.mark.parametrize("as_tar", [False, True])
def test_iwildcam_builder_and_natural_split(tmp_path, as_tar):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_archive(str(manual), as_tar)
  ds = registry.get_dataset(
      {"name": "iwildcam", "image_size": SIZE, "manual_dir": str(manual), "data_dir": str(tmp_path / "tfds")})
  assert isinstance(ds, base.Dataset) and isinstance(ds, base.NaturalSplitDataset)
  assert ds.num_classes == 182
  for split, labels in ROWS.items():
    assert sorted(ds.labels(split).tolist()) == sorted(labels)
  seen, absent = registry.natural_split(ds)
  assert seen.tolist() == [0, 1, 2] and absent.tolist() == [4, 5]
  split = ClassSplit.from_config({"kind": "natural"}, ds.num_classes, natural=(seen, absent))
  assert split.seen == (0, 1, 2) and split.absent == (4, 5) and 3 in split.remaining and len(split.remaining) == 177
  assert split.provenance == {"kind": "natural"}
  batches = itertools.islice(
      ds.train_batches("train", global_batch=4, seed=0, classes=list(seen), process_index=0, process_count=1), 2)
  for b in batches:
    assert b["image"].shape == (4, SIZE, SIZE, 3) and set(b["label"].tolist()) <= {0, 1, 2}
  evals = list(ds.eval_batches("test", global_batch=4, process_index=0, process_count=1))
  assert sum(int(b["mask"].sum()) for b in evals) == len(ROWS["test"])


def test_natural_split_is_refused_for_other_datasets_and_a_missing_archive_is_explained(tmp_path):
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(ValueError, match="kind='natural' needs a dataset"):
      registry.natural_split(registry.get_dataset({"name": "dtd", "image_size": SIZE}))
  ds = registry.get_dataset({"name": "iwildcam", "manual_dir": str(tmp_path), "data_dir": str(tmp_path / "t")})
  with pytest.raises(Exception, match="iwildcam_v2.0"):
    ds.labels("train")
  with pytest.raises(ValueError, match="needs the dataset's own"):
    ClassSplit.from_config({"kind": "natural"}, 10)


def test_iwildcam_smoke_run_uses_the_natural_split(tmp_path):
  train = pytest.importorskip("ftcal_jax.train")
  from ftcal_jax import recipes  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_archive(str(manual), as_tar=False)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = recipes.load_file(os.path.join(repo, "experiments", "iwildcam.py")).get_config("runlocal")
  with config.unlocked():
    config.dataset.manual_dir = str(manual)
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.pcv.enabled = False  # Two training images per class: too few for PCV's held-out part.
    config.write_figures = False
  report = train.train_and_evaluate(config, str(tmp_path / "work"))
  assert report["class_split"]["seen"] == [0, 1, 2] and report["class_split"]["absent"] == [4, 5]
  assert report["test_samples"] == {"all": 5, "seen": 2, "absent": 3}
  assert {"finetune", "oracle", "finetune+ALG"} <= set(report["methods"])
