"""Leave-out local SGD (lolsgd.py): plain local SGD as a special case, the exact average, the left-out data."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ftcal_jax import lolsgd
from ftcal_jax import methods
from ftcal_jax import optimizers
from ftcal_jax import train_step
from ftcal_jax.models import get_model

NUM_CLASSES = 6
SEEN = (0, 1, 2, 3)
ABSENT = np.array([False, False, False, False, True, True])
HT = ml_collections.ConfigDict(dict(distill_weight=1.0, temperature=2.0))
OPT = ml_collections.ConfigDict(
    dict(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, backbone_lr_mult=0.1, warmup_steps=0,
         schedule="constant", grad_clip_norm=0.0))


def _batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.tile(np.asarray(SEEN, np.int32), b // len(SEEN)))
  images = rng.normal(size=(b, 16, 16, 1)).astype(np.float32) + labels[:, None, None, None]
  return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


class _Setup:
  """A one-block ViT-testing with a non-zero head, the LOLSGD method's optimiser and fresh-state factory."""

  def __init__(self):
    self.model = get_model("ViT-testing", NUM_CLASSES, num_layers=1)
    params = self.model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    params["head"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
    self.params = params
    self.method = methods.get_method("holistic_transfer_lolsgd")
    self.tx = optimizers.make_optimizer(OPT, optimizers.param_labels(params, self.method.trainable))
    self.mesh = train_step.make_mesh(jax.devices()[:1])  # One device: the tests compile a few programs.

  def state(self):
    return train_step.create_train_state(self.params, self.tx, self.mesh, 10, ref_params=self.params)

  def round_step(self, copies, local_steps, leave_out):
    cfg = ml_collections.ConfigDict(
        dict(lolsgd_copies=copies, lolsgd_local_steps=local_steps, lolsgd_leave_out=leave_out))
    return lolsgd.make_lolsgd_step(self.model, self.method, self.tx, OPT, self.mesh, seen=SEEN, num_classes=NUM_CLASSES,
                                   lolsgd_config=cfg, absent_mask=ABSENT, ht_config=HT)

  def plain(self, jit=True):
    return train_step.make_train_step(self.model, self.method, self.tx, OPT, self.mesh, absent_mask=ABSENT,
                                      ht_config=HT, jit=jit)


SETUP = _Setup()


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_one_copy_without_leave_out_is_plain_local_sgd():
  batch, k = _batch(8), 2
  new, _ = SETUP.round_step(1, k, 0.0)(SETUP.state(), batch, jax.random.key(3))
  plain, state = SETUP.plain(), SETUP.state()
  for i in range(k):  # K plain steps on consecutive B / K slices of the batch.
    state, _ = plain(state, jax.tree.map(lambda x: x[i * 4:(i + 1) * 4], batch), jax.random.key(3))
  assert int(new.step) == 1 and int(state.step) == k
  for a, b in zip(_leaves(new.params), _leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(_leaves(new.params), _leaves(SETUP.params)))
  assert moved > 1e-4  # The round did train.


def test_round_update_is_the_mean_of_the_local_updates():
  copies, k, f, rng, batch = 3, 2, 0.5, jax.random.key(4), _batch(8, seed=1)
  new, _ = SETUP.round_step(copies, k, f)(SETUP.state(), batch, rng)
  data_rng, copy_rng = lolsgd.round_rngs(rng, 0)
  batches, left, valid = lolsgd.local_batches(batch, data_rng, SEEN, NUM_CLASSES, copies=copies, local_steps=k,
                                              leave_out=f)
  assert bool(valid.all())
  run = jax.jit(lambda s, b, r: lolsgd.local_sgd(SETUP.plain(jit=False), s, b, r)[0].params)
  start, updates = SETUP.state(), []
  for m, r in enumerate(jax.random.split(copy_rng, copies)):
    local = run(start, jax.tree.map(lambda x: x[m], batches), r)  # pylint: disable=cell-var-from-loop
    updates.append([a - b for a, b in zip(_leaves(local), _leaves(SETUP.params))])
  for i, got in enumerate(_leaves(new.params)):
    want = np.mean([u[i] for u in updates], axis=0)
    # atol: float32 rounding of theta + delta (one ulp of the parameters, ~1e-7).
    np.testing.assert_allclose(got - _leaves(SETUP.params)[i], want, rtol=1e-5, atol=3e-7)
  # The copies left out different classes, so their updates differ and the mean is not any one of them.
  assert len({tuple(sorted(np.asarray(l).tolist())) for l in left}) > 1
  assert any(not np.allclose(a, b, atol=1e-7) for a, b in zip(updates[0], updates[1]))
  head = list(jax.tree_util.tree_flatten_with_path(new.params)[0])
  for (path, leaf), start_leaf in zip(head, _leaves(SETUP.params)):
    if "head" in jax.tree_util.keystr(path):  # The frozen classifier stays put.
      np.testing.assert_array_equal(np.asarray(leaf), start_leaf)


def test_rounds_are_deterministic():
  step = SETUP.round_step(2, 2, 0.5)
  a, ma = step(SETUP.state(), _batch(8, seed=2), jax.random.key(5))
  b, mb = step(SETUP.state(), _batch(8, seed=2), jax.random.key(5))
  for x, y in zip(_leaves(a.params) + _leaves(a.opt_state), _leaves(b.params) + _leaves(b.opt_state)):
    np.testing.assert_array_equal(x, y)
  assert float(ma["loss"]) == float(mb["loss"])
  c, _ = step(SETUP.state(), _batch(8, seed=2), jax.random.key(6))  # Another rng: other left-out classes.
  assert any(not np.array_equal(x, y) for x, y in zip(_leaves(a.params), _leaves(c.params)))


def test_left_out_classes_are_absent_from_each_copys_batches():
  b = 16
  labels = np.tile(np.asarray(SEEN, np.int32), b // len(SEEN))
  images = np.broadcast_to(np.arange(b, dtype=np.float32)[:, None, None, None], (b, 2, 2, 1))  # Pixel = row id.
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  batches, left, valid = lolsgd.local_batches(batch, jax.random.key(7), SEEN, NUM_CLASSES, copies=5, local_steps=4,
                                              leave_out=0.5)
  assert batches["label"].shape == (5, 4, 4) and batches["image"].shape == (5, 4, 4, 2, 2, 1)
  assert left.shape == (5, 2) and bool(valid.all())
  for m in range(5):
    out = set(np.asarray(left[m]).tolist())
    assert len(out) == 2 and out <= set(SEEN)
    got = np.asarray(batches["label"][m]).ravel()
    assert not set(got.tolist()) & out
    assert set(got.tolist()) == set(SEEN) - out  # Every kept class is used.
    rows = np.asarray(batches["image"][m][..., 0, 0, 0]).ravel().astype(int)
    np.testing.assert_array_equal(labels[rows], got)  # Images travel with their labels.
  assert lolsgd.num_left_out(24, 0.5) == 12 and lolsgd.num_left_out(4, 0.0) == 0
