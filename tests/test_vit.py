"""The Flax ViT and its registry: outputs, taps, parameter counts, bf16 compute."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax.models import MODEL_CONFIGS, get_model, list_models


def _shapes(model, res=32):
  """Parameter shapes without running init (eval_shape compiles nothing)."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, res, res, 3)))["params"]


def _random_params(model, res=32, seed=0):
  """Random values for every leaf (numpy, so no per-shape compiles), so zero-initialised heads hide no bugs."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.randn(*s.shape), s.dtype), _shapes(model, res))


def _apply(model):
  # Jitted: op-by-op Flax on 2 shared CPU cores costs seconds per call.
  return jax.jit(model.apply, static_argnames=("train", "feature_blocks"))


def test_registry_names_and_unknown_name():
  for name in ("ViT-Ti/16", "ViT-S/32", "ViT-B/16", "ViT-L/32", "ViT-glyphs/8", "ViT-glyphs/4", "ViT-testing"):
    assert name in list_models()
  with pytest.raises(ValueError, match=r"Unknown model 'ViT-X/16'.*ViT-B/16"):
    get_model("ViT-X/16", 10)


# Published sizes with a 1000-class head (torchvision's vit_{b,l}_{16,32}, timm's vit_{tiny,small}_patch16_224).
_KNOWN_SIZES = {
    "ViT-Ti/16": 5_717_416, "ViT-S/16": 22_050_664, "ViT-B/16": 86_567_656, "ViT-B/32": 88_224_232,
    "ViT-L/16": 304_326_632, "ViT-L/32": 306_535_400
}


def _analytic_size(cfg, res, classes):
  """Parameter count of a class-token ViT from its widths, counted by hand."""
  d, m, p = cfg["hidden_size"], cfg["mlp_dim"], cfg["patch_size"][0]
  tokens = (res // p)**2 + 1
  block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)  # 2 LayerNorms, q/k/v/out, MLP
  return (3 * p * p * d + d) + d + tokens * d + cfg["num_layers"] * block + 2 * d + (d * classes + classes)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_parameter_counts(name):
  res = 32 if name in ("ViT-glyphs/8", "ViT-glyphs/4", "ViT-testing") else 224
  # eval_shape: no memory for the big models.
  shapes = jax.eval_shape(get_model(name, 1000).init, jax.random.key(0), jnp.zeros((1, res, res, 3)))
  count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  assert count == _analytic_size(MODEL_CONFIGS[name], res, 1000)
  if name in _KNOWN_SIZES:
    assert count == _KNOWN_SIZES[name]


def test_outputs_and_taps():
  model = get_model("ViT-testing", 5)
  params = _random_params(model)
  x = jnp.asarray(np.random.RandomState(1).randn(3, 32, 32, 3), jnp.float32)
  apply = _apply(model)
  out = apply({"params": params}, x, feature_blocks=(0, 1, 2))
  assert out["logits"].shape == (3, 5) and out["logits"].dtype == jnp.float32
  assert out["pre_logits"].shape == (3, 16)
  assert sorted(out["blocks"]) == [0, 1, 2]
  assert all(v.shape == (3, 17, 16) for v in out["blocks"].values())  # 16 patches + class token
  # pre_logits is the class token after the final LayerNorm, and the logits are its head projection.
  ln = params["Transformer"]["encoder_norm"]
  last = out["blocks"][2][:, 0]
  mu, var = last.mean(-1, keepdims=True), last.var(-1, keepdims=True)
  expected = (last - mu) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
  np.testing.assert_allclose(out["pre_logits"], expected, atol=1e-5)
  np.testing.assert_allclose(out["logits"], out["pre_logits"] @ params["head"]["kernel"] + params["head"]["bias"],
                             atol=1e-5)
  assert apply({"params": params}, x)["blocks"] == {}


def test_gap_representation_and_headless():
  model = get_model("ViT-testing", 4, classifier="gap", representation_size=8)
  shapes = _shapes(model)
  assert "cls" not in shapes and "pre_logits" in shapes
  out = _apply(model)({"params": _random_params(model)}, jnp.ones((2, 32, 32, 3)), feature_blocks=(2,))
  assert out["pre_logits"].shape == (2, 8) and out["blocks"][2].shape == (2, 16, 16)
  headless = get_model("ViT-testing", 0)
  assert "head" not in _shapes(headless)
  out = _apply(headless)({"params": _random_params(headless)}, jnp.ones((2, 32, 32, 3)))
  np.testing.assert_array_equal(out["logits"], out["pre_logits"])


def test_bad_arguments():
  model = get_model("ViT-testing", 4)
  with pytest.raises(ValueError, match=r"feature_blocks \[3\] outside \[0, 2\]"):
    _apply(model)({"params": _random_params(model)}, jnp.ones((1, 32, 32, 3)), feature_blocks=(1, 3))
  with pytest.raises(ValueError, match="classifier must be 'token' or 'gap'"):
    _shapes(get_model("ViT-testing", 4, classifier="map"))
  with pytest.raises(ValueError, match="hidden size 16 is not divisible by num_heads=3"):
    _shapes(get_model("ViT-testing", 4, num_heads=3))


def test_dropout_only_in_training():
  model = get_model("ViT-testing", 4, dropout_rate=0.5)
  params = _random_params(model)
  x = jnp.ones((2, 32, 32, 3))
  apply = _apply(model)
  a = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})["logits"]
  b = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})["logits"]
  assert not np.allclose(a, b)
  apply = _apply(model)
  np.testing.assert_array_equal(apply({"params": params}, x)["logits"], apply({"params": params}, x)["logits"])


def _dot_dtypes(jaxpr):
  """Operand dtypes of every dot_general/conv in a jaxpr, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for p in eqn.params.values():  # jnp.einsum and friends are jitted: descend into their jaxprs
      sub = getattr(p, "jaxpr", p)
      if hasattr(sub, "eqns"):
        found += _dot_dtypes(sub)
  return found


def test_bf16_compute_keeps_float32_params():
  f32 = get_model("ViT-testing", 6)
  bf16 = get_model("ViT-testing", 6, dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree.leaves(_shapes(bf16))} == {jnp.dtype(jnp.float32)}
  params = _random_params(f32)
  x = jnp.asarray(np.random.RandomState(3).randn(4, 32, 32, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda p, x: _apply(bf16)({"params": p}, x))(params, x).jaxpr
  dots = _dot_dtypes(jaxpr)
  # Patch embedding; per block the fused q/k/v and the out projections, the 2 attention products and the
  # 2 MLP Dense; then the head.
  assert len(dots) == 1 + 2 * (2 + 2 + 2) + 1, dots
  assert dots[-1] == ("float32", "float32")  # the head stays float32 for calibration-grade logits
  assert all(d == ("bfloat16", "bfloat16") for d in dots[:-1]), dots
  out16 = _apply(bf16)({"params": params}, x)
  out32 = _apply(f32)({"params": params}, x)
  assert out16["logits"].dtype == jnp.float32
  err = np.abs(np.asarray(out16["logits"]) - np.asarray(out32["logits"])).max()
  scale = np.abs(np.asarray(out32["logits"])).max()
  assert 0 < err < 0.05 * scale, (err, scale)  # bf16 really ran (err > 0) and stayed close


@pytest.mark.parametrize("res", [32, 36])
def test_patch_embedding_is_the_strided_conv(res):
  """The reshape+matmul patch embedding computes vit_jax's VALID strided conv, remainder pixels dropped too."""
  model = get_model("ViT-testing", 3)
  params = _random_params(model)
  x = jnp.asarray(np.random.RandomState(4).randn(2, res, res, 3), jnp.float32)
  emb = params["embedding"]
  conv = jax.lax.conv_general_dilated(x, emb["kernel"],
                                      (8, 8), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + emb["bias"]
  ours = _apply(model)({"params": params}, x, feature_blocks=(0,))["blocks"][0]
  pos = params["Transformer"]["posembed_input"]["pos_embedding"]
  np.testing.assert_allclose(ours[:, 1:], conv.reshape(2, 16, 16) + pos[:, 1:], atol=1e-5)


def test_self_attention_is_flax_multi_head_attention():
  """Same parameter tree, same initial values, and the same outputs and gradients as Flax's module."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from ftcal_jax.models import vit  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  x, cot = (jnp.asarray(rng.randn(2, 7, 12), jnp.float32) for _ in range(2))
  ours = vit.MultiHeadSelfAttention(num_heads=3)
  theirs = nn.MultiHeadDotProductAttention(num_heads=3, kernel_init=nn.initializers.xavier_uniform())
  p_ours, p_theirs = (
      m.init(jax.random.key(0), x, **kw)["params"] for m, kw in ((ours, {"train": False}), (theirs, {"inputs_k": x})))
  chex.assert_trees_all_equal(p_ours, p_theirs)
  # Non-zero biases and weights away from the initial values, so that every parameter matters.
  params = jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.randn(*a.shape), jnp.float32), p_ours)
  loss_ours = lambda p, x: jnp.sum(ours.apply({"params": p}, x, train=False) * cot)
  loss_theirs = lambda p, x: jnp.sum(theirs.apply({"params": p}, x, x) * cot)
  (v1, g1), (v2, g2) = (jax.value_and_grad(f, argnums=(0, 1))(params, x) for f in (loss_ours, loss_theirs))
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  chex.assert_trees_all_close(g1, g2, atol=1e-5)


def test_attention_dropout_uses_rng_and_rate():
  from ftcal_jax.models.vit import attend  # pylint: disable=g-import-not-at-top
  q = jnp.asarray(np.random.RandomState(0).randn(2, 2, 6, 4), jnp.float32)
  plain = attend(q, q, q)
  np.testing.assert_array_equal(plain, attend(q, q, q, dropout_rng=jax.random.key(0), dropout_rate=0.0))
  a, b = (attend(q, q, q, dropout_rng=jax.random.key(s), dropout_rate=0.5) for s in (0, 1))
  assert not np.allclose(a, plain) and not np.allclose(a, b)
  # Without dropout, the custom VJP gives the plain formula's gradients.
  plain_fn = lambda q, k, v: jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2)) @ v
  g1, g2 = (jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)**2), argnums=(0, 1, 2))(q, q * 0.5, q + 1.0)
            for f in (attend, plain_fn))
  chex.assert_trees_all_close(g1, g2, atol=1e-5)


def test_gelu_erf_and_position_embedding_gradients():
  """The custom VJPs give the same values and gradients as the plain formulas."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from ftcal_jax.models import vit  # pylint: disable=g-import-not-at-top
  x = jnp.linspace(-8.0, 8.0, 4001)
  np.testing.assert_allclose(vit.gelu_erf(x), nn.gelu(x, approximate=False), atol=2e-6)
  np.testing.assert_allclose(
      jax.vmap(jax.grad(vit.gelu_erf))(x),
      jax.vmap(jax.grad(lambda t: nn.gelu(t, approximate=False)))(x), atol=1e-6)
  rng = np.random.RandomState(0)
  xs, pe, cot = (jnp.asarray(rng.randn(*s), jnp.float32) for s in ((5, 3, 4), (1, 3, 4), (5, 3, 4)))
  add_over_batch = vit._add_over_batch  # pylint: disable=protected-access
  ours = jax.grad(lambda a, b: jnp.sum(add_over_batch(a, b) * cot), argnums=(0, 1))(xs, pe)
  np.testing.assert_allclose(ours[0], cot)
  np.testing.assert_allclose(ours[1], cot.sum(0, keepdims=True), rtol=1e-5, atol=1e-6)
