"""Office-Home (Venkateswara et al., CVPR 2017) as a TFDS builder that reads the official zip from manual_dir.

65 office/home object classes in four domains (Art, Clipart, Product, Real World). Each domain is a builder config
('office_home/Art', ..., 'office_home/Real_World') with a seeded 7:3 train/test split per class, the protocol of
paper.md. Nothing is downloaded: the zip must be placed in the manual directory first.

  import tensorflow_datasets as tfds
  from ftcal_jax.datasets import office_home  # registers the builder
  b = tfds.builder('office_home/Art')
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir='/path/with/the/zip'))
"""

import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds

ZIP_NAME = "OfficeHomeDataset_10072016.zip"
# Builder config name -> the domain's folder in the zip.
DOMAINS = {"Art": "Art", "Clipart": "Clipart", "Product": "Product", "Real_World": "Real World"}
# The 65 class folders, in sorted order (the order of torchvision's ImageFolder, which the official code uses).
CLASSES = tuple(
    sorted("""
Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles Chair Clipboards Computer
Couch Curtains Desk_Lamp Drill Eraser Exit_Sign Fan File_Cabinet Flipflops Flowers Folder Fork Glasses Hammer
Helmet Kettle Keyboard Knives Lamp_Shade Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip Pen
Pencil Postit_Notes Printer Push_Pin Radio Refrigerator Ruler Scissors Screwdriver Shelf Sink Sneakers Soda
Speaker Spoon TV Table Telephone ToothBrush Toys Trash_Can Webcam
""".split()))
TEST_FRACTION = 0.3
SPLIT_SEED = 0
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _domain_members(zf: zipfile.ZipFile, folder: str):
  """{class name: sorted member names} for one domain folder, wherever the folder sits in the zip."""
  by_class = {}
  for name in zf.namelist():
    parts = name.split("/")
    if len(parts) >= 3 and parts[-3] == folder and parts[-1].lower().endswith(_IMAGE_EXTENSIONS):
      by_class.setdefault(parts[-2], []).append(name)
  return {c: sorted(v) for c, v in by_class.items()}


def per_class_split(members_by_class, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
  """(train, test) lists of (member, class) pairs: a seeded test_fraction of each class's sorted files is test."""
  from ftcal_jax.input_pipeline import split_holdout  # pylint: disable=g-import-not-at-top
  pairs = [(m, c) for c in CLASSES for m in members_by_class[c]]
  labels = np.array([CLASSES.index(c) for _, c in pairs])
  train_idx, test_idx = split_holdout(labels, test_fraction, seed)
  return [pairs[i] for i in train_idx], [pairs[i] for i in test_idx]


class OfficeHomeConfig(tfds.core.BuilderConfig):
  """One Office-Home domain."""

  def __init__(self, *, folder: str, **kwargs):
    super().__init__(version=tfds.core.Version("1.0.0"), **kwargs)
    self.folder = folder


class OfficeHome(tfds.core.GeneratorBasedBuilder):
  """Office-Home, one config per domain, with a seeded per-class 7:3 train/test split."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ZIP_NAME} from https://www.hemanthdv.org/officeHomeDataset.html (its terms apply) and place it "
      "in the manual directory, e.g. ~/tensorflow_datasets/downloads/manual/ or "
      "DownloadConfig(manual_dir=...).")
  BUILDER_CONFIGS = [
      OfficeHomeConfig(
          name=name, folder=folder,
          description=f"The {folder} domain; test = {TEST_FRACTION:.0%} of each class (seed {SPLIT_SEED}).")
      for name, folder in DOMAINS.items()
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.hemanthdv.org/officeHomeDataset.html",
    )

  def _split_generators(self, dl_manager):
    zip_path = os.path.join(dl_manager.manual_dir, ZIP_NAME)
    if not os.path.exists(zip_path):
      raise FileNotFoundError(f"{zip_path} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    with zipfile.ZipFile(zip_path) as zf:
      members = _domain_members(zf, self.builder_config.folder)
    missing = sorted(set(CLASSES) - set(members))
    extra = sorted(set(members) - set(CLASSES))
    if missing or extra:
      raise ValueError(f"{ZIP_NAME}, domain {self.builder_config.folder!r}: missing class folders {missing}, "
                       f"unexpected ones {extra}. Is this the official Office-Home zip?")
    train, test = per_class_split(members)
    return {"train": self._generate_examples(zip_path, train), "test": self._generate_examples(zip_path, test)}

  def _generate_examples(self, zip_path, pairs):
    with zipfile.ZipFile(zip_path) as zf:
      for member, cls in pairs:
        rel = "/".join(member.split("/")[-3:])
        yield rel, {"image": io.BytesIO(zf.read(member)), "label": cls, "file_name": rel}
