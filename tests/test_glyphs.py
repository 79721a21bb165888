"""Tests of the offline Glyphs benchmark: fonts, rendering and the TFDS builder."""

import pathlib
import runpy

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ftcal_jax.datasets import font_packages
from ftcal_jax.datasets import fonts
from ftcal_jax.datasets import glyph_render
from ftcal_jax.datasets import glyphs  # Importing it registers the "glyphs" builder with TFDS.

REPO = pathlib.Path(__file__).resolve().parent.parent


def _mpl_ttf(name):
  import matplotlib  # pylint: disable=g-import-not-at-top
  return pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


def _dejavu():
  return glyph_render.Face("dejavu-sans/DejaVuSans", "dejavu-sans", "matplotlib", str(_mpl_ttf("DejaVuSans.ttf")))


def _build(data_dir, config, file_format="array_record"):
  builder = tfds.builder("glyphs", config=config, data_dir=str(data_dir), file_format=file_format)
  builder.download_and_prepare()
  return builder


def _fonts_of(builder, split):
  source = builder.as_data_source(split)
  items = source.__getitems__(list(range(len(source))))
  return [x["font"].decode() for x in items]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  _build(data_dir, "small")
  return data_dir


# Fonts and filters.


def test_classes_are_emnist_balanced():
  assert "".join(fonts.CLASSES) == ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


def test_coverage_check_rejects_font_without_latin():
  assert fonts.covers_classes(_mpl_ttf("DejaVuSans.ttf"))
  assert not fonts.covers_classes(_mpl_ttf("DejaVuSansDisplay.ttf"))


def test_placeholder_font_is_rejected():
  # LastResort maps every code point to a placeholder box: the cmap check
  # passes, the distinct-glyph check must not.
  face = glyph_render.Face("x/LastResort", "x", "matplotlib", str(_mpl_ttf("LastResortHE-Regular.ttf")))
  assert fonts.covers_classes(pathlib.Path(face.path))
  assert "identical" in fonts.check_face(face)


def test_small_caps_detector():
  face = _dejavu()
  upper = glyph_render.master_glyph(face, "A")
  lower = glyph_render.master_glyph(face, "a")
  h, w = upper.shape
  from PIL import Image  # pylint: disable=g-import-not-at-top
  shrunk = np.asarray(Image.fromarray(upper).resize((w * 3 // 4, h * 3 // 4)))
  assert fonts.looks_like_small_caps(upper, shrunk)
  assert not fonts.looks_like_small_caps(upper, lower)
  assert fonts.check_face(face) is None


def test_all_caps_handwriting_face_is_dropped():
  # Permanent Marker draws its lower case as small capitals.
  dropped = {}
  kept = fonts.handwriting_faces(("permanent-marker", "delius"), (), dropped=dropped)
  assert [f.family for f in kept] == ["delius"]
  assert dropped == {"permanent-marker/PermanentMarker-Regular": "its lower case is small capitals"}


def test_setup_py_requires_the_one_font_list(monkeypatch):
  setuptools = pytest.importorskip("setuptools")
  calls = []
  monkeypatch.setattr(setuptools, "setup", lambda **kwargs: calls.append(kwargs))
  runpy.run_path(str(REPO / "setup.py"))
  # The fonts belong to the [train] extra (the core installs with jax and numpy only).
  assert not [r for r in calls[0]["install_requires"] if r.startswith("fontpkg-")]
  fontpkgs = [r for r in calls[0]["extras_require"]["train"] if r.startswith("fontpkg-")]
  names = font_packages.PRINTED_PACKAGES + font_packages.HANDWRITING_PACKAGES
  assert fontpkgs == [f"fontpkg-{n}" for n in names] and len(names) == 31
  assert fonts.PRINTED_PACKAGES is font_packages.PRINTED_PACKAGES
  assert fonts.HANDWRITING_PACKAGES is font_packages.HANDWRITING_PACKAGES
  assert "roboto" not in (REPO / "setup.py").read_text()  # Not written a second time.


def test_default_fonts_are_all_found():
  dropped = {}
  printed = fonts.printed_faces(dropped=dropped)
  assert not dropped
  assert {f.family for f in printed} == (set(fonts.PRINTED_PACKAGES) | set(fonts.MATPLOTLIB_FAMILIES))
  assert len(printed) >= 150  # 160 when this test was written.
  handwriting = fonts.handwriting_faces(dropped=dropped)
  # Permanent Marker is all capitals; Hershey Fraktur draws I and J alike.
  assert {
      "hershey-gothic-german/gothgrt", "hershey-gothic-german/gothicger", "permanent-marker/PermanentMarker-Regular"
  } <= set(dropped)
  assert len(handwriting) >= 28  # 30 when this test was written.
  assert len({f.face_id for f in printed + handwriting}) == len(printed + handwriting)


def test_variable_font_gives_weights_that_render_differently():
  path = fonts.package_font_files("roboto")[0]
  faces = {f.axes: f for f in fonts.truetype_faces(path, "roboto", "fontpkg")}
  assert (("wght", 300.0),) in faces and (("wght", 700.0),) in faces
  assert (("wght", 400.0), ("wdth", 75.0)) in faces
  light = glyph_render.master_glyph(faces[(("wght", 300.0),)], "H")
  bold = glyph_render.master_glyph(faces[(("wght", 700.0),)], "H")
  narrow = glyph_render.master_glyph(faces[(("wght", 400.0), ("wdth", 75.0))], "H")
  regular = glyph_render.master_glyph(faces[(("wght", 400.0),)], "H")
  assert bold.astype(float).sum() > 1.3 * light.astype(float).sum()
  assert narrow.shape[1] < regular.shape[1]


def test_missing_font_package_names_the_fix():
  with pytest.raises(fonts.MissingFontError, match="pip install fontpkg-no-such-font"):
    fonts.package_font_files("no-such-font")
  with pytest.raises(fonts.MissingFontError, match="no built-in font"):
    fonts.hershey_faces(("no-such-hershey",))


# Rendering.


def test_render_shapes_determinism_and_styles():
  face = _dejavu()
  a = glyph_render.render_samples(face, "g", 4, "filled", seed=3)
  b = glyph_render.render_samples(face, "g", 4, "filled", seed=3)
  c = glyph_render.render_samples(face, "g", 4, "filled", seed=4)
  assert a.shape == (4, 32, 32) and a.dtype == np.uint8
  assert a.tobytes() == b.tobytes()
  assert a.tobytes() != c.tobytes()
  assert len({x.tobytes() for x in a}) == 4  # Samples differ from each other.
  outline = glyph_render.render_samples(face, "g", 4, "outline", seed=3)
  np.testing.assert_array_equal(outline, [glyph_render.sketch(x) for x in a])
  assert (a > 0).all(axis=0).sum() < (a > 0).any(axis=0).sum()  # Not static.
  with pytest.raises(ValueError, match="style"):
    glyph_render.render_samples(face, "g", 1, "bold", seed=0)


def test_pixel_noise_is_added_last_and_is_seeded():
  face = _dejavu()
  clean = glyph_render.render_samples(face, "R", 64, "outline", seed=5)
  noisy = glyph_render.render_samples(face, "R", 64, "outline", seed=5, noise_std=60.0)
  again = glyph_render.render_samples(face, "R", 64, "outline", seed=5, noise_std=60.0)
  assert noisy.tobytes() == again.tobytes()
  diff = noisy.astype(np.float64) - clean
  # Where clipping cannot act (mid-grey would be needed), the noise is the full Gaussian: check its spread on the
  # background, where the clean image is 0 and the noise is clipped below at 0 (a half-normal: mean std*sqrt(2/pi)).
  background = clean == 0
  assert abs(diff[background].mean() - 60.0 * np.sqrt(2 / np.pi) / 2) < 2.0
  assert (diff[background] >= 0).all() and diff[background].max() > 120


def test_printed_target_images_are_other_samples_than_the_source(tmp_path):
  # Filled and noise-free, a printed target image drawn with the source's seed would equal a source image.
  builder = _build(tmp_path, glyphs.small_config(name="small_filled", target_style="filled", target_noise=0.0))
  source = {x["image"].tobytes() for s in ("source_train", "source_test") for x in builder.as_data_source(s)}
  printed = lambda x: not str(x["font"], "utf-8").startswith(("hershey", "delius", "indie"))
  target = [x["image"].tobytes() for x in builder.as_data_source("target_train") if printed(x)]
  assert len(target) > 100  # The default target draws printed faces too.
  assert not source & set(target)


def test_target_val_shares_no_image_with_train_or_test(small_dir):
  builder = tfds.builder("glyphs", config="small", data_dir=str(small_dir))
  splits = ("target_train", "target_val", "target_test")
  images = {s: [x["image"].tobytes() for x in builder.as_data_source(s)] for s in splits}
  sets = {s: set(v) for s, v in images.items()}
  assert all(len(sets[s]) == len(images[s]) for s in sets)  # Noise makes every image unique.
  assert not sets["target_val"] & sets["target_train"] and not sets["target_val"] & sets["target_test"]
  assert not sets["target_train"] & sets["target_test"]
  total = sum(len(v) for v in images.values())
  assert 0.05 < len(images["target_val"]) / total < 0.2 and 0.4 < len(images["target_test"]) / total < 0.6


def test_render_keeps_ink_inside_the_image():
  face = glyph_render.Face("hershey-script/scripts", "hershey-script", "hershey", hershey_name="scripts")
  images = glyph_render.render_samples(face, "W", 20, "outline", seed=0)
  ink = images > 0
  assert ink.any(axis=(1, 2)).all()
  # Fits in the scale range: ink spans at most 0.88 * 32 plus the outline.
  rows = ink.any(axis=2).sum(axis=1)
  cols = ink.any(axis=1).sum(axis=1)
  assert np.maximum(rows, cols).max() <= 32 and np.maximum(rows, cols).min() >= 18


# The TFDS builder.


def test_small_build_shapes_dtypes_and_classes(small_dir):
  builder = tfds.builder("glyphs", config="small", data_dir=str(small_dir))
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert set(counts) == set(glyphs.SPLITS)
  assert builder.info.features["label"].names == list(fonts.CLASSES)
  for split in glyphs.SPLITS:
    images, labels = glyphs.load_glyphs_arrays(split, "small", str(small_dir))
    assert images.shape == (counts[split], 32, 32, 1) and images.dtype == np.uint8
    assert labels.shape == (counts[split],) and labels.dtype == np.int32
    assert set(labels.tolist()) == set(range(47)), split
    assert images.reshape(len(images), -1).max(axis=1).min() > 0  # No blank.


def test_source_test_fonts_are_disjoint_from_train(small_dir):
  builder = tfds.builder("glyphs", config="small", data_dir=str(small_dir))
  train = {f.split("/")[0] for f in _fonts_of(builder, "source_train")}
  test = {f.split("/")[0] for f in _fonts_of(builder, "source_test")}
  assert train and test and not train & test
  # The default target split is per class, so both sides share fonts.
  tr = set(_fonts_of(builder, "target_train"))
  te = set(_fonts_of(builder, "target_test"))
  assert tr & te


def test_same_seed_same_bytes_other_seed_other_bytes(small_dir, tmp_path):
  again = _build(tmp_path / "a", "small")
  other = _build(tmp_path / "b", glyphs.small_config(name="small_seed1", seed=1))
  first = tfds.builder("glyphs", config="small", data_dir=str(small_dir))
  for split in ("source_train", "target_test"):
    a = first.as_data_source(split).__getitems__(list(range(10)))
    b = again.as_data_source(split).__getitems__(list(range(10)))
    assert [x["font"] for x in a] == [x["font"] for x in b]
    assert np.array_equal(np.stack([x["image"] for x in a]), np.stack([x["image"] for x in b]))
  x1, _ = glyphs.load_glyphs_arrays("source_train", "small", str(small_dir))
  x2, _ = glyphs.load_glyphs_arrays("source_train", other.builder_config, str(tmp_path / "b"))
  assert x1.shape == x2.shape and not np.array_equal(x1, x2)


def test_font_disjoint_target_split(tmp_path):
  config = glyphs.small_config(name="small_font", target_split="font")
  builder = _build(tmp_path, config)
  train = {f.split("/")[0] for f in _fonts_of(builder, "target_train")}
  test = {f.split("/")[0] for f in _fonts_of(builder, "target_test")}
  assert train and test and not train & test
  # Both font origins (fontpkg wheels and Hershey) are on each side.
  assert any(f.startswith("hershey") for f in train)
  assert any(f.startswith("hershey") for f in test)
  _, labels = glyphs.load_glyphs_arrays("target_test", config, str(tmp_path))
  assert set(labels.tolist()) == set(range(47))


def test_tfrecord_format_reads_with_as_dataset(tmp_path):
  config = glyphs.small_config(name="small_tfrecord", source_per_face_class=1, printed_packages=("pt-sans", "pt-serif"),
                               matplotlib_families=())
  builder = _build(tmp_path, config, file_format="tfrecord")
  batch = tfds.as_numpy(builder.as_dataset("source_test", batch_size=-1))
  assert batch["image"].shape[1:] == (32, 32, 1)
  images, labels = glyphs.load_glyphs_arrays("source_test", config, str(tmp_path))
  assert images.shape == batch["image"].shape and labels.dtype == np.int32


def test_missing_font_package_fails_the_build(tmp_path):
  config = glyphs.small_config(name="small_missing", handwriting_packages=("delius", "no-such-font"))
  with pytest.raises(fonts.MissingFontError, match="pip install fontpkg-no-such-font"):
    _build(tmp_path, config)


def test_never_silently_drops_classes(tmp_path):
  # One target face with one image per class cannot fill both target splits.
  config = glyphs.small_config(name="small_thin", handwriting_packages=("delius",), hershey_names=(),
                               target_faces="handwriting", target_per_face_class=1)
  with pytest.raises(ValueError, match="would lack classes"):
    _build(tmp_path, config)


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError, match="valid"):
    glyphs.load_glyphs_arrays("train", "small")
