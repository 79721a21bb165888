"""The method registry, the LDIFS distance and the Holistic Transfer distillation term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import holistic_transfer
from ftcal_jax import ldifs
from ftcal_jax import methods


def test_registry_names_and_recipes():
  assert methods.list_methods() == ("finetune", "frozen_classifier", "holistic_transfer", "holistic_transfer_lolsgd",
                                    "ldifs", "linear_probe", "oracle", "pretrain")
  # Seeds stay where they were before LOLSGD was added (train.py's per-method seed offset).
  assert [methods.seed_index(n) for n in ("finetune", "linear_probe", "oracle", "holistic_transfer_lolsgd")
         ] == [0, 4, 5, 7]
  assert methods.get_method("holistic_transfer_lolsgd").update == "lolsgd"
  assert methods.get_method("holistic_transfer_lolsgd").trainable == "backbone"
  assert methods.get_method("finetune").trainable == "all"
  assert methods.get_method("linear_probe").trainable == "head"
  assert methods.get_method("frozen_classifier").trainable == "backbone"
  assert methods.get_method("oracle").train_classes == "all"
  assert methods.get_method("pretrain").train_split == "source"
  assert methods.get_method("ldifs").needs_reference
  assert methods.get_method("holistic_transfer").trainable == "backbone"
  assert all(
      methods.get_method(n).train_classes == "seen"
      for n in ("finetune", "linear_probe", "frozen_classifier", "ldifs", "holistic_transfer"))


def test_unknown_method_lists_valid_names():
  with pytest.raises(ValueError, match="Unknown method 'fine_tune'. Valid names: finetune, frozen_classifier"):
    methods.get_method("fine_tune")


def test_default_taps_scale_with_depth():
  assert ldifs.default_taps(12) == (0, 3, 6, 9, 12)
  assert ldifs.default_taps(4) == (0, 1, 2, 3, 4)
  assert ldifs.default_taps(2) == (0, 1, 2)


def test_ldifs_distance_exact_values():
  # One sample, one tap, two tokens of two channels.
  a = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])
  b = jnp.array([[[0.0, 3.0], [0.0, 1.0]]])
  # channel: token 0 vectors (1,0) vs (0,1): distance 2; token 1 identical after normalising: 0. Mean 1.
  np.testing.assert_allclose(ldifs.ldifs_distance({0: a}, {0: b}, (0,), "channel"), 1.0, rtol=1e-6)
  # token: channel 0 of a is (1,0), of b is (0,0) -> normalised stays 0: distance 1.
  # channel 1 of a is (0,1), of b is (3,1)/sqrt(10): distance 2 - 2/sqrt(10). Mean over the 2 channels.
  want = (1.0 + 2.0 - 2.0 / np.sqrt(10.0)) / 2
  np.testing.assert_allclose(ldifs.ldifs_distance({0: a}, {0: b}, (0,), "token"), want, rtol=1e-6)


def test_ldifs_is_zero_for_identical_features_and_scale_invariant():
  x = jax.random.normal(jax.random.key(0), (3, 5, 8))
  assert float(ldifs.ldifs_distance({1: x}, {1: 4.0 * x}, (1,))) == pytest.approx(0.0, abs=1e-6)
  y = jax.random.normal(jax.random.key(1), (3, 5, 8))
  assert float(ldifs.ldifs_distance({1: x, 2: x}, {1: y, 2: x}, (1, 2))) > 0.1
  with pytest.raises(ValueError, match="normalisation"):
    ldifs.ldifs_distance({1: x}, {1: x}, (1,), "batch")


def test_absent_distillation_only_sees_absent_logits():
  absent = np.array([False, False, True, True, True])
  z = jnp.array([[1.0, 2.0, 0.5, -1.0, 3.0]])
  # Changing S logits or shifting all U logits by a constant leaves the U softmax, and the KL, unchanged.
  z2 = z.at[0, :2].set(jnp.array([9.0, -9.0])).at[0, 2:].add(5.0)
  assert float(holistic_transfer.absent_distillation(z2, z, absent)) == pytest.approx(0.0, abs=1e-6)
  z3 = z.at[0, 3].set(4.0)
  t = 2.0
  p = jax.nn.softmax(z[0, 2:] / t)
  q = jax.nn.softmax(z3[0, 2:] / t)
  want = t * t * float(jnp.sum(p * (jnp.log(p) - jnp.log(q))))
  np.testing.assert_allclose(holistic_transfer.absent_distillation(z3, z, absent, t), want, rtol=1e-5)
  with pytest.raises(ValueError, match="absent"):
    holistic_transfer.absent_distillation(z, z, np.zeros(5, bool))
