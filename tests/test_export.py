"""Tests for ftcal_jax.export: the exported model predicts what calibration.shift_absent predicts."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import calibration
from ftcal_jax import evaluation
from ftcal_jax import export
from ftcal_jax.models import get_model
from ftcal_jax.models import weights

CLASSES = 6
ABSENT = np.array([False, True, False, True, True, False])


@functools.lru_cache(maxsize=2)
def _random_model(seed=0, head="linear"):
  model = get_model("ViT-testing", num_classes=CLASSES, head=head)
  # Shapes only (no compile): restore_into takes them, and the values below are random anyway.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)))["params"]
  # Random values for every leaf (Flax zero-initialises the head, where all logits would tie).
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(x.dtype), shapes)
  return model, shapes, params


def _logits(model, params, images):
  return np.asarray(evaluation.make_predict_fn(model)(params, images)[0])


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_exported_model_equals_shift_absent(tmp_path, head):
  model, init, params = _random_model(head=head)
  images = jax.random.normal(jax.random.PRNGKey(2), (128, 16, 16, 3))
  logits = _logits(model, params, images)
  gamma = float(np.median(logits[:, ~ABSENT].max(1) - logits[:, ABSENT].max(1)))  # flips about half the rows
  paths = export.export_calibrated(params, ABSENT, gamma, str(tmp_path / "calibrated.npz"), rule="ALG",
                                   metadata={"model": "ViT-testing"})
  restored = weights.restore_into(init, weights.load_npz(paths["npz"]))
  new = _logits(model, restored, images)

  want = np.argmax(np.asarray(calibration.shift_absent(logits, ABSENT, gamma)), axis=1)
  np.testing.assert_array_equal(np.argmax(new, axis=1), want)
  assert np.mean(want != np.argmax(logits, axis=1)) > 0.2  # the shift changes predictions: the check has teeth
  np.testing.assert_array_equal(new[:, ~ABSENT], logits[:, ~ABSENT])
  np.testing.assert_allclose(new[:, ABSENT], logits[:, ABSENT] + gamma, rtol=0, atol=1e-5)
  with open(paths["json"]) as f:
    info = json.load(f)
  assert info["gamma"] == gamma and info["rule"] == "ALG" and info["absent_classes"] == [1, 3, 4]
  assert info["model"] == "ViT-testing"


def test_fold_gamma_leaves_the_input_alone():
  _, _, params = _random_model()
  bias = np.asarray(params["head"]["bias"]).copy()
  folded = export.fold_gamma(params, ABSENT, 2.5)
  np.testing.assert_array_equal(np.asarray(params["head"]["bias"]), bias)
  np.testing.assert_allclose(folded["head"]["bias"], np.where(ABSENT, bias + 2.5, bias), rtol=1e-6)
  assert folded["head"]["bias"].dtype == bias.dtype
  np.testing.assert_array_equal(folded["head"]["kernel"], np.asarray(params["head"]["kernel"]))


@pytest.mark.parametrize("gamma, mask, match", [
    (float("nan"), ABSENT, "finite"),
    (np.ones(2), ABSENT, "scalar"),
    (1.0, ABSENT[:4], "shape"),
])
def test_fold_gamma_rejects_bad_inputs(gamma, mask, match):
  _, _, params = _random_model()
  with pytest.raises(ValueError, match=match):
    export.fold_gamma(params, mask, gamma)
  with pytest.raises(ValueError, match="variables dict"):
    export.fold_gamma({"params": params}, ABSENT, 1.0)


def test_a_batchnorm_model_exports_its_statistics_too(tmp_path):
  """A ResNet: γ goes into params' head bias, the running statistics travel unchanged beside it."""
  model = get_model("ResNet-testing", num_classes=CLASSES, stage_sizes=(1, 1))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  rng = np.random.default_rng(1)
  noisy = lambda x: x + rng.normal(size=x.shape).astype(x.dtype)  # Non-trivial head and statistics.
  variables = {
      "params": jax.tree.map(noisy, variables["params"]),
      "batch_stats": jax.tree.map(lambda x: np.abs(noisy(x)) + 0.5, variables["batch_stats"])
  }
  images = jax.random.normal(jax.random.PRNGKey(2), (128, 16, 16, 3))
  predict = evaluation.make_predict_fn(model)
  logits = np.asarray(predict(variables["params"], images, variables["batch_stats"])[0])
  gamma = float(np.median(logits[:, ~ABSENT].max(1) - logits[:, ABSENT].max(1)))
  paths = export.export_calibrated(variables, ABSENT, gamma, str(tmp_path / "calibrated.npz"), rule="PCV")
  loaded = weights.load_npz(paths["npz"])
  assert set(loaded) == {"params", "batch_stats"}
  for a, b in zip(jax.tree.leaves(loaded["batch_stats"]), jax.tree.leaves(variables["batch_stats"])):
    np.testing.assert_array_equal(a, b)
  new = np.asarray(predict(loaded["params"], images, loaded["batch_stats"])[0])
  want = np.argmax(np.asarray(calibration.shift_absent(logits, ABSENT, gamma)), axis=1)
  np.testing.assert_array_equal(np.argmax(new, axis=1), want)
  assert np.mean(want != np.argmax(logits, axis=1)) > 0.2
