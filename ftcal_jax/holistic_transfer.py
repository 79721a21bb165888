"""A Holistic Transfer variant ("HT-distill"), after Tu et al., NeurIPS 2023 (arXiv 2311.01420).

Holistic Transfer asks the fine-tuned model to stay useful on the classes its fine-tuning data lack. The paper
does so by (i) separating the domain-adaptation part of the gradient from the class-specific part, and
(ii) preserving the source model's relations among the absent classes, e.g. by keeping the classifier frozen and
distilling the source model's predictions. Its repository does not release these parts, so ftcal_jax ships this
documented variant, named 'holistic_transfer' in the method registry:

  * The head is frozen: only the backbone trains (methods.py), so the source class relations encoded in W stay
    and only features adapt to the target domain (the paper's frozen-classifier component).
  * Selective distillation on U: on every fine-tuning sample, the softmax over the ABSENT classes only, at
    temperature T, is pulled towards the frozen pre-trained model's softmax over the same classes:
        loss = CE(all logits) + lambda * T^2 * KL(p_pre(. | x, U) || p_ft(. | x, U)).
    This keeps how the model ranks absent classes among themselves while CE teaches S.
  * The other direction, disentangling the domain gradient by leave-out local SGD, is the separate method
    'holistic_transfer_lolsgd' (lolsgd.py): the same frozen head and distillation, trained by LOLSGD rounds
    (about M times this variant's compute).
"""

import jax
import jax.numpy as jnp
import numpy as np


def absent_distillation(logits: jnp.ndarray, ref_logits: jnp.ndarray, absent_mask: np.ndarray,
                        temperature: float = 2.0) -> jnp.ndarray:
  """T^2 * KL(p_ref || p) over the absent classes, averaged over the batch.

  Args:
    logits: (B, C) logits of the model being trained.
    ref_logits: (B, C) logits of the frozen pre-trained model.
    absent_mask: (C,) bool, True for U.
    temperature: softmax temperature T > 0.

  Returns:
    () float32, zero when the two models agree on the relative U logits.
  """
  absent_mask = np.asarray(absent_mask, bool)
  if not absent_mask.any():
    raise ValueError("absent_distillation needs at least one absent class in absent_mask.")
  idx = np.flatnonzero(absent_mask)
  s = jnp.take(logits.astype(jnp.float32), idx, axis=-1) / temperature
  t = jnp.take(ref_logits.astype(jnp.float32), idx, axis=-1) / temperature
  log_p = jax.nn.log_softmax(s, axis=-1)
  log_q = jax.nn.log_softmax(t, axis=-1)
  kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)
  return temperature**2 * jnp.mean(kl)
