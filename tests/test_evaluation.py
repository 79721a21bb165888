"""Tests for the prediction pass (padding is dropped, 8-device sharding changes no numbers) and its cache."""

import os

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from ftcal_jax import checkpointing
from ftcal_jax import evaluation
from ftcal_jax.models import get_model

NUM_CLASSES = 6


@pytest.fixture(scope="module")
def model_and_params():
  model = get_model("ViT-testing", NUM_CLASSES)
  params = model.init(jax.random.key(0), np.zeros((1, 32, 32, 1), np.float32), train=False)["params"]
  # The head is zero-initialised (all logits equal): give it random weights so the test can see row order.
  rng = np.random.default_rng(1)
  params["head"] = {
      "kernel": rng.normal(size=params["head"]["kernel"].shape).astype(np.float32),
      "bias": rng.normal(size=(NUM_CLASSES,)).astype(np.float32)
  }
  return model, params


def _padded_batches(images, labels, batch_size):
  """Mimics the eval iterator: fixed-size batches, the last one padded with junk rows and mask False."""
  for start in range(0, len(labels), batch_size):
    img, lab = images[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(lab)
    mask = np.r_[np.ones(len(lab), bool), np.zeros(pad, bool)]
    # Junk padding (not zeros), so a leak of padded rows into the output would be visible.
    img = np.concatenate([img, np.full((pad,) + img.shape[1:], 7.0, np.float32)])
    lab = np.r_[lab, np.full(pad, -1, np.int32)]
    yield {"image": img, "label": lab, "mask": mask}


def test_padded_sharded_predict_matches_single_device(model_and_params):
  model, params = model_and_params
  assert jax.device_count() == 8, "conftest should give 8 CPU devices"
  rng = np.random.default_rng(0)
  n = 21  # 2 full batches of 8 and one of 5 real rows + 3 padded.
  images = rng.normal(size=(n, 32, 32, 1)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)

  mesh8 = Mesh(np.array(jax.devices()), ("data",))
  got = evaluation.predict(model, params, _padded_batches(images, labels, 8), mesh8)

  # Reference: one unpadded, unsharded call on a single device.
  mesh1 = Mesh(np.array(jax.devices()[:1]), ("data",))
  ref = evaluation.predict(model, params, [{"image": images, "label": labels}], mesh1)
  direct = model.apply({"params": params}, images, train=False)

  assert got.logits.shape == (n, NUM_CLASSES) and got.features.shape == (n, 16)
  np.testing.assert_array_equal(got.labels, labels)
  np.testing.assert_allclose(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got.features, ref.features, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ref.logits, np.asarray(direct["logits"]), atol=1e-5, rtol=1e-5)
  # The logits must differ across rows, or the order check above would be vacuous.
  assert np.ptp(got.logits[:, 0]) > 1e-3


def test_predict_handles_batches_not_divisible_by_devices(model_and_params):
  model, params = model_and_params
  rng = np.random.default_rng(3)
  images = rng.normal(size=(5, 32, 32, 1)).astype(np.float32)
  labels = np.arange(5, dtype=np.int32)
  mesh8 = Mesh(np.array(jax.devices()), ("data",))
  got = evaluation.predict(model, params, [{"image": images, "label": labels}], mesh8)
  direct = model.apply({"params": params}, images, train=False)
  np.testing.assert_allclose(got.logits, np.asarray(direct["logits"]), atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(got.labels, labels)


def test_predict_fn_is_cached_per_model(model_and_params):
  model, _ = model_and_params
  assert evaluation.make_predict_fn(model) is evaluation.make_predict_fn(get_model("ViT-testing", NUM_CLASSES))


def test_predict_rejects_mesh_without_data_axis(model_and_params):
  model, params = model_and_params
  mesh = Mesh(np.array(jax.devices()), ("model",))
  with pytest.raises(ValueError, match="'data' axis"):
    evaluation.predict(model, params, [], mesh)


def test_predictions_validate_and_restrict():
  with pytest.raises(ValueError, match="rows disagree"):
    evaluation.Predictions(np.zeros((3, 4)), np.zeros((2, 5)), np.zeros(3))
  p = evaluation.Predictions(np.arange(12.0).reshape(3, 4), np.zeros((3, 2)), np.array([0, 2, 3]))
  r = p.restrict_classes(np.array([True, False, True, True]))
  np.testing.assert_array_equal(r.logits, [[0, 2, 3], [4, 6, 7], [8, 10, 11]])
  np.testing.assert_array_equal(r.labels, [0, 1, 2])
  with pytest.raises(ValueError, match="class_mask excludes"):
    p.restrict_classes(np.array([True, True, False, True]))


def _two_passes(seed):
  rng = np.random.default_rng(seed)
  mk = lambda n: evaluation.Predictions(rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.integers(0, 3, n))
  return {"test": mk(5), "heldout": mk(4)}


def test_cached_predictions_computes_once_then_reads_the_cache(tmp_path):
  path = str(tmp_path / "run" / "predictions.npz")
  calls = []
  preds = _two_passes(0)
  history = {"step": [0, 2], "loss": [float("nan"), 0.5]}

  def compute():
    calls.append(1)
    return preds, history

  first, hist, cached = evaluation.cached_predictions(path, "fp1", compute)
  assert not cached and hist == history and list(first) == list(preds) and all(first[k] is preds[k] for k in preds)
  assert os.listdir(tmp_path / "run") == ["predictions.npz"]  # The temporary file was renamed away.
  again, hist, cached = evaluation.cached_predictions(path, "fp1", compute)
  assert cached and len(calls) == 1 and sorted(again) == ["heldout", "test"]
  for kind, p in preds.items():
    for field in ("logits", "features", "labels"):
      np.testing.assert_array_equal(getattr(again[kind], field), getattr(p, field))
  assert hist["step"] == [0, 2] and hist["loss"][1] == 0.5 and np.isnan(hist["loss"][0])


def test_cached_predictions_refuses_a_cache_of_another_fingerprint(tmp_path):
  path = str(tmp_path / "predictions.npz")
  evaluation.cached_predictions(path, "fp1", lambda: (_two_passes(0), None))
  with pytest.raises(checkpointing.ConfigMismatchError, match="different config.*fingerprint fp1, this run fp2"):
    evaluation.cached_predictions(path, "fp2", lambda: (_two_passes(1), None))
