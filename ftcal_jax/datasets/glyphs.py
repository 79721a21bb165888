"""The offline Glyphs benchmark: a TFDS builder rendered from pip-installed fonts.

47 EMNIST-balanced character classes. The source domain is printed faces drawn
filled. The target domain is every face, printed and handwriting, drawn as
outlines under Gaussian pixel noise: a style shift that every class shares,
the role that ImageNet -> ImageNet-Sketch plays in the paper (the printed
target images are other samples than the source's). Nothing is downloaded:

  from ftcal_jax.datasets import glyphs  # Registers "glyphs" (importing ftcal_jax.datasets alone does not).
  builder = tfds.builder("glyphs", config="default", file_format="array_record")
  builder.download_and_prepare()
  source = builder.as_data_source("source_train")

Splits: source_train / source_test (disjoint font families); target_train /
target_val / target_test (random per class, or, in `font_disjoint`, target_test
from font families disjoint from the others'). target_val is for choosing a
recipe: it shares no image with target_train or target_test.
"""

import collections
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from ftcal_jax.datasets import fonts
from ftcal_jax.datasets import glyph_render

SPLITS = ("source_train", "source_test", "target_train", "target_val", "target_test")


@dataclasses.dataclass(eq=False)
class GlyphsConfig(tfds.core.BuilderConfig):
  """What to render and how to split it.

  Attributes:
    source_per_face_class: images per (printed face, class).
    target_per_face_class: target images per (handwriting face, class).
    target_per_printed_face_class: target images per (printed face, class);
      None = target_per_face_class.
    source_test_fraction: share of printed font families held out for
      source_test (per origin: fontpkg wheels and matplotlib separately).
    target_split: "random" splits target images at random within each class;
      "font" holds out whole handwriting font families.
    target_test_fraction: share of target images ("random") or of font
      families per origin ("font") that goes to target_test.
    target_val_fraction: share of each class's target images ("random"), or
      of its images from the non-test fonts ("font"), that goes to target_val.
    target_faces: which faces the target domain draws: "handwriting",
      "printed" (every printed face: the class shapes the source knows, so the
      shift is the style alone) or "both".
    target_style: "outline" (3x3 dilation minus erosion) or "filled".
    target_noise: std of Gaussian pixel noise (grey levels, 0-255) added to
      every target image; 0 = none.
    seed: fixes every image and every split.
    printed_packages: `fontpkg-*` printed wheels (without the prefix).
    matplotlib_families: keys of `fonts.MATPLOTLIB_FAMILIES`.
    handwriting_packages: `fontpkg-*` handwriting wheels.
    hershey_names: built-in Hershey stroke fonts.
  """
  source_per_face_class: int = 4
  target_per_face_class: int = 2
  target_per_printed_face_class: int | None = None
  source_test_fraction: float = 0.2
  target_split: str = "random"
  target_test_fraction: float = 0.5
  target_val_fraction: float = 0.1
  target_faces: str = "both"
  target_style: str = "outline"
  target_noise: float = 60.0
  seed: int = 0
  printed_packages: tuple[str, ...] = fonts.PRINTED_PACKAGES
  matplotlib_families: tuple[str, ...] = tuple(fonts.MATPLOTLIB_FAMILIES)
  handwriting_packages: tuple[str, ...] = fonts.HANDWRITING_PACKAGES
  hershey_names: tuple[str, ...] = fonts.HERSHEY_NAMES


def small_config(**overrides) -> GlyphsConfig:
  """A few fonts and images: builds in seconds, for tests and smoke runs."""
  kwargs = dict(
      name="small",
      description="A few fonts, 2 images per (face, class); for tests.",
      source_per_face_class=1,
      target_per_face_class=2,
      source_test_fraction=0.5,
      printed_packages=("pt-sans", "pt-serif"),
      matplotlib_families=("dejavu-sans",),
      handwriting_packages=("delius", "indie-flower"),
      hershey_names=("timesr", "scripts"),
  )
  kwargs.update(overrides)
  return GlyphsConfig(**kwargs)


def split_families(faces, test_fraction: float, seed: int):
  """Holds out whole font families, drawn at random within each origin.

  Args:
    faces: `glyph_render.Face`s.
    test_fraction: share of the families of each origin that go to test (at
      least one, and never all, where an origin has two or more families).
    seed: fixes the draw.

  Returns:
    (train_faces, test_faces), two lists with no family in common.
  """
  by_origin = collections.defaultdict(set)
  for f in faces:
    by_origin[f.origin].add(f.family)
  rng = np.random.default_rng(seed)
  test_families = set()
  for origin in sorted(by_origin):
    families = sorted(by_origin[origin])
    if len(families) < 2:
      continue
    n_test = int(np.clip(round(test_fraction * len(families)), 1, len(families) - 1))
    test_families.update(rng.permutation(families)[:n_test].tolist())
  train = [f for f in faces if f.family not in test_families]
  test = [f for f in faces if f.family in test_families]
  if not train or not test:
    raise ValueError(f"Cannot split {len(faces)} faces by family into train and test: the "
                     f"faces come from {sum(len(v) for v in by_origin.values())} families. "
                     "Give the config at least two font families per domain.")
  return train, test


def render_face(face, style, count, seed, noise_std=0.0):
  """All images of one face: [(class index, sample index, PNG bytes)].

  One process builds the default config in 35-70 s on this project's shared
  2-core machine, so there is no process pool (and no spawn/fork pitfalls).
  """
  out = []
  for label, char in enumerate(fonts.CLASSES):
    images = glyph_render.render_samples(face, char, count, style, seed, noise_std=noise_std)
    out += [(label, i, glyph_render.encode_png(img)) for i, img in enumerate(images)]
  return out


def _examples(faces, rendered):
  return [(f"{f.face_id}|{label:02d}|{i:03d}", png, label, f.face_id) for f in faces
          for label, i, png in rendered[f.face_id]]


def _split_per_class(examples, fractions, seed):
  """Random split within each class: `fractions` {split: share} of every class, target_train the rest.

  Each named split gets round(share * n) of a class's n images, at least one; target_train keeps at least one.
  """
  rng = np.random.default_rng([seed, 1])
  by_class = collections.defaultdict(list)
  for e in examples:
    by_class[e[2]].append(e)
  out = {name: [] for name in (*fractions, "target_train")}
  for label in sorted(by_class):
    items = by_class[label]
    order = rng.permutation(len(items)).tolist()
    for name, share in fractions.items():
      n = int(np.clip(round(share * len(items)), 1, max(1, len(order) - 1)))
      out[name] += [items[j] for j in order[:n]]
      order = order[n:]
    out["target_train"] += [items[j] for j in order]
  return out


def _target_count(cfg, printed: bool) -> int:
  if printed and cfg.target_per_printed_face_class is not None:
    return cfg.target_per_printed_face_class
  return cfg.target_per_face_class


def _check_classes(split_name, examples):
  present = {e[2] for e in examples}
  missing = [fonts.CLASSES[i] for i in range(len(fonts.CLASSES)) if i not in present]
  if missing:
    raise ValueError(f"Split {split_name!r} would lack classes {missing}; give "
                     "it more fonts or more images per (face, class).")


class Glyphs(tfds.core.GeneratorBasedBuilder):
  """Printed (source) characters, and noisy outlines of printed and handwritten ones (target); 47 classes."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "A target_val split for choosing recipes. The default target domain is every face, printed and "
               "handwriting, drawn as outlines under pixel noise (v1's handwriting outlines: 'handwriting_outline').",
  }
  BUILDER_CONFIGS = [
      GlyphsConfig(
          name="default", description="All fonts (160 printed, 30 handwriting faces); target: every face "
          "as outlines with Gaussian pixel noise (std 60), split at random per class."),
      GlyphsConfig(
          name="font_disjoint", description="As default; target test font families are disjoint "
          "from target train/val font families.", target_split="font"),
      GlyphsConfig(
          name="handwriting_outline", description="v1's target: handwriting faces only, as clean "
          "outlines, 10 images per (face, class).", target_faces="handwriting", target_per_face_class=10,
          target_noise=0.0),
      small_config(),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(glyph_render.IMAGE_SIZE, glyph_render.IMAGE_SIZE, 1),
                                         encoding_format="png"),
            "label": tfds.features.ClassLabel(names=list(fonts.CLASSES)),
            "font": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    if cfg.target_faces not in ("handwriting", "printed", "both"):
      raise ValueError(f"target_faces must be 'handwriting', 'printed' or 'both', got {cfg.target_faces!r}.")
    if cfg.target_style not in glyph_render.STYLES or cfg.target_noise < 0:
      raise ValueError(f"target_style must be one of {glyph_render.STYLES} and target_noise >= 0, got "
                       f"{cfg.target_style!r}, {cfg.target_noise}.")
    if cfg.target_split not in ("random", "font"):
      raise ValueError(f"target_split must be 'random' or 'font', got "
                       f"{cfg.target_split!r}.")
    if min(cfg.source_per_face_class, cfg.target_per_face_class) < 1:
      raise ValueError("source_per_face_class and target_per_face_class must "
                       "be >= 1.")
    for name in ("source_test_fraction", "target_test_fraction", "target_val_fraction"):
      if not 0 < getattr(cfg, name) < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {getattr(cfg, name)}.")
    if cfg.target_split == "random" and cfg.target_test_fraction + cfg.target_val_fraction >= 1:
      raise ValueError("target_test_fraction + target_val_fraction must be < 1 (target_train gets the rest), got "
                       f"{cfg.target_test_fraction} + {cfg.target_val_fraction}.")
    printed = fonts.printed_faces(cfg.printed_packages, cfg.matplotlib_families)
    handwriting = fonts.handwriting_faces(cfg.handwriting_packages, cfg.hershey_names)
    target_faces = {"handwriting": handwriting, "printed": printed, "both": handwriting + printed}[cfg.target_faces]
    src_train, src_test = split_families(printed, cfg.source_test_fraction, cfg.seed)
    src = {f.face_id: render_face(f, "filled", cfg.source_per_face_class, cfg.seed) for f in printed}
    # Printed faces in the target are drawn with another seed: other samples than the source's of the same face.
    printed_ids = {f.face_id for f in printed}
    tgt = {
        f.face_id: render_face(f, cfg.target_style, _target_count(cfg, f.face_id in printed_ids),
                               cfg.seed + 2 * (f.face_id in printed_ids), cfg.target_noise) for f in target_faces
    }
    splits = {
        "source_train": _examples(src_train, src),
        "source_test": _examples(src_test, src),
    }
    if cfg.target_split == "font":
      tgt_rest, tgt_test = split_families(target_faces, cfg.target_test_fraction, cfg.seed + 1)
      splits["target_test"] = _examples(tgt_test, tgt)
      splits.update(_split_per_class(_examples(tgt_rest, tgt), {"target_val": cfg.target_val_fraction}, cfg.seed))
    else:
      parts = {"target_test": cfg.target_test_fraction, "target_val": cfg.target_val_fraction}
      splits.update(_split_per_class(_examples(target_faces, tgt), parts, cfg.seed))
    for name, examples in splits.items():
      _check_classes(name, examples)
    return {name: self._generate_examples(ex) for name, ex in splits.items()}

  def _generate_examples(self, examples):
    for key, png, label, font in examples:
      yield key, {"image": png, "label": label, "font": font}


def load_glyphs_arrays(split: str, config: "str | GlyphsConfig" = "default", data_dir: str | None = None):
  """Loads one Glyphs split fully into memory, building it first if needed.

  A fresh build is written as array_record, read back through
  `as_data_source` (no TensorFlow input pipeline). A copy already prepared as
  TFRecord in `data_dir` is read with `as_dataset` instead.

  Args:
    split: one of `SPLITS`.
    config: builder config name ("default", "font_disjoint", "small") or a
      `GlyphsConfig`.
    data_dir: TFDS data dir; None means $TFDS_DATA_DIR or ~/tensorflow_datasets.

  Returns:
    images: uint8 (N, 32, 32, 1).
    labels: int32 (N,), indices into `fonts.CLASSES`.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown Glyphs split {split!r}; valid: {SPLITS}.")
  builder = tfds.builder("glyphs", config=config, data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD in formats:
    source = builder.as_data_source(split, file_format="array_record")
    items = source.__getitems__(list(range(len(source))))
    images = np.stack([x["image"] for x in items]).astype(np.uint8)
    labels = np.asarray([x["label"] for x in items], np.int32)
  else:
    data = tfds.as_numpy(builder.as_dataset(split, batch_size=-1))
    images, labels = data["image"].astype(np.uint8), data["label"].astype(np.int32)
  return images, labels
