"""Optimiser recipes: labels, learning-rate multipliers, frozen groups, schedules and clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ftcal_jax import optimizers


def _params():
  return {"head": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))},
          "embedding": {"kernel": jnp.ones((2, 4))}}


def _cfg(**kw):
  base = dict(name="sgd", lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, backbone_lr_mult=0.1,
              warmup_steps=0, schedule="constant", grad_clip_norm=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.mark.parametrize("trainable,head,backbone", [
    ("all", "head", "backbone"), ("head", "head", "frozen"), ("backbone", "frozen", "backbone")])
def test_param_labels(trainable, head, backbone):
  labels = optimizers.param_labels(_params(), trainable)
  assert labels["head"] == {"kernel": head, "bias": head}
  assert labels["embedding"]["kernel"] == backbone


def test_param_labels_errors():
  with pytest.raises(ValueError, match="trainable"):
    optimizers.param_labels(_params(), "everything")
  with pytest.raises(ValueError, match="no 'head'"):
    optimizers.param_labels({"embedding": {"kernel": jnp.ones(2)}}, "all")


def test_backbone_gets_a_tenth_of_the_head_learning_rate():
  params = _params()
  tx = optimizers.make_optimizer(_cfg(), 10, optimizers.param_labels(params, "all"))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["head"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["embedding"]["kernel"], -0.01, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("trainable,frozen_key", [("head", "embedding"), ("backbone", "head")])
def test_frozen_params_never_move_even_with_weight_decay(name, trainable, frozen_key):
  params = _params()
  cfg = _cfg(name=name, weight_decay=0.5, momentum=0.9, nesterov=True, grad_clip_norm=1.0)
  tx = optimizers.make_optimizer(cfg, 10, optimizers.param_labels(params, trainable))
  state = tx.init(params)
  p = params
  for _ in range(3):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, p), state, p)
    p = optax.apply_updates(p, updates)
  for a, b in zip(jax.tree.leaves(p[frozen_key]), jax.tree.leaves(params[frozen_key])):
    np.testing.assert_array_equal(a, b)
  moved = "embedding" if frozen_key == "head" else "head"
  assert not np.allclose(jax.tree.leaves(p[moved])[0], jax.tree.leaves(params[moved])[0])


def test_sgd_weight_decay_is_added_to_the_gradient_like_pytorch():
  params = _params()
  tx = optimizers.make_optimizer(_cfg(weight_decay=0.5), 10, optimizers.param_labels(params, "all"))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # A zero gradient still shrinks the weights by lr * wd * w.
  np.testing.assert_allclose(updates["head"]["kernel"], -0.1 * 0.5)


def test_cosine_schedule_with_warmup():
  sched = optimizers.make_schedule(_cfg(schedule="cosine", warmup_steps=5), 20)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(sched(20)), 0.0, atol=1e-7)
  sched = optimizers.make_schedule(_cfg(schedule="cosine"), 20)
  np.testing.assert_allclose(float(sched(0)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 0.05, rtol=1e-5)
  with pytest.raises(ValueError, match="Unknown schedule"):
    optimizers.make_schedule(_cfg(schedule="step"), 20)


def test_clipping_bounds_the_global_norm_of_trainable_grads():
  params = _params()
  cfg = _cfg(lr=1.0, backbone_lr_mult=1.0, grad_clip_norm=1.0)
  tx = optimizers.make_optimizer(cfg, 10, optimizers.param_labels(params, "head"))
  grads = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # The frozen embedding's huge gradient does not count; the head's update has norm exactly 1.
  np.testing.assert_allclose(optax.tree.norm(updates["head"]), 1.0, rtol=1e-5)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="Valid names: sgd, adamw"):
    optimizers.make_optimizer(_cfg(name="lamb"), 10, optimizers.param_labels(_params(), "all"))
