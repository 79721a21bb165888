"""Speed of the exact seen-unseen curve and the γ grid (not part of the tests).

Run: .venv/bin/python benchmarks/calibration_bench.py [--repeats 20]

Prints, measured in this process on the default JAX device:
  1. exact curve / jnp.max(logits, axis=1)  at N=10,000, C=1,000, |U|=500,
     split into the per-sample reduction and the sort + cumulative sums;
  2. 1,001-point γ grid / the same floor;
  3. the exact curve on a batch with exact ties at every row max (still the
     fast path) and on one with a +inf logit (the compare-based path);
  4. exact curve vs a NumPy port of the official loop (one breakpoint per
     iteration, float64 like the official code), at sizes where it finishes,
     and checks that the two curves agree.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax import calibration as cal


def median_ms(fn, repeats):
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def interleaved_median_ms(fns, repeats):
  """Median ms of each fn, timed round-robin so all see the same machine load."""
  for fn in fns.values():
    jax.block_until_ready(fn())  # compile and warm up
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def problem(n, c, n_absent, seed=0):
  rng = np.random.default_rng(seed)
  absent = np.zeros(c, bool)
  absent[rng.choice(c, n_absent, replace=False)] = True
  labels = rng.integers(0, c, n).astype(np.int32)
  # Fine-tuned-like logits: the true class is boosted, absent classes pushed down.
  logits = rng.normal(size=(n, c)).astype(np.float32)
  logits[np.arange(n), labels] += 3.0
  logits[:, absent] -= 2.0
  return logits, labels, absent


# --- A straightforward port of the official loop (py/util/evaluate.py). ---


def _official_shift(z, seen_cls, absent_cls, positive):
  max_s = z[:, seen_cls].max(1)
  max_u = z[:, absent_cls].max(1)
  diff = np.sort(max_s - max_u if positive else max_u - max_s)
  diff = diff[diff >= 0]
  if diff.shape[0] == 0:
    return 0.0, True
  if diff.shape[0] == 1:
    return diff[0] + 1.0, True
  first = diff[0]
  later = diff[diff != first]
  if later.shape[0]:
    return (first + later[0]) / 2.0, False
  return first + 1.0, True


def _official_acc(z, labels, seen_rows):
  hit = z.argmax(1) == labels
  return hit.mean(), hit[seen_rows].mean(), hit[~seen_rows].mean()


def official_curve(logits, labels, absent):
  """(P, 4) rows (acc_all, acc_seen, acc_unseen, γ) in [0, 1], like the original."""
  seen_cls, absent_cls = np.flatnonzero(~absent), np.flatnonzero(absent)
  seen_rows = ~absent[labels]
  rows = []
  for positive in (True, False):
    z = logits.astype(np.float64).copy()
    final, total = False, 0.0
    while not final:
      shift, final = _official_shift(z, seen_cls, absent_cls, positive)
      shift = shift if positive else -shift
      z[:, absent_cls] += shift
      total += shift
      rows.append((*_official_acc(z, labels, seen_rows), total))
  return np.array(rows)


def path_ausuc(seen, unseen, gammas):
  order = np.argsort(-np.asarray(gammas), kind="stable")
  x, y = np.asarray(seen)[order], np.asarray(unseen)[order]
  return float(np.sum(0.5 * (x[1:] - x[:-1]) * (y[1:] + y[:-1])))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, "
        f"medians of {args.repeats} interleaved runs")

  logits, labels, absent = problem(10_000, 1_000, 500)
  z, y, a = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(absent)
  gammas = jnp.linspace(-10.0, 10.0, 1001)
  floor_fn = jax.jit(lambda t: jnp.max(t, axis=1))
  stats = cal.reduce_logits(z, y, a)
  t = interleaved_median_ms(
      {
          "floor": lambda: floor_fn(z),
          "curve": lambda: cal.seen_unseen_curve(z, y, a),
          "reduce": lambda: cal.reduce_logits(z, y, a),
          "sort": lambda: cal.curve_from_stats(stats),
          "grid": lambda: cal.evaluate_gamma_grid(z, y, a, gammas),
      }, args.repeats)
  floor = t["floor"]
  print(f"N=10,000 C=1,000 |U|=500: floor jnp.max {floor:.2f} ms")
  print(f"  exact curve   {t['curve']:8.2f} ms = {t['curve'] / floor:5.1f}x floor (goal <= 5x)")
  print(f"    reduction   {t['reduce']:8.2f} ms = {t['reduce'] / floor:5.1f}x; sort + sums "
        f"{t['sort']:.2f} ms = {t['sort'] / floor:.1f}x")
  print(f"  1,001-pt grid {t['grid']:8.2f} ms = {t['grid'] / floor:5.1f}x floor (goal <= 10x)")

  # Every row's S and U maxima tied with an earlier class: the fast path
  # resolves first-index ties itself.
  z_tie = z.at[:, 1:].set(jnp.maximum(z[:, 1:], z[:, :-1]))
  _, fast = cal._reduce(z_tie, y, a, None)
  t_tie = median_ms(lambda: cal.seen_unseen_curve(z_tie, y, a), max(3, args.repeats // 4))
  print(f"  exact curve, ties at every max ({'fast' if fast else 'compare'} path) "
        f"{t_tie:.2f} ms = {t_tie / floor:.1f}x floor")
  # +inf counts as the largest float: that takes the compare-based path.
  z_inf = z.at[0, 0].set(jnp.inf)
  _, fast = cal._reduce(z_inf, y, a, None)
  t_slow = median_ms(lambda: cal.seen_unseen_curve(z_inf, y, a), max(3, args.repeats // 4))
  print(f"  exact curve, batch with a +inf ({'fast' if fast else 'compare'} path) "
        f"{t_slow:.2f} ms = {t_slow / floor:.1f}x floor")

  print("Official one-breakpoint-per-iteration loop (NumPy float64 port), C=100, |U|=50:")
  for n in (250, 500, 1000):
    lg, lb, ab = problem(n, 100, 50, seed=1)
    start = time.perf_counter()
    off = official_curve(lg, lb, ab)
    t_off = 1e3 * (time.perf_counter() - start)
    t_ex = median_ms(lambda: cal.seen_unseen_curve(lg, lb, ab), 5)
    curve = cal.seen_unseen_curve(lg, lb, ab)
    v = np.asarray(curve.valid)
    exact_pts = np.stack([np.asarray(curve.acc_seen)[v], np.asarray(curve.acc_unseen)[v]], 1)
    # Every official point must be an exact-curve point.
    dist = np.abs(off[:, None, 1:3] - exact_pts[None]).sum(-1).min(1)
    off_unique = np.unique(np.round(off[:, 1:3], 6), axis=0)
    exact_unique = np.unique(np.round(exact_pts, 6), axis=0)
    a_exact = float(cal.ausuc(curve))
    a_off = path_ausuc(off[:, 1], off[:, 2], off[:, 3])
    print(f"  N={n:5d}: loop {t_off:9.1f} ms, exact {t_ex:6.2f} ms, "
          f"ratio {t_off / t_ex:7.0f}x | points: official {len(off_unique)} distinct, "
          f"exact {len(exact_unique)} distinct of {len(exact_pts)}; max dist official->exact {dist.max():.1e}; "
          f"AUSUC exact {a_exact:.6f} official-path {a_off:.6f}")
  print("  The loop does ~N iterations of O(N*C) each, so it scales as N^2*C; the "
        "exact curve is O(N*C + N log N).")


if __name__ == "__main__":
  main()
