"""Accuracies at a grid of γ values from per-sample stats, in O(N log G).

Part of :mod:`ftcal_jax.calibration` (re-exported there as ``grid_from_stats``);
the predicate is exactly ``argmax(shift_absent(z, γ))`` in float arithmetic.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _grid_parts(stats):
  ms, mu = stats.max_s, stats.max_u
  dead = jnp.isneginf(ms) & jnp.isneginf(mu)
  ms = jnp.where(dead, 0.0, ms)
  mu = jnp.where(dead, 0.0, mu)
  s_ok = stats.s_correct.astype(jnp.float32)
  u_ok = stats.u_correct.astype(jnp.float32)
  seen = (~stats.is_absent).astype(jnp.float32)
  # Per flip to S: column 0 changes seen hits, column 1 unseen hits.
  w = jnp.stack([(s_ok - u_ok) * seen, (s_ok - u_ok) * (1.0 - seen)], axis=1)
  base = jnp.stack([jnp.sum(u_ok * seen), jnp.sum(u_ok * (1.0 - seen))])
  return ms, mu, w, base, jnp.sum(seen), jnp.sum(1.0 - seen)


def _predicts_seen(ms, mu, s_first, gamma):
  # Exactly argmax(shift_absent(z, γ)): the S class wins if its max beats
  # fl(max_U + γ), or ties with it and comes first in index order.
  thr = mu + gamma
  return (ms > thr) | ((ms == thr) & s_first)


@functools.partial(jax.jit, static_argnames="method")
def grid_from_stats(stats, gammas, method: str = "search") -> dict:
  """Accuracies at each γ from per-sample stats; see evaluate_gamma_grid.

  Args:
    stats: ``calibration.SampleStats`` of (N,) arrays.
    gammas: (G,) floats.
    method: "search" (default): sort γ and binary-search each sample's switch
      point, O(N log G + G log G) time, O(N + G) memory. "vmap": evaluate
      every (γ, sample) pair, O(G·N). Both apply the same comparison, so they
      agree exactly; "vmap" is kept as a cross-check.

  Returns:
    dict of (G,) 'acc_seen', 'acc_unseen', 'acc_all'.
  """
  ms, mu, w, base, n_seen, n_unseen = _grid_parts(stats)
  gammas = jnp.asarray(gammas, jnp.float32)
  g = gammas.shape[0]
  if method == "vmap":

    def one(gamma):
      return base + _predicts_seen(ms, mu, stats.s_first, gamma).astype(jnp.float32) @ w

    hits = jax.vmap(one)(gammas)  # (G, 2)
  elif method == "search":
    order = jnp.argsort(gammas)
    sorted_g = gammas[order]

    # Predicting S is monotone (true, then false) along increasing γ, so each
    # sample's switch index k (number of sorted γ predicting S) is found by
    # bisection: invariant pred(lo - 1) true, pred(hi) false.
    def bisect(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) // 2
      ok = _predicts_seen(ms, mu, stats.s_first, sorted_g[jnp.clip(mid, 0, g - 1)])
      go_right = (lo < hi) & ok
      return (jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~ok, mid, hi))

    lo = jnp.zeros(ms.shape, jnp.int32)
    hi = jnp.full(ms.shape, g, jnp.int32)
    k, _ = lax.fori_loop(0, max(1, int(np.ceil(np.log2(g + 1)))), bisect, (lo, hi))
    # Sample i adds w_i at sorted positions j < k_i: a suffix sum of bins.
    bins = jax.ops.segment_sum(w, k, num_segments=g + 1)  # (G+1, 2)
    from_s = jnp.cumsum(bins[::-1], axis=0)[::-1][1:]  # sum_{k > j}
    hits = jnp.zeros((g, 2), jnp.float32).at[order].set(base + from_s)
  else:
    raise ValueError(f"method must be 'search' or 'vmap'; got {method!r}.")
  return {
      "acc_seen": hits[:, 0] / n_seen,
      "acc_unseen": hits[:, 1] / n_unseen,
      "acc_all": (hits[:, 0] + hits[:, 1]) / (n_seen + n_unseen),
  }
