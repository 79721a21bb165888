"""The cosine classifier head: s * cos(w_c, f) against numpy, and the linear head's checkpoint loading into it."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax.models import get_model
from ftcal_jax.models import weights


def _params(model, seed=0):
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.randn(*s.shape), s.dtype), shapes)


def test_cosine_logits_equal_scaled_cosine_in_numpy():
  model = get_model("ViT-testing", 5, head="cosine", cosine_scale=7.0)
  params = _params(model)
  images = jnp.asarray(np.random.RandomState(1).randn(3, 16, 16, 3), jnp.float32)
  out = jax.jit(model.apply)({"params": params}, images)
  f = np.asarray(out["pre_logits"], np.float64)
  w = np.asarray(params["head"]["kernel"], np.float64)  # (D, C)
  b = np.asarray(params["head"]["bias"], np.float64)
  cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
  np.testing.assert_allclose(np.asarray(out["logits"]), 7.0 * cos + b, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(out["logits"]) - b).max() <= 7.0 + 1e-5
  # The bias is a plain additive offset (export.py folds γ into it).
  offset = np.arange(5, dtype=np.float32)
  moved = {**params, "head": {**params["head"], "bias": params["head"]["bias"] + offset}}
  np.testing.assert_allclose(np.asarray(jax.jit(model.apply)({"params": moved}, images)["logits"]),
                             np.asarray(out["logits"]) + offset, rtol=0, atol=1e-5)


def test_linear_checkpoint_restores_into_cosine_head(tmp_path):
  linear = get_model("ViT-testing", 5)
  cosine = get_model("ViT-testing", 5, head="cosine")
  params = _params(linear, seed=2)
  path = os.path.join(tmp_path, "linear.npz")
  weights.save_npz(jax.device_get(params), path)
  target = jax.eval_shape(cosine.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert jax.tree.structure(target) == jax.tree.structure(params)
  restored = weights.restore_into(target, weights.load_npz(path), head="keep")
  np.testing.assert_array_equal(np.asarray(restored["head"]["kernel"]), np.asarray(params["head"]["kernel"]))
  images = jnp.asarray(np.random.RandomState(3).randn(2, 16, 16, 3), jnp.float32)
  lin_out = jax.jit(linear.apply)({"params": params}, images)
  cos_out = jax.jit(cosine.apply)({"params": jax.tree.map(jnp.asarray, restored)}, images)
  np.testing.assert_allclose(np.asarray(cos_out["pre_logits"]), np.asarray(lin_out["pre_logits"]), rtol=1e-6)
  assert not np.allclose(np.asarray(cos_out["logits"]), np.asarray(lin_out["logits"]))


def test_fresh_cosine_head_is_not_zero_and_gradients_are_finite():
  model = get_model("ViT-testing", 4, head="cosine")
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert float(jnp.abs(params["head"]["kernel"]).min()) > 0.0
  images = jnp.asarray(np.random.RandomState(4).randn(2, 16, 16, 3), jnp.float32)
  loss = lambda p: jnp.sum(model.apply({"params": p}, images)["logits"][:, 0])
  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  np.testing.assert_array_equal(np.asarray(grads["head"]["bias"]), 0.0)


def test_a_linear_checkpoint_starts_the_cosine_offset_at_zero(tmp_path):
  """init_variables keeps the linear kernel but not its bias, which means nothing to cosine scores."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ftcal_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  linear = get_model("ViT-testing", 5)
  params = _params(linear, seed=5)
  path = os.path.join(tmp_path, "linear.npz")
  weights.save_npz(jax.device_get(params), path)
  config = ml_collections.ConfigDict({"init_checkpoint": path, "init_head": "keep", "seed": 0, "model": {}})
  lines = []
  got = pretrained.init_variables(config, get_model("ViT-testing", 5, head="cosine"), (16, 16, 3), lines.append)
  np.testing.assert_array_equal(np.asarray(got["params"]["head"]["bias"]), 0.0)
  np.testing.assert_array_equal(np.asarray(got["params"]["head"]["kernel"]), np.asarray(params["head"]["kernel"]))
  assert "offset set to 0" in lines[-1]
  kept = pretrained.init_variables(config, linear, (16, 16, 3), lines.append)  # A linear head keeps its bias.
  np.testing.assert_array_equal(np.asarray(kept["params"]["head"]["bias"]), np.asarray(params["head"]["bias"]))
