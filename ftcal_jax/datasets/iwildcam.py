"""iWildCam (WILDS v2.0, Beery et al. 2020; Koh et al. 2021) as a TFDS builder that reads the archive from manual_dir.

Camera-trap photos of 182 species classes. WILDS v2.0's layout, read from the extracted folder or the .tar.gz:

  iwildcam_v2.0/metadata.csv     one row per image: split ('train', 'val', 'test', 'id_val', 'id_test'), y (the
                                 label, 0..181), filename, location_remapped, datetime, ...
  iwildcam_v2.0/categories.csv   y -> species name (not read: the labels are WILDS's y)
  iwildcam_v2.0/train/<filename> every image, whatever its split

Each WILDS split present in metadata.csv becomes a TFDS split of the same name. Nothing is downloaded.

The class split is the data's own (class_split.kind = 'natural'): the fine-tuning classes S are the species that
occur in the fine-tuning split (dataset.train_split, default 'train'); the absent classes U are the species that
occur in the test split (default 'test', WILDS's OOD cameras) and never in the fine-tuning split; every other
class (in neither, e.g. only in 'val') is 'remaining' and takes no part. `IWildCamDataset.natural_split()` computes
(S, U) from one label pass per split; train.py reads it when class_split.kind is 'natural'.
"""

import csv
import dataclasses
import io
import os
import tarfile
from typing import Dict, Iterator, List, Tuple

import numpy as np
import tensorflow_datasets as tfds

from ftcal_jax.datasets import tfds_source

FOLDER = "iwildcam_v2.0"
ARCHIVE = "iwildcam_v2.0.tar.gz"
NUM_CLASSES = 182  # WILDS v2.0: y in 0..181.
SPLITS = ("train", "val", "test", "id_val", "id_test")


def read_metadata(text: str) -> Dict[str, List[Tuple[str, int]]]:
  """metadata.csv's text -> {split: [(filename, y), ...]} in file order; checks the columns and the labels."""
  rows = list(csv.DictReader(io.StringIO(text)))
  missing = {"split", "y", "filename"} - set(rows[0] if rows else ())
  if missing:
    raise ValueError(f"{FOLDER}/metadata.csv lacks the columns {sorted(missing)}; is this WILDS iWildCam v2.0?")
  out: Dict[str, List[Tuple[str, int]]] = {}
  for r in rows:
    y = int(r["y"])
    if not 0 <= y < NUM_CLASSES:
      raise ValueError(f"{FOLDER}/metadata.csv: label y={y} of {r['filename']} outside [0, {NUM_CLASSES}).")
    out.setdefault(r["split"], []).append((r["filename"], y))
  return out


class _Source:
  """The archive's files by path inside iwildcam_v2.0/, from the extracted folder or the .tar.gz."""

  def __init__(self, manual_dir: str):
    self.folder = os.path.join(manual_dir, FOLDER)
    self.archive = os.path.join(manual_dir, ARCHIVE)
    if not os.path.isdir(self.folder) and not os.path.exists(self.archive):
      raise FileNotFoundError(f"Neither {self.folder}/ nor {self.archive} found. {IwildcamWilds.MANUAL_TEXT}")

  def read_text(self, name: str) -> str:
    """A small file (metadata.csv); '' when it is missing."""
    if os.path.isdir(self.folder):
      path = os.path.join(self.folder, name)
      return open(path).read() if os.path.exists(path) else ""
    with tarfile.open(self.archive) as tf:
      try:
        return tf.extractfile(_member(tf, name)).read().decode()
      except KeyError:
        return ""

  def images(self, filenames: List[str]) -> Iterator[Tuple[str, bytes]]:
    """(filename, bytes) of train/<filename> for `filenames`: in their order from a folder, tar order from a tar."""
    if os.path.isdir(self.folder):
      for f in filenames:
        with open(os.path.join(self.folder, "train", f), "rb") as fh:
          yield f, fh.read()
      return
    wanted = set(filenames)
    with tarfile.open(self.archive) as tf:  # One sequential pass: a .tar.gz has no random access.
      for m in tf:
        parts = m.name.split("/")
        if m.isfile() and len(parts) >= 2 and parts[-2] == "train" and parts[-1] in wanted:
          yield parts[-1], tf.extractfile(m).read()


def _member(tf: tarfile.TarFile, name: str) -> tarfile.TarInfo:
  for m in tf.getmembers():
    if m.name.rstrip("/").endswith(f"{FOLDER}/{name}"):
      return m
  raise KeyError(name)


class IwildcamWilds(tfds.core.GeneratorBasedBuilder):
  """WILDS iWildCam v2.0, one TFDS split per WILDS split, images as stored (height 448 JPEGs)."""

  VERSION = tfds.core.Version("2.0.0")
  MANUAL_TEXT = (f"Download WILDS iWildCam v2.0 ({ARCHIVE}, e.g. with the wilds package's download=True or from "
                 "https://wilds.stanford.edu/datasets/; its terms apply) and place the archive, or the extracted "
                 f"{FOLDER}/ folder, in the manual directory (config.dataset.manual_dir).")
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_TEXT

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://wilds.stanford.edu/datasets/#iwildcam",
    )

  def _split_generators(self, dl_manager):
    source = _Source(dl_manager.manual_dir)
    by_split = read_metadata(source.read_text("metadata.csv"))
    unknown = sorted(set(by_split) - set(SPLITS))
    if unknown:
      raise ValueError(f"{FOLDER}/metadata.csv has unknown splits {unknown}; expected some of {SPLITS}.")
    return {s: self._generate_examples(source, rows) for s, rows in by_split.items()}

  def _generate_examples(self, source: _Source, rows: List[Tuple[str, int]]):
    labels = dict(rows)
    for name, data in source.images([f for f, _ in rows]):
      yield name, {"image": io.BytesIO(data), "label": labels[name], "file_name": name}


@dataclasses.dataclass
class IWildCamDataset(tfds_source.TfdsDataset):
  """A TfdsDataset whose class split is the data's own (`natural_split`; class_split.kind = 'natural')."""

  def natural_split(self) -> Tuple[np.ndarray, np.ndarray]:
    """(S, U): the species of train_split, and those of test_split that train_split lacks; sorted int arrays."""
    seen = np.unique(self.labels(self.train_split))
    absent = np.setdiff1d(np.unique(self.labels(self.test_split)), seen)
    if not seen.size or not absent.size:
      raise ValueError(f"iwildcam: {self.train_split!r} has {seen.size} species and {self.test_split!r} adds "
                       f"{absent.size}; the natural split needs both non-empty.")
    return seen, absent
