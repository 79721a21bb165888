"""The pure data-parallel train step on synthetic data, on 1 and on 8 CPU devices."""

import chex
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

NUM_CLASSES = 6
ABSENT = np.array([False, False, False, True, True, True])


def _opt(name="sgd", lr=0.05):
  return ml_collections.ConfigDict(
      dict(name=name, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4, backbone_lr_mult=0.1, warmup_steps=0,
           schedule="cosine", grad_clip_norm=1.0))


def _batches(n, batch=16, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    labels = rng.integers(0, 3, batch).astype(np.int32)  # Seen classes only.
    images = rng.normal(size=(batch, 16, 16, 1)).astype(np.float32) + labels[:, None, None, None]
    yield {"image": images, "label": labels}


def _setup(method_name, mesh, opt=None, steps=10, exact=False):
  model = get_model("ViT-testing", NUM_CLASSES, num_layers=1)  # One block: the step compiles in about a second.
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
  # A non-zero head, as after pre-training, so that every parameter gets a gradient.
  params["head"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
  method = methods.get_method(method_name)
  opt = opt or _opt()
  tx = optimizers.make_optimizer(opt, optimizers.param_labels(params, method.trainable))
  ref = params if method.needs_reference else None
  state = train_step.create_train_state(params, tx, mesh, steps, ref_params=ref)
  ldifs_cfg = ml_collections.ConfigDict(dict(alpha=10.0, taps=(), normalisation="channel"))
  ht_cfg = ml_collections.ConfigDict(dict(distill_weight=1.0, temperature=2.0))
  step = train_step.make_train_step(model, method, tx, opt, mesh, absent_mask=ABSENT, ldifs_config=ldifs_cfg,
                                    ht_config=ht_cfg, exact_reductions=exact)
  return params, state, step


def _run(method_name, mesh, n=5, opt=None, exact=False):
  params, state, step = _setup(method_name, mesh, opt, exact=exact)
  sharding = NamedSharding(mesh, P("data"))
  losses = []
  for batch in _batches(n):
    state, metrics = step(state, jax.device_put(batch, sharding), jax.random.key(2))
    losses.append(float(metrics["loss"]))
  return params, state, losses, step


def test_eight_devices_match_one_device_without_retracing():
  assert jax.device_count() == 8
  _, s8, l8, step8 = _run("finetune", train_step.make_mesh())
  _, s1, l1, _ = _run("finetune", train_step.make_mesh(jax.devices()[:1]))
  np.testing.assert_allclose(l8, l1, atol=1e-5, rtol=0)
  for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert l8[-1] < l8[0]
  assert int(s8.step) == 5
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(s8.params))
  assert step8._cache_size() == 1  # pylint: disable=protected-access  (five steps, one trace)


def test_exact_reductions_do_not_depend_on_the_device_order_and_match_the_all_reduce():
  """The fixed-order sum: the same bits whichever device holds which shard; the all-reduce's numbers to rounding."""
  _, exact, l_exact, _ = _run("finetune", train_step.make_mesh(), exact=True)
  _, reordered, l_reordered, _ = _run("finetune", train_step.make_mesh(jax.devices()[::-1]), exact=True)
  _, plain, l_plain, _ = _run("finetune", train_step.make_mesh())
  assert l_exact == l_reordered and l_exact[-1] < l_exact[0]
  chex.assert_trees_all_equal(jax.device_get(exact.params), jax.device_get(reordered.params))
  np.testing.assert_allclose(l_exact, l_plain, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(exact.params), jax.tree.leaves(plain.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_linear_probe_and_holistic_transfer_freeze_their_parts():
  mesh = train_step.make_mesh()
  params, state, _, _ = _run("linear_probe", mesh, n=3)
  chex.assert_trees_all_equal(state.params["Transformer"], params["Transformer"])
  assert not np.allclose(state.params["head"]["kernel"], params["head"]["kernel"])
  params, state, _, _ = _run("holistic_transfer", mesh, n=3)
  chex.assert_trees_all_equal(state.params["head"], params["head"])
  assert not np.allclose(state.params["embedding"]["kernel"], params["embedding"]["kernel"])


def test_ldifs_regulariser_starts_at_zero_and_grows():
  mesh = train_step.make_mesh()
  _, state, step = _setup("ldifs", mesh, opt=_opt(lr=0.5))
  sharding = NamedSharding(mesh, P("data"))
  regs = []
  for batch in _batches(4):
    state, metrics = step(state, jax.device_put(batch, sharding), jax.random.key(2))
    regs.append(float(metrics["reg"]))
  assert regs[0] == pytest.approx(0.0, abs=1e-6)  # The model still equals its reference.
  assert regs[-1] > 1e-5


def test_batch_not_divisible_by_devices():
  with pytest.raises(ValueError, match="not divisible by the 8 devices.*multiple of 8"):
    train_step.check_batch_divisible(12, train_step.make_mesh())
  train_step.check_batch_divisible(16, train_step.make_mesh())
