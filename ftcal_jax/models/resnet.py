"""ResNet (18/34/50/101) in Flax Linen, NHWC, with torchvision's v1.5 layout and PyTorch's BatchNorm arithmetic.

Layout (torchvision `resnet.py`, also timm's and transformers' `ResNetForImageClassification`):

  conv1 (7x7, stride 2, pad 3), bn1, ReLU, max pool (3x3, stride 2, pad 1)
  layer{1..4}_{i}: BasicBlock (18/34: conv1 3x3, conv2 3x3) or Bottleneck (50/101: conv1 1x1, conv2 3x3, conv3
                   1x1, 4x expansion); the stride of a stage's first block sits in its 3x3 conv (v1.5);
                   downsample_{conv,bn} is the 1x1 projection shortcut where the shape changes
  global average pool -> pre_logits (B, C_last), the NCM feature
  head (Dense)        -> logits

Parameters: `params` holds conv kernels (HWIO), BatchNorm scale/bias and the head; `batch_stats` holds every
BatchNorm's running mean and var. `model.apply(variables, x, train=True, mutable=['batch_stats'])` normalises with
the batch's statistics and returns the updated running statistics, as `model.train()` does in PyTorch; with
`train=False` the running statistics are used.

Under `jax.jit` with the batch sharded over a device mesh (P('data')), the batch statistics are means over the
global batch (XLA inserts the cross-device reductions): 8 devices compute what 1 device does with the whole batch.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = Any

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's kaiming_normal_(fan_out)


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with PyTorch's BatchNorm2d arithmetic.

  Normalisation uses the biased batch variance; the running variance is updated with the unbiased one
  (n / (n - 1) times it), exactly as torch does (Flax's nn.BatchNorm keeps the biased one).

  Attributes:
    momentum: decay of the running averages, Flax's convention: new = momentum * old + (1 - momentum) * batch.
      0.9 is torch's momentum=0.1.
    epsilon: added to the variance, torch's default 1e-5.
    dtype: compute dtype of the output; statistics are always float32.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    if train:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, axes)
      var = jnp.mean(jnp.square(xf - mean), axes)  # two-pass: no E[x^2] - E[x]^2 cancellation
      if not self.is_initializing():
        n = x.size // c
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
        ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    # One multiply-add per element: the statistics fold into a per-channel scale and shift.
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)


def _conv(features, kernel, stride, name, dtype):
  pad = kernel // 2  # torch's symmetric padding (Flax's 'SAME' pads stride-2 convs asymmetrically)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=_CONV_INIT, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); `features` is the block's output width."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    bn = lambda n: BatchNorm(dtype=self.dtype, name=n)
    y = nn.relu(bn("bn1")(_conv(self.features, 3, self.stride, "conv1", self.dtype)(x), train=train))
    y = bn("bn2")(_conv(self.features, 3, 1, "conv2", self.dtype)(y), train=train)
    return nn.relu(y + _shortcut(self, x, self.features, train))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 with 4x expansion (ResNet-50/101); `features` is the 3x3 width."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool):
    bn = lambda n: BatchNorm(dtype=self.dtype, name=n)
    y = nn.relu(bn("bn1")(_conv(self.features, 1, 1, "conv1", self.dtype)(x), train=train))
    y = nn.relu(bn("bn2")(_conv(self.features, 3, self.stride, "conv2", self.dtype)(y), train=train))
    out = self.features * self.expansion
    y = bn("bn3")(_conv(out, 1, 1, "conv3", self.dtype)(y), train=train)
    return nn.relu(y + _shortcut(self, x, out, train))


def _shortcut(block, x, out, train):
  """Identity, or the 1x1 strided projection + BatchNorm where the shape changes (torchvision's downsample).

  Called inside the block's compact __call__, so the two modules are the block's children.
  """
  if x.shape[-1] == out and block.stride == 1:
    return x
  y = nn.Conv(out, (1, 1), strides=(block.stride, block.stride), use_bias=False, kernel_init=_CONV_INIT,
              dtype=block.dtype, name="downsample_conv")(x)
  return BatchNorm(dtype=block.dtype, name="downsample_bn")(y, train=train)


class ResNet(nn.Module):
  """ResNet classifier.

  Attributes:
    num_classes: head size C. None or 0 drops the head (logits are then the pre-logits).
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: 'basic' (18/34) or 'bottleneck' (50/101).
    width: stem width; stage s has width * 2**s (times 4 after a bottleneck's expansion).
    head_bias_init: initial head bias (the head kernel starts at zero, as the ViT's).
    dtype: compute dtype; parameters and batch statistics stay float32.
  """
  num_classes: Any
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  head_bias_init: float = 0.0
  dtype: Any = jnp.float32

  @property
  def num_layers(self) -> int:
    """The number of stages: LDIFS's default taps (ldifs.default_taps) are then the stem and every stage."""
    return len(self.stage_sizes)

  @nn.compact
  def __call__(self, images, *, train: bool = False, feature_blocks: Sequence[int] = ()):
    """Runs the ResNet.

    Args:
      images: (B, H, W, channels) float images, already normalised.
      train: normalise with batch statistics and update the running ones (call apply with
        mutable=['batch_stats']); False uses the running statistics.
      feature_blocks: taps to return. 0 is the stem's output (after the max pool); k in 1..num_stages is the
        output of stage k.

    Returns:
      dict with 'logits' (B, C) float32, 'pre_logits' (B, C_last) float32 (the pooled feature NCM uses) and
      'blocks', a dict {k: (B, H_k * W_k, C_k)} float32 for k in feature_blocks: each map flattened to tokens, the
      layout ldifs.ldifs_distance reads ('channel' normalisation then normalises each position's C_k-vector,
      as F.normalize(dim=1) does on NCHW maps).
    """
    if self.block not in ("basic", "bottleneck"):
      raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}.")
    bad = [k for k in feature_blocks if not 0 <= k <= len(self.stage_sizes)]
    if bad:
      raise ValueError(f"feature_blocks {bad} outside [0, {len(self.stage_sizes)}] for a "
                       f"{len(self.stage_sizes)}-stage ResNet.")
    block_cls = BasicBlock if self.block == "basic" else Bottleneck
    x = _conv(self.width, 7, 2, "conv1", self.dtype)(images.astype(self.dtype))
    x = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(x, train=train))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    taps = {0: x} if 0 in feature_blocks else {}
    for s, n in enumerate(self.stage_sizes):
      for i in range(n):
        stride = 2 if s > 0 and i == 0 else 1
        x = block_cls(self.width * 2**s, stride, dtype=self.dtype, name=f"layer{s + 1}_{i}")(x, train=train)
      if s + 1 in feature_blocks:
        taps[s + 1] = x
    pre_logits = x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init), name="head")(x)
    blocks = {k: v.reshape(v.shape[0], -1, v.shape[-1]).astype(jnp.float32) for k, v in taps.items()}
    return {"logits": x, "pre_logits": pre_logits, "blocks": blocks}
