"""Vision Transformer in Flax Linen, with the vit_jax/big_vision parameter tree.

Parameter names follow google-research/vision_transformer (`vit_jax/models_vit.py`), so that the released `.npz`
checkpoints (e.g. AugReg ViT-B/16) load by name:

  embedding/{kernel,bias}                      patch embedding: the (ph, pw, C, D) kernel of a strided conv
  cls                                          (1, 1, D) class token (classifier='token' only)
  Transformer/posembed_input/pos_embedding     (1, T, D)
  Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value,out},
                              LayerNorm_2, MlpBlock_3/{Dense_0,Dense_1}
  Transformer/encoder_norm
  pre_logits/{kernel,bias}                     only when representation_size is set
  head/{kernel,bias}                           (D, C), (C,); the same two leaves for both heads (see CosineHead)

The forward pass returns a dict, so that one call yields what calibration (logits), NCM (pre-logits features) and
LDIFS (intermediate token maps) need.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = Any


@jax.custom_vjp
def _softmax_attention(q, k, v):
  """softmax(q k^T) v over the last two axes of (..., T, hd) arrays (q already scaled), with a lean backward.

  The VJP keeps the attention weights p and uses dS = p * (dP - rowsum(dO * O)), the identity flash attention
  uses: its row sum runs over hd instead of Tk, and the softmax backward is one elementwise pass over (Tq, Tk).
  """
  return _softmax_attention_fwd(q, k, v)[0]


def _softmax_attention_fwd(q, k, v):
  p = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2))
  o = p @ v
  return o, (q, k, v, p, o)


def _softmax_attention_bwd(res, do):
  q, k, v, p, o = res
  dp = do @ jnp.swapaxes(v, -1, -2)
  ds = p * (dp - jnp.sum(do * o, axis=-1, keepdims=True))
  return ds @ k, jnp.swapaxes(ds, -1, -2) @ q, jnp.swapaxes(p, -1, -2) @ do


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


def attend(q, k, v, dropout_rng=None, dropout_rate=0.0):
  """softmax(q k^T) v over heads-major arrays, as Flax's dot_product_attention computes it.

  Heads-major (B, H, T, hd) operands make both products batched matmuls over (B, H): XLA:CPU runs Flax's
  token-major '...qhd,...khd->...hqk' einsum about 3x slower. Without dropout a custom VJP does the backward pass
  (see _softmax_attention).

  Args:
    q: (B, H, Tq, hd) queries, already multiplied by 1/sqrt(hd).
    k, v: (B, H, Tk, hd) keys and values.
    dropout_rng, dropout_rate: dropout on the attention weights, one (Tq, Tk) mask shared by the batch and the
      heads (Flax's broadcast_dropout default). No rng or a zero rate: no dropout.

  Returns:
    (B, H, Tq, hd).
  """
  if dropout_rng is None or dropout_rate == 0.0:
    return _softmax_attention(q, k, v)
  w = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2))
  keep = 1.0 - dropout_rate
  mask = jax.random.bernoulli(dropout_rng, keep, (1,) * (w.ndim - 2) + w.shape[-2:])
  return (w * (mask / keep).astype(w.dtype)) @ v


@jax.custom_vjp
def gelu_erf(x):
  """Exact GELU, x * Phi(x) with the erf-based normal CDF Phi (PyTorch's nn.GELU() and vit_jax's default).

  The same values as nn.gelu(x, approximate=False); the custom VJP keeps Phi(x) from the forward pass, so that
  the backward pass, Phi(x) + x * phi(x), costs one exp instead of XLA recomputing erf in several fusions.
  """
  return x * _normal_cdf(x)


def _normal_cdf(x):
  return 0.5 * (1.0 + jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def _gelu_fwd(x):
  cdf = _normal_cdf(x)
  return x * cdf, (x, cdf)


def _gelu_bwd(res, g):
  x, cdf = res
  pdf = jnp.exp(-0.5 * x * x) * np.asarray(1.0 / np.sqrt(2.0 * np.pi), x.dtype)
  return (g * (cdf + x * pdf),)


gelu_erf.defvjp(_gelu_fwd, _gelu_bwd)


class _Projection(nn.Module):
  """The kernel and bias of one nn.DenseGeneral, under its own name, without computing anything.

  MultiHeadSelfAttention keeps Flax's parameter names (query/key/value/out) but multiplies by the three input
  kernels at once; this module only declares them. Initialised like DenseGeneral: xavier on the 2-D view.
  """
  kernel_shape: Sequence[int]
  fan_in_axes: int  # the kernel's leading axes that are inputs (1 for query/key/value, 2 for out)

  @nn.compact
  def __call__(self):
    flat = (int(np.prod(self.kernel_shape[:self.fan_in_axes])), int(np.prod(self.kernel_shape[self.fan_in_axes:])))
    init = lambda rng, shape, dtype=jnp.float32: nn.initializers.xavier_uniform()(rng, flat, dtype).reshape(shape)
    kernel = self.param("kernel", init, tuple(self.kernel_shape))
    bias = self.param("bias", nn.initializers.zeros, tuple(self.kernel_shape[self.fan_in_axes:]))
    return kernel, bias


class MultiHeadSelfAttention(nn.Module):
  """Self-attention with the parameters of nn.MultiHeadDotProductAttention, computed with fewer, larger ops.

  Same function and parameter tree (query/key/value kernels (D, H, hd) with biases (H, hd); out kernel (H, hd, D)
  with bias (D,)), so vit_jax checkpoints load unchanged. The three input projections run as one (D, 3D) matmul
  with 1/sqrt(hd) folded into the query weights, and the heads move before the tokens in one transpose.
  """
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, t, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f"hidden size {d} is not divisible by num_heads={h}.")
    hd = d // h
    proj = {n: _Projection((d, h, hd), 1, name=n)() for n in ("query", "key", "value")}
    out_kernel, out_bias = _Projection((h, hd, d), 2, name="out")()
    scale = np.asarray(1.0 / np.sqrt(hd), np.float32)
    kernel = jnp.stack([proj["query"][0] * scale, proj["key"][0], proj["value"][0]], axis=1)  # (D, 3, H, hd)
    bias = jnp.stack([proj["query"][1] * scale, proj["key"][1], proj["value"][1]])  # (3, H, hd)
    qkv = x.astype(self.dtype).reshape(b * t, d) @ kernel.reshape(d, 3 * d).astype(self.dtype)
    qkv = (qkv + bias.reshape(3 * d).astype(self.dtype)).reshape(b, t, 3, h, hd).transpose(2, 0, 3, 1, 4)
    dropout_rng = self.make_rng("dropout") if train and self.dropout_rate > 0.0 else None
    o = attend(qkv[0], qkv[1], qkv[2], dropout_rng=dropout_rng, dropout_rate=self.dropout_rate)  # (B, H, T, hd)
    o = o.transpose(0, 2, 1, 3).reshape(b * t, d) @ out_kernel.reshape(d, d).astype(self.dtype)
    return (o + out_bias.astype(self.dtype)).reshape(b, t, d)


class MlpBlock(nn.Module):
  """Transformer MLP: Dense -> GELU -> Dense."""
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    d = x.shape[-1]
    dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.
                               initializers.normal(stddev=1e-6))
    x = dense(self.mlp_dim)(x)
    # Exact (erf) GELU, as in vit_jax and PyTorch's nn.GELU default: parity needs the same function.
    x = gelu_erf(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = dense(d)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class Encoder1DBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)); x + MLP(LN(x))."""
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = nn.LayerNorm(dtype=self.dtype, epsilon=1e-6, name="LayerNorm_0")(x)
    y = MultiHeadSelfAttention(self.num_heads, dtype=self.dtype, dropout_rate=self.attention_dropout_rate,
                               name="MultiHeadDotProductAttention_1")(y, train=train)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype, epsilon=1e-6, name="LayerNorm_2")(x)
    y = MlpBlock(self.mlp_dim, dtype=self.dtype, dropout_rate=self.dropout_rate, name="MlpBlock_3")(y, train=train)
    return x + y


@jax.custom_vjp
def _add_over_batch(x, pe):
  """x + pe for x (B, ...) and pe (1, ...); the custom VJP sums pe's gradient over the batch as a matmul.

  XLA:CPU reduces a (B, T, D) array over its leading axis about 30x slower than it multiplies by a ones vector.
  """
  return x + pe


def _add_over_batch_fwd(x, pe):
  return x + pe, None


def _add_over_batch_bwd(_, g):
  b = g.shape[0]
  return g, (jnp.ones((1, b), g.dtype) @ g.reshape(b, -1)).reshape((1,) + g.shape[1:])


_add_over_batch.defvjp(_add_over_batch_fwd, _add_over_batch_bwd)


class AddPositionEmbs(nn.Module):
  """Adds a learned (1, T, D) position embedding."""

  @nn.compact
  def __call__(self, x):
    pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])
    return _add_over_batch(x, pe.astype(x.dtype))


class Encoder(nn.Module):
  """Position embedding, encoder blocks and the final LayerNorm; also returns the requested taps."""
  num_layers: int
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  feature_blocks: Sequence[int] = ()

  @nn.compact
  def __call__(self, x, *, train: bool):
    # vit_jax keeps the position embedding in a sub-scope named posembed_input.
    x = AddPositionEmbs(name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    taps = {}
    if 0 in self.feature_blocks:
      taps[0] = x
    for i in range(self.num_layers):
      x = Encoder1DBlock(self.mlp_dim, self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
                         attention_dropout_rate=self.attention_dropout_rate, name=f"encoderblock_{i}")(x, train=train)
      if i + 1 in self.feature_blocks:
        taps[i + 1] = x
    return nn.LayerNorm(dtype=self.dtype, epsilon=1e-6, name="encoder_norm")(x), taps


class PatchEmbedding(nn.Module):
  """Non-overlapping patches -> tokens, with the parameters of vit_jax's strided conv ('kernel' HWIO, 'bias').

  It computes the same function as nn.Conv(strides=patch_size, padding='VALID'), as a reshape and one matmul:
  on CPU that is about 1.6x faster than XLA's convolution, forward and backward.
  """
  hidden_size: int
  patch_size: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    ph, pw = self.patch_size
    b, h, w, c = images.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (ph, pw, c, self.hidden_size))
    bias = self.param("bias", nn.initializers.zeros, (self.hidden_size,))
    gh, gw = h // ph, w // pw  # VALID padding: a remainder of rows/columns is dropped, as in the conv.
    x = images[:, :gh * ph, :gw * pw].reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, gh, gw, ph * pw * c).astype(self.dtype)
    x = x @ kernel.reshape(ph * pw * c, self.hidden_size).astype(self.dtype)
    return x + bias.astype(self.dtype)


class CosineHead(nn.Module):
  """A cosine classifier, logits_c = s * cos(w_c, f) + b_c: the paper's cosine-classifier row, with a fixed scale s.

  It has the linear head's two leaves, `kernel` (D, C) and `bias` (C,), so that the parameter tree is the same for
  both heads and a linear checkpoint (or a run's checkpoint) loads into either. The bias is a fixed logit offset,
  never trained (stop_gradient: a zero gradient, so it keeps its value): a linear head's bias does not belong to
  cosine scores, so `models.pretrained.init_variables` starts it at 0, and export.py folds a calibration's γ into it
  (b_c += γ for c in U), so a calibrated cosine model predicts with a plain argmax. The kernel starts from
  lecun_normal, not zeros as the linear head: a zero vector has no direction, and the normalisation's gradient at
  zero is unbounded. The scale s is a fixed hyper-parameter (config.model.cosine_scale), not learned, so the tree
  gains no leaf; cosines lie in [-1, 1], so s bounds the logit range, hence how confident the softmax gets.
  """
  num_classes: int
  scale: float

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes))
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))  # A fixed offset: 0, or γ on U.
    x = x.astype(jnp.float32)
    # rsqrt(|v|^2 + eps): finite at v = 0 (a zero feature or class vector scores 0).
    f = x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)
    w = kernel * jax.lax.rsqrt(jnp.sum(kernel * kernel, axis=0, keepdims=True) + 1e-12)
    return self.scale * (f @ w) + jax.lax.stop_gradient(bias).astype(jnp.float32)


class VisionTransformer(nn.Module):
  """ViT classifier.

  Attributes:
    num_classes: head size C. None or 0 drops the head (logits are then the pre-logits).
    patch_size: (ph, pw) patch size.
    hidden_size: token width D.
    num_layers: number of encoder blocks.
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    classifier: 'token' (class token) or 'gap' (global average pooling of patch tokens).
    representation_size: optional pre-logits Dense+tanh layer (ImageNet-21k checkpoints have one).
    head: 'linear' (W^T f + b, the FC head) or 'cosine' (s * cos(w_c, f), CosineHead); same parameter tree.
    cosine_scale: s of the cosine head.
    dtype: compute dtype. Parameters stay float32 (Flax's param_dtype default); bf16 compute for accelerators.
  """
  num_classes: Optional[int]
  patch_size: Sequence[int]
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  classifier: str = "token"
  representation_size: Optional[int] = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  head_bias_init: float = 0.0
  head: str = "linear"
  cosine_scale: float = 16.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False, feature_blocks: Sequence[int] = ()):
    """Runs the ViT.

    Args:
      images: (B, H, W, channels) float images, already normalised.
      train: enables dropout (needs a 'dropout' rng).
      feature_blocks: taps to return. 0 is the token sequence entering the encoder (patch embedding + class token
        + position embedding); k in 1..num_layers is the output of encoder block k.

    Returns:
      dict with 'logits' (B, C) float32, 'pre_logits' (B, D') float32 (the feature NCM uses), and 'blocks', a dict
      {k: (B, T, D)} for k in feature_blocks.
    """
    if self.head not in ("linear", "cosine"):
      raise ValueError(f"head must be 'linear' or 'cosine', got {self.head!r}.")
    if self.classifier not in ("token", "gap"):
      raise ValueError(f"classifier must be 'token' or 'gap', got {self.classifier!r}.")
    bad = [k for k in feature_blocks if not 0 <= k <= self.num_layers]
    if bad:
      raise ValueError(f"feature_blocks {bad} outside [0, {self.num_layers}] for a {self.num_layers}-block ViT.")
    x = PatchEmbedding(self.hidden_size, tuple(self.patch_size), dtype=self.dtype, name="embedding")(images)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if self.classifier == "token":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
      x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)).astype(x.dtype), x], axis=1)
    x, taps = Encoder(num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype=self.dtype,
                      dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
                      feature_blocks=tuple(feature_blocks), name="Transformer")(x, train=train)
    x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
    if self.representation_size:
      x = jnp.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x))
    pre_logits = x = x.astype(jnp.float32)
    if self.num_classes and self.head == "cosine":
      x = CosineHead(self.num_classes, self.cosine_scale, name="head")(x)
    elif self.num_classes:
      # Zero-initialised head as in vit_jax: a new head starts with uniform predictions. It runs in float32
      # whatever the compute dtype: it is cheap, and calibration adds small biases to these logits.
      x = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init), name="head")(x)
    return {"logits": x, "pre_logits": pre_logits, "blocks": {k: v.astype(jnp.float32) for k, v in taps.items()}}
