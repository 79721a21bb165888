"""CLIP's text tower in Flax, prompt tokenisation, and the zero-shot head built from class text embeddings.

Parameter tree (OpenAI's names, no `visual.` prefix):

  token_embedding/embedding (V, W)      positional_embedding (L, W)
  resblocks_{i}/...  (clip.ResidualAttentionBlock, causal)      ln_final      text_projection/kernel (W, E)

The zero-shot head's kernel is logit_scale times the L2-normalised class text embeddings (E, C); on the image
tower's normalised embedding it gives CLIP's zero-shot logits, logit_scale * cos(image, class text).
"""

import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax.models.clip import LN_EPS, ResidualAttentionBlock

# The templates of CLIP's paper for ImageNet-style zero-shot classification, a short subset (the full 80 are in
# OpenAI's notebook); pass your own to build_zero_shot_head.
DEFAULT_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.", "a photo of the small {}.",
                     "a rendering of a {}.", "a drawing of a {}.")


class CLIPTextTransformer(nn.Module):
  """CLIP's causal text transformer; the embedding is the projected end-of-text token.

  Attributes:
    vocab_size: V (49408 for OpenAI's BPE).
    context_length: L, the positional embedding's length (77).
    width: W.
    num_layers, num_heads: the encoder's depth and heads.
    embed_dim: E, the joint-space width (the projection); None drops it.
    eos_token_id: the end-of-text id whose (first) position is pooled; None pools the arg-max of the ids, as
      OpenAI's code does (end-of-text is the largest id of its vocabulary).
    act: 'quick_gelu' (OpenAI) or 'gelu'.
  """
  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  num_layers: int = 12
  num_heads: int = 8
  embed_dim: Optional[int] = 512
  eos_token_id: Optional[int] = None
  act: str = "quick_gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, token_ids):
    """Embeds tokenised prompts.

    Args:
      token_ids: (N, l) int, l <= context_length, each row holding an end-of-text token.

    Returns:
      dict with 'embedding' (N, E) float32 (unnormalised, CLIP's text_embeds), 'pooled' (N, W) float32 (ln_final
      at the end-of-text token) and 'last_hidden' (N, l, W) float32.
    """
    n, l = token_ids.shape
    if l > self.context_length:
      raise ValueError(f"{l} tokens per prompt exceed the context length {self.context_length}.")
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embedding")(token_ids)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01), (self.context_length, self.width))
    x = x + pos[:l].astype(x.dtype)
    for i in range(self.num_layers):
      x = ResidualAttentionBlock(self.num_heads, self.act, causal=True, dtype=self.dtype, name=f"resblocks_{i}")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, name="ln_final")(x.astype(jnp.float32))
    eos = jnp.argmax(token_ids if self.eos_token_id is None else token_ids == self.eos_token_id, axis=-1)
    pooled = x[jnp.arange(n), eos]
    emb = pooled
    if self.embed_dim:
      emb = nn.Dense(self.embed_dim, use_bias=False, dtype=jnp.float32, name="text_projection")(pooled)
    return {"embedding": emb, "pooled": pooled, "last_hidden": x}


def tokenize(texts: Sequence[str], vocab_file: str, merges_file: str, *, context_length: int = 77) -> np.ndarray:
  """Tokenises prompts with transformers' CLIPTokenizer from a vocabulary and merges file the user supplies.

  Args:
    texts: N prompts.
    vocab_file, merges_file: CLIP's BPE files (`vocab.json`, `merges.txt` of e.g. the openai/clip-vit-base-patch32
      hub repository). Nothing is downloaded.
    context_length: rows are padded (with the end-of-text token) or truncated to this length.

  Returns:
    (N, context_length) int32 ids: start-of-text, the prompt, end-of-text, padding.
  """
  for f in (vocab_file, merges_file):
    if not os.path.isfile(f):
      raise FileNotFoundError(f"CLIP tokenizer file {f} does not exist; pass CLIP's vocab.json and merges.txt.")
  import transformers  # pylint: disable=g-import-not-at-top  # only prompt tokenisation needs it
  tok = transformers.CLIPTokenizer(vocab_file, merges_file)
  ids = tok(list(texts), padding="max_length", max_length=context_length, truncation=True)["input_ids"]
  return np.asarray(ids, np.int32)


def eos_token_id(vocab_file: str, merges_file: str) -> int:
  """The end-of-text id of a CLIP vocabulary (the text tower's eos_token_id)."""
  import transformers  # pylint: disable=g-import-not-at-top
  return int(transformers.CLIPTokenizer(vocab_file, merges_file).eos_token_id)


def normalize(x, axis=-1):
  """x / ||x|| along `axis` (numpy or jax arrays)."""
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def zero_shot_head(text_embeddings, logit_scale: float):
  """The zero-shot classifier over normalised image embeddings.

  Args:
    text_embeddings: (C, E) class text embeddings (any scale), or the path of a .npy/.npz file with one array.
    logit_scale: the multiplier, exp of CLIP's stored `logit_scale` (100 for OpenAI's models).

  Returns:
    {'kernel': (E, C) float32 = logit_scale * normalised embeddings, transposed; 'bias': (C,) zeros}.
  """
  if isinstance(text_embeddings, (str, os.PathLike)):
    loaded = np.load(os.fspath(text_embeddings), allow_pickle=False)
    if not isinstance(loaded, np.ndarray):  # an .npz archive: its one array
      with loaded:
        if len(loaded.files) != 1:
          raise ValueError(f"{text_embeddings} holds {loaded.files}; save the (C, E) embeddings alone.")
        loaded = loaded[loaded.files[0]]
    text_embeddings = loaded
  emb = np.asarray(text_embeddings, np.float32)
  if emb.ndim != 2:
    raise ValueError(f"text embeddings must be a (classes, dim) array, got shape {emb.shape}.")
  return {"kernel": (logit_scale * normalize(emb)).T.astype(np.float32), "bias": np.zeros(emb.shape[0], np.float32)}


def class_text_embeddings(model: CLIPTextTransformer, params, classnames: Sequence[str], vocab_file: str,
                          merges_file: str, templates: Sequence[str] = ("a photo of a {}.",), *,
                          batch_size: int = 256) -> np.ndarray:
  """One embedding per class: the mean of its normalised prompt embeddings over `templates` (CLIP's ensembling).

  The C * len(templates) prompts run in chunks of `batch_size` (the last chunk padded, so one compilation).

  Returns:
    (C, E) float32, each row unit length.
  """
  prompts = [t.format(c) for c in classnames for t in templates]
  ids = tokenize(prompts, vocab_file, merges_file, context_length=model.context_length)
  apply = jax.jit(lambda x: model.apply({"params": params}, x)["embedding"])
  n = len(ids)
  batch_size = min(batch_size, n)
  padded = np.concatenate([ids, np.repeat(ids[-1:], -n % batch_size, axis=0)])
  emb = np.concatenate(
      [np.asarray(apply(jnp.asarray(padded[i:i + batch_size]))) for i in range(0, len(padded), batch_size)])[:n]
  emb = normalize(emb).reshape(len(classnames), len(templates), -1).mean(axis=1)
  return normalize(emb).astype(np.float32)
