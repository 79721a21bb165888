"""Optimiser recipes: labels, learning-rate multipliers, frozen groups, schedules and clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ftcal_jax import optimizers


def _params():
  return {"head": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))}, "embedding": {"kernel": jnp.ones((2, 4))}}


def _cfg(**kw):
  base = dict(name="sgd", lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, backbone_lr_mult=0.1, warmup_steps=0,
              schedule="constant", grad_clip_norm=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.mark.parametrize("trainable,head,backbone", [("all", "head", "backbone"), ("head", "head", "frozen"),
                                                     ("backbone", "frozen", "backbone")])
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
  cfg = _cfg()
  tx = optimizers.make_optimizer(cfg, optimizers.param_labels(params, "all"))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  updates = optimizers.scale_updates(updates, optimizers.learning_rate(cfg, 0, 10))
  np.testing.assert_allclose(updates["head"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["embedding"]["kernel"], -0.01, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_unit_rate_optimiser_times_schedule_equals_optax_scheduled_optimiser(name):
  # The step applies learning_rate() outside the optimiser; check that equals optax's own schedule inside it.
  params = _params()
  cfg = _cfg(name=name, momentum=0.9, nesterov=True, weight_decay=0.01, backbone_lr_mult=1.0, schedule="cosine",
             warmup_steps=3)
  tx = optimizers.make_optimizer(cfg, optimizers.param_labels(params, "all"))
  sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, 3, 12)
  if name == "sgd":
    ref = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(sched, momentum=0.9, nesterov=True))
  else:
    ref = optax.adamw(sched, weight_decay=0.01)
  p, q = params, params
  s, r = tx.init(p), ref.init(q)
  for step in range(12):
    g = jax.tree.map(lambda x: jnp.sin(x * (step + 1)), p)
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, optimizers.scale_updates(u, optimizers.learning_rate(cfg, step, 12)))
    g = jax.tree.map(lambda x: jnp.sin(x * (step + 1)), q)
    v, r = ref.update(g, r, q)
    q = optax.apply_updates(q, v)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("trainable,frozen_key", [("head", "embedding"), ("backbone", "head")])
def test_frozen_params_never_move_even_with_weight_decay(name, trainable, frozen_key):
  params = _params()
  cfg = _cfg(name=name, weight_decay=0.5, momentum=0.9, nesterov=True, grad_clip_norm=1.0)
  tx = optimizers.make_optimizer(cfg, optimizers.param_labels(params, trainable))
  state = tx.init(params)
  p = params
  for step in range(3):
    updates, state = tx.update(jax.tree.map(jnp.ones_like, p), state, p)
    p = optax.apply_updates(p, optimizers.scale_updates(updates, optimizers.learning_rate(cfg, step, 10)))
  for a, b in zip(jax.tree.leaves(p[frozen_key]), jax.tree.leaves(params[frozen_key])):
    np.testing.assert_array_equal(a, b)
  moved = "embedding" if frozen_key == "head" else "head"
  assert not np.allclose(jax.tree.leaves(p[moved])[0], jax.tree.leaves(params[moved])[0])


def test_sgd_weight_decay_is_added_to_the_gradient_like_pytorch():
  params = _params()
  tx = optimizers.make_optimizer(_cfg(weight_decay=0.5), optimizers.param_labels(params, "all"))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # A zero gradient still shrinks the weights by lr * wd * w (here at unit learning rate).
  np.testing.assert_allclose(updates["head"]["kernel"], -0.5)


def test_cosine_schedule_with_warmup():
  lr = lambda cfg, step, total: float(optimizers.learning_rate(cfg, step, total))
  cfg = _cfg(schedule="cosine", warmup_steps=5)
  assert lr(cfg, 0, 20) == 0.0
  np.testing.assert_allclose(lr(cfg, 5, 20), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(cfg, 20, 20), 0.0, atol=1e-7)
  cfg = _cfg(schedule="cosine")
  np.testing.assert_allclose(lr(cfg, 0, 20), 0.1, rtol=1e-6)
  np.testing.assert_allclose(lr(cfg, 10, 20), 0.05, rtol=1e-5)
  # The run length may be a traced value: one compiled step serves every run length.
  jitted = jax.jit(lambda total: optimizers.learning_rate(cfg, 10, total))
  np.testing.assert_allclose(jitted(40), lr(cfg, 10, 40), rtol=1e-6)
  np.testing.assert_allclose(lr(_cfg(schedule="constant", warmup_steps=4), 2, 20), 0.05, rtol=1e-6)
  with pytest.raises(ValueError, match="Unknown schedule"):
    optimizers.learning_rate(_cfg(schedule="step"), 0, 20)


def test_clipping_bounds_the_global_norm_of_trainable_grads():
  params = _params()
  cfg = _cfg(lr=1.0, backbone_lr_mult=1.0, grad_clip_norm=1.0)
  tx = optimizers.make_optimizer(cfg, optimizers.param_labels(params, "head"))
  grads = jax.tree.map(lambda x: 100.0 * jnp.ones_like(x), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # The frozen embedding's huge gradient does not count; the head's update has norm exactly 1.
  np.testing.assert_allclose(optax.tree.norm(updates["head"]), 1.0, rtol=1e-5)


def test_unknown_optimizer():
  with pytest.raises(ValueError, match="Valid names: sgd, adamw"):
    optimizers.make_optimizer(_cfg(name="lamb"), optimizers.param_labels(_params(), "all"))


@pytest.mark.parametrize("name, ref", [("sgd", None), ("adam", optax.adam), ("adabelief", optax.adabelief),
                                       ("adadelta", optax.adadelta), ("adagrad", optax.adagrad),
                                       ("rmsprop", optax.rmsprop)])
def test_the_study_optimizers_build_and_match_optax(name, ref):
  """The six optimisers of the study: unit-lr updates times lr equal optax's own optimiser at that lr."""
  assert name in optimizers.list_optimizers()
  params = _params()
  lr, wd = 0.05, 0.01
  tx = optimizers.make_optimizer(_cfg(name=name, lr=lr, weight_decay=wd, backbone_lr_mult=1.0),
                                 optimizers.param_labels(params, "all"))
  want_tx = optax.chain(optax.add_decayed_weights(wd), ref(lr) if ref else optax.sgd(lr))
  state, want_state = tx.init(params), want_tx.init(params)
  p, q = params, params
  for i in range(3):
    wave = lambda x, k=i + 1.0: k * jnp.sin(jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape))
    grads = jax.tree.map(wave, p)
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, optimizers.scale_updates(updates, jnp.float32(lr)))
    want, want_state = want_tx.update(grads, want_state, q)
    q = optax.apply_updates(q, want)
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(p["head"]["kernel"]), 1.0)  # It moved.
