"""Speed of the exact seen-unseen curve and the γ grid (not part of the tests).

Run: .venv/bin/python benchmarks/calibration_bench.py [--repeats 20] [--official]
It imports the installed ftcal_jax; from a checkout that is not the installed
one (a git worktree, say), prefix PYTHONPATH=. or it times the other copy.

Prints, measured in this process on the default JAX device, as ratios to
``jnp.max(logits, axis=-1)`` over the same logits (the floor: one read of z):
  1. exact curve + AUSUC in three modes: the library call, inside the caller's
     ``jax.jit``, and ``jax.vmap`` over 4 logit sets of N/4 rows, at
     N=10,000 C=1,000 |U|=500, N=50,000 C=100 and N=1,000 C=21,843;
  2. a 1,001-point γ grid (library call and in the caller's jit);
  3. the curve with 1% of the entries NaN, +inf or -inf, and with exact ties
     at every row max;
  4. with --official, the exact curve vs a NumPy port of the official loop
     (one breakpoint per iteration, float64), at sizes where it finishes;
  5. with --stages, where the time goes: each stage of the curve alone, as a
     ratio to the same floor, at the three sizes.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from ftcal_jax import _argmax_cpu
from ftcal_jax import _exact_curve
from ftcal_jax import _pair_order
from ftcal_jax import calibration as cal
from ftcal_jax import validation


def median_ms(fn, repeats):
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def interleaved_median_ms(fns, repeats, best=None):
  """Median ms of each fn, timed round-robin so all see the same machine load.

  If best is a dict, it also receives each fn's fastest run (less sensitive to
  other processes on a shared machine).
  """
  for fn in fns.values():
    jax.block_until_ready(fn())  # compile and warm up
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  if best is not None:
    best.update({name: 1e3 * float(np.min(t)) for name, t in times.items()})
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


def _modes(z, y, a, batch):
  """The three ways researchers call the curve: library call, in their jit, vmapped."""
  n, c = z.shape
  zb, yb = z.reshape(batch, n // batch, c), y.reshape(batch, n // batch)
  curve_auc = lambda z, y: cal.ausuc(cal.seen_unseen_curve(z, y, a))
  in_jit = jax.jit(curve_auc)
  vmapped = jax.jit(jax.vmap(curve_auc))
  floor = jax.jit(lambda t: jnp.max(t, axis=-1))
  return {
      "floor": lambda: floor(z),
      "library call": lambda: curve_auc(z, y),
      "in caller's jit": lambda: in_jit(z, y),
      f"vmap over {batch} sets": lambda: vmapped(zb, yb),
  }


def _with_bad_entries(logits, frac, seed=0):
  """A copy with frac of the entries NaN, +inf or -inf (a third each)."""
  rng = np.random.default_rng(seed)
  out = logits.copy()
  pick = rng.random(out.shape)
  out[pick < frac / 3] = np.nan
  out[(pick >= frac / 3) & (pick < 2 * frac / 3)] = np.inf
  out[(pick >= 2 * frac / 3) & (pick < frac)] = -np.inf
  return out


def _report(title, fns, repeats, goal):
  best = {}
  times = interleaved_median_ms(fns, repeats, best)
  floor, floor_best = times.pop("floor"), best.pop("floor")
  print(f"{title}: floor jnp.max {floor:.2f} ms (best {floor_best:.2f})")
  for name, ms in times.items():
    ratio, ratio_best = ms / floor, best[name] / floor_best
    verdict = "" if ratio <= goal else "  NOT MET"
    print(f"  {name:28s} {ms:8.2f} ms = {ratio:5.1f}x floor, best-of {ratio_best:5.1f}x (goal <= {goal}x){verdict}")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--official", action="store_true", help="also time the official loop (slow)")
  parser.add_argument("--stages", action="store_true", help="only time the curve's stages one by one")
  args = parser.parse_args()
  if args.stages:
    return _stages(args.repeats)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"medians of {args.repeats} interleaved runs")
  for n, c, n_absent in ((10_000, 1_000, 500), (50_000, 100, 50), (1_000, 21_843, 10_000)):
    logits, labels, absent = problem(n, c, n_absent)
    z, y, a = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(absent)
    _report(f"exact curve + AUSUC, N={n:,} C={c:,} |U|={n_absent:,}", _modes(z, y, a, batch=4), args.repeats, 4)
    if c == 1_000:
      gammas = jnp.linspace(-10.0, 10.0, 1001)
      floor_fn = jax.jit(lambda t: jnp.max(t, axis=1))
      grid_jit = jax.jit(lambda z, y: cal.evaluate_gamma_grid(z, y, a, gammas)["acc_all"])
      grid_fns = {
          "floor": lambda: floor_fn(z),
          "library call": lambda: cal.evaluate_gamma_grid(z, y, a, gammas)["acc_all"],
          "in caller's jit": lambda: grid_jit(z, y),
      }
      _report("1,001-point γ grid, same logits", grid_fns, args.repeats, 4)
      bad = jnp.asarray(_with_bad_entries(logits, 0.01))
      _report("exact curve + AUSUC, 1% of entries NaN/+inf/-inf", _modes(bad, y, a, batch=4), args.repeats, 8)
      z_tie = z.at[:, 1:].set(jnp.maximum(z[:, 1:], z[:, :-1]))
      _report("exact curve + AUSUC, exact ties at every row max", _modes(z_tie, y, a, batch=4), args.repeats, 4)
  if args.official:
    _official_comparison()


def _official_comparison():
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
    a_exact = float(cal.ausuc(curve))
    a_off = path_ausuc(off[:, 1], off[:, 2], off[:, 3])
    print(f"  N={n:5d}: loop {t_off:9.1f} ms, exact {t_ex:6.2f} ms, ratio {t_off / t_ex:7.0f}x | "
          f"max dist official->exact {dist.max():.1e}; AUSUC exact {a_exact:.6f} official-path {a_off:.6f}")


def _stages(repeats):
  """Each stage of the exact curve alone, as a ratio to the floor, one process."""
  for n, c, n_absent in ((10_000, 1_000, 500), (50_000, 100, 50), (1_000, 21_843, 10_000)):
    logits, labels, absent = problem(n, c, n_absent)
    z, y, a = jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(absent)
    seen_cls, absent_cls = validation.class_rows(a, None)
    vectors = _argmax_cpu.row_vectors(seen_cls, absent_cls)
    bias2, (k, b) = vectors[0], (vectors[1].shape[0], vectors[2].shape[0])
    stats = cal.reduce_logits(z, y, a)
    hi, lo, _ = _exact_curve.exact_gaps(stats.max_s, stats.max_u)
    key_hi, key_lo = _argmax_cpu.order_key(hi), _argmax_cpu.order_key(lo)
    stage = {
        "floor": (lambda t: jnp.max(t, -1), z),
        "S and U block maxima (one pass)":
            (lambda t: jnp.max(t.reshape(n, 1, k, b) + bias2.reshape(1, 2, k, b), -1), z),
        "NaN/inf check (z @ 0)": (lambda t: _argmax_cpu.non_finite_rows(t, vectors[-1]), z),
        "whole reduction": (lambda t: cal._reduce(t, y, a, None), z),
        "key-only sort of N int32": (jnp.sort, key_hi),
        "(hi, lo) order (pair_slots)": (lambda kh: _pair_order.pair_slots(kh, key_lo), key_hi),
        "curve from stats": (cal.curve_from_stats, stats),
    }
    fns = {name: (lambda f=jax.jit(f), x=x: f(x)) for name, (f, x) in stage.items()}
    best = {}
    times = interleaved_median_ms(fns, repeats, best)
    floor = times.pop("floor")
    print(f"N={n:,} C={c:,}: floor jnp.max {floor:.2f} ms")
    for name, ms in times.items():
      print(f"  {name:34s} {ms:7.2f} ms = {ms / floor:5.2f}x floor")


if __name__ == "__main__":
  main()
