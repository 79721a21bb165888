"""The CLIP image tower (ViT-B/32, B/16, L/14) in Flax Linen, with OpenAI CLIP's parameter names.

CLIP's ViT differs from vit_jax's: a bias-free patch convolution, a class embedding, a LayerNorm before the
encoder (`ln_pre`), QuickGELU (x * sigmoid(1.702 x)) in the MLPs, LayerNorm epsilon 1e-5, `ln_post` on the class
token and a linear projection into the joint image-text space. Parameter tree (OpenAI's `visual.*` names):

  conv1/kernel (p, p, 3, D)      class_embedding (D,)      positional_embedding (T, D)      ln_pre
  resblocks_{i}/ln_1, attn/{q_proj,k_proj,v_proj,out_proj}/{kernel,bias}, ln_2, mlp/{c_fc,c_proj}
  ln_post      proj/kernel (D, E)      head/{kernel (E, C), bias (C,)}

The head reads the L2-normalised image embedding, so a zero-shot head (kernel = logit_scale times the normalised
class text embeddings, `clip_text.zero_shot_head`) gives CLIP's zero-shot logits, and fine-tuning goes on from
there as with any head.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax.models.vit import attend, gelu_erf

LN_EPS = 1e-5  # torch's default, which CLIP uses (vit_jax uses 1e-6)


def quick_gelu(x):
  """OpenAI CLIP's activation, x * sigmoid(1.702 x) (transformers' 'quick_gelu')."""
  return x * jax.nn.sigmoid(np.asarray(1.702, x.dtype) * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu_erf}  # OpenAI checkpoints; open_clip's LAION ones use 'gelu'


class Linear(nn.Module):
  """Declares a Dense layer's kernel (d_in, d_out) and bias (d_out,) and returns them, computing nothing.

  The attention fuses its q/k/v kernels into one matmul, but keeps them as separate leaves (transformers' names).
  """
  shape: Sequence[int]

  @nn.compact
  def __call__(self):
    kernel = self.param("kernel", nn.initializers.xavier_uniform(), tuple(self.shape))
    return kernel, self.param("bias", nn.initializers.zeros, (self.shape[-1],))


class Attention(nn.Module):
  """Multi-head self-attention, optionally causal (the text tower), as torch's nn.MultiheadAttention computes it."""
  num_heads: int
  causal: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    h = self.num_heads
    if d % h:
      raise ValueError(f"width {d} is not divisible by num_heads={h}.")
    hd = d // h
    qkv = [Linear((d, d), name=n)() for n in ("q_proj", "k_proj", "v_proj")]
    out_kernel, out_bias = Linear((d, d), name="out_proj")()
    scale = np.asarray(1.0 / np.sqrt(hd), np.float32)  # folded into the query weights and bias, as torch scales q
    kernel = jnp.concatenate([qkv[0][0] * scale, qkv[1][0], qkv[2][0]], axis=1).astype(self.dtype)
    bias = jnp.concatenate([qkv[0][1] * scale, qkv[1][1], qkv[2][1]]).astype(self.dtype)
    y = (x.astype(self.dtype).reshape(b * t, d) @ kernel + bias).reshape(b, t, 3, h, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = y[0], y[1], y[2]  # (B, H, T, hd)
    if self.causal:
      s = q @ jnp.swapaxes(k, -1, -2)
      s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, jnp.finfo(s.dtype).min)
      o = jax.nn.softmax(s.astype(jnp.float32)).astype(self.dtype) @ v
    else:
      o = attend(q, k, v)
    o = o.transpose(0, 2, 1, 3).reshape(b * t, d) @ out_kernel.astype(self.dtype)
    return (o + out_bias.astype(self.dtype)).reshape(b, t, d)


class Mlp(nn.Module):
  """c_fc -> activation -> c_proj."""
  act: str = "quick_gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    x = ACTIVATIONS[self.act](nn.Dense(4 * d, dtype=self.dtype, name="c_fc")(x))
    return nn.Dense(d, dtype=self.dtype, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
  """x + attn(ln_1(x)); x + mlp(ln_2(x)): OpenAI's `ResidualAttentionBlock`."""
  num_heads: int
  act: str = "quick_gelu"
  causal: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ln = lambda n: nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name=n)
    x = x + Attention(self.num_heads, self.causal, dtype=self.dtype, name="attn")(ln("ln_1")(x))
    return x + Mlp(self.act, dtype=self.dtype, name="mlp")(ln("ln_2")(x))


class PatchConv(nn.Module):
  """The bias-free strided patch conv ('kernel' HWIO) as a reshape and one matmul (faster than XLA:CPU's conv)."""
  width: int
  patch_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    b, h, w, c = images.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.width))
    gh, gw = h // p, w // p  # VALID padding: a remainder of rows/columns is dropped, as in the conv
    x = images[:, :gh * p, :gw * p].reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b * gh * gw, p * p * c).astype(self.dtype) @ kernel.reshape(p * p * c, self.width).astype(self.dtype)
    return x.reshape(b, gh * gw, self.width)


class CLIPVisionTransformer(nn.Module):
  """CLIP's image tower with a classification head over the normalised image embedding.

  Attributes:
    num_classes: head size C. None or 0 drops the head (logits are then the pre-logits).
    patch_size: square patch side p.
    width: token width D.
    num_layers: encoder blocks.
    num_heads: attention heads.
    embed_dim: joint-space width E (the projection); None drops the projection (pre-logits are then the
      normalised ln_post output).
    act: 'quick_gelu' (OpenAI) or 'gelu' (open_clip's non-OpenAI checkpoints).
    normalize: L2-normalise the embedding before the head (CLIP's cosine logits); the NCM feature either way.
    head_bias_init: initial head bias (the head kernel starts at zero, unless a zero-shot head is loaded).
    dtype: compute dtype; parameters stay float32.
  """
  num_classes: Optional[int]
  patch_size: int = 32
  width: int = 768
  num_layers: int = 12
  num_heads: int = 12
  embed_dim: Optional[int] = 512
  act: str = "quick_gelu"
  normalize: bool = True
  head_bias_init: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False, feature_blocks: Sequence[int] = ()):
    """Runs the image tower.

    Args:
      images: (B, H, W, 3) float images, already normalised (CLIP's own mean/std, or the config's).
      train: accepted for the common interface; CLIP has no dropout or batch statistics.
      feature_blocks: taps to return, as the official LDIFS code takes them: 0 is the token sequence after
        ln_pre; k in 1..num_layers the output of block k.

    Returns:
      dict with 'logits' (B, C) float32, 'pre_logits' (B, E) float32 (the normalised embedding: NCM's feature and
      the head's input), 'embedding' (B, E) float32 (the projected embedding before normalisation, CLIP's
      image_embeds) and 'blocks' {k: (B, T, D)} float32 for k in feature_blocks.
    """
    del train
    if self.act not in ACTIVATIONS:
      raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}.")
    bad = [k for k in feature_blocks if not 0 <= k <= self.num_layers]
    if bad:
      raise ValueError(f"feature_blocks {bad} outside [0, {self.num_layers}] for a {self.num_layers}-block CLIP ViT.")
    x = PatchConv(self.width, self.patch_size, dtype=self.dtype, name="conv1")(images)
    b, t, d = x.shape
    cls = self.param("class_embedding", nn.initializers.normal(d**-0.5), (d,))
    pos = self.param("positional_embedding", nn.initializers.normal(d**-0.5), (t + 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1) + pos.astype(x.dtype)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_pre")(x)
    taps = {0: x} if 0 in feature_blocks else {}
    for i in range(self.num_layers):
      x = ResidualAttentionBlock(self.num_heads, self.act, dtype=self.dtype, name=f"resblocks_{i}")(x)
      if i + 1 in feature_blocks:
        taps[i + 1] = x
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, name="ln_post")(x[:, 0].astype(jnp.float32))
    if self.embed_dim:
      x = nn.Dense(self.embed_dim, use_bias=False, dtype=jnp.float32, name="proj")(x)
    embedding = x
    if self.normalize:
      x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    pre_logits = x
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init), name="head")(x)
    blocks = {k: v.astype(jnp.float32) for k, v in taps.items()}
    return {"logits": x, "pre_logits": pre_logits, "embedding": embedding, "blocks": blocks}
