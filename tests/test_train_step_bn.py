"""The train step with a BatchNorm model (a small ResNet): statistics update in fine-tuning, not in a linear probe,
cover the global batch on 8 devices, and feed LDIFS's frozen reference."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from ftcal_jax import methods
from ftcal_jax import optimizers
from ftcal_jax import train_step
from ftcal_jax.models import get_model

CLASSES = 4


def _opt():
  return ml_collections.ConfigDict(
      dict(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, backbone_lr_mult=0.1, warmup_steps=0,
           schedule="cosine", grad_clip_norm=1.0))


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, CLASSES, n).astype(np.int32)
  images = rng.normal(size=(n, 16, 16, 3)).astype(np.float32) + labels[:, None, None, None]
  return {"image": images, "label": labels}


def _run(method_name, devices, steps=2, exact=False):
  """(initial variables, final state, per-step metrics) of `steps` steps of a two-stage ResNet."""
  model = get_model("ResNet-testing", CLASSES, stage_sizes=(1, 1))
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  params = dict(variables["params"])
  params["head"] = {
      "kernel": 0.1 * jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape), "bias": params["head"]
                                                                                                    ["bias"]
  }
  method, mesh, opt = methods.get_method(method_name), train_step.make_mesh(devices), _opt()
  tx = optimizers.make_optimizer(opt, optimizers.param_labels(params, method.trainable))
  ref = method.needs_reference
  state = train_step.create_train_state(params, tx, mesh, steps, ref_params=params if ref else None,
                                        batch_stats=variables["batch_stats"],
                                        ref_batch_stats=variables["batch_stats"] if ref else None)
  ldifs_cfg = ml_collections.ConfigDict(dict(alpha=10.0, taps=(), normalisation="channel"))
  step = train_step.make_train_step(model, method, tx, opt, mesh, ldifs_config=ldifs_cfg, exact_reductions=exact)
  history = []
  for i in range(steps):
    state, metrics = step(state, jax.device_put(_batch(i), NamedSharding(mesh, P("data"))), jax.random.key(2))
    history.append(jax.device_get(metrics))
  return jax.device_get(variables), jax.device_get(state), history


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


@pytest.mark.slow
def test_finetune_updates_batch_stats_the_same_on_8_devices_as_on_1():
  """The statistics of a batch sharded over 8 devices are the global batch's: the same step as on 1 device."""
  init, one, hist_one = _run("finetune", jax.devices()[:1])
  _, eight, hist_eight = _run("finetune", jax.devices())
  _close(eight.batch_stats, one.batch_stats)
  _close(eight.params, one.params)
  _close([h["loss"] for h in hist_eight], [h["loss"] for h in hist_one])
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), one.batch_stats, init["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0  # every statistic moved: BatchNorm ran in train mode


def test_linear_probe_keeps_the_pre_trained_statistics():
  init, state, _ = _run("linear_probe", jax.devices()[:1], steps=1)
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, init["batch_stats"])
  assert not np.allclose(state.params["head"]["kernel"], 0.1 * jax.random.normal(jax.random.key(1), (64, CLASSES)))


def test_ldifs_reference_uses_frozen_statistics():
  """At step 0 the model equals its reference except that it normalises with batch statistics (train mode), so the
  LDIFS distance is positive; the reference's statistics never change."""
  init, state, history = _run("ldifs", jax.devices()[:1], steps=1)
  assert history[0]["reg"] > 0 and np.isfinite(history[0]["loss"])
  jax.tree.map(np.testing.assert_array_equal, state.ref_batch_stats, init["batch_stats"])
  assert not np.allclose(state.batch_stats["bn1"]["mean"], init["batch_stats"]["bn1"]["mean"])


def test_exact_reductions_refuse_batchnorm_with_the_fix():
  with pytest.raises(ValueError, match="exact_reductions does not support BatchNorm.*exact_reductions=False"):
    _run("finetune", jax.devices()[:2], steps=1, exact=True)
