"""LDIFS: a feature-space distance to the frozen pre-trained model (Mukhoti et al., TMLR 2024).

loss = CE + alpha * LDIFS, with

  LDIFS = mean over taps k of  mean over samples and vectors v of  || n(f_k(x))_v - n(g_k(x))_v ||^2

where f is the model being fine-tuned, g the frozen pre-trained copy, f_k the token map (B, T, D) at tap k, and
n(.) L2-normalises along one axis:

  'channel' (default here): each token's D-vector is unit length, so a vector's term is 2 - 2 cos in [0, 4].
            This is the natural reading for a ViT and does not mix tokens.
  'token'   : as in the official code (`F.normalize(feat, dim=1)` on (B, T, D) maps): each channel's T-vector
            is unit length.

Taps: the patch-embedding output (0) and the outputs of blocks at a quarter, half, three quarters and the end of
the encoder, i.e. (0, 3, 6, 9, 12) on a 12-block ViT (`default_taps`).
"""

from typing import Mapping, Sequence, Tuple

import jax.numpy as jnp

NORMALISATIONS = ("channel", "token")


def default_taps(num_layers: int) -> Tuple[int, ...]:
  """(0, L/4, L/2, 3L/4, L) rounded and de-duplicated: (0, 3, 6, 9, 12) for L=12, (0, 1, 2, 3, 4) for L=4."""
  return tuple(sorted({0} | {int(round(num_layers * q / 4)) for q in (1, 2, 3, 4)}))


def _normalise(x, axis):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def ldifs_distance(blocks: Mapping[int, jnp.ndarray], ref_blocks: Mapping[int, jnp.ndarray], taps: Sequence[int],
                   normalisation: str = "channel") -> jnp.ndarray:
  """The LDIFS feature distance, a scalar.

  Args:
    blocks: {tap: (B, T, D)} token maps of the model being trained.
    ref_blocks: {tap: (B, T, D)} the same taps of the frozen pre-trained model (treated as constants by the
      caller, e.g. under stop_gradient).
    taps: which taps to average over.
    normalisation: 'channel' or 'token' (see the module docstring).

  Returns:
    () float32: the mean over taps of the mean squared distance between normalised vectors.
  """
  if normalisation not in NORMALISATIONS:
    raise ValueError(f"Unknown LDIFS normalisation {normalisation!r}. Valid: {', '.join(NORMALISATIONS)}.")
  if not taps:
    raise ValueError("LDIFS needs at least one tap; see ldifs.default_taps(num_layers).")
  axis = -1 if normalisation == "channel" else -2
  terms = []
  for k in taps:
    a = _normalise(blocks[k].astype(jnp.float32), axis)
    b = _normalise(ref_blocks[k].astype(jnp.float32), axis)
    # Sum over the normalised axis (a squared vector distance), mean over the batch and the other axis.
    terms.append(jnp.mean(jnp.sum((a - b)**2, axis=axis)))
  return jnp.mean(jnp.stack(terms))
