"""The input pipeline's share of a Glyphs fine-tuning step.

Times (a) producing one augmented host batch of 32x32x1 glyphs with `input_pipeline.train_batches` and (b) one
jitted SGD train step of ViT-glyphs/8 (47 classes) on such a batch, then reports the pipeline's share of
(a) + (b), the step time if the two ran back to back on one thread. Data are synthetic uint8 arrays of the Glyphs
shape, so the benchmark needs no built dataset; the pipeline's cost does not depend on pixel values.

  .venv/bin/python benchmarks/input_bench.py --batch 128 --steps 30
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftcal_jax import input_pipeline as ip
from ftcal_jax.datasets import registry
from ftcal_jax.models import get_model


def _time(fn, steps):
  fn()  # Warm-up (and compilation).
  t0 = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - t0) / steps


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--examples", type=int, default=20_000)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.examples, 32, 32, 1), dtype=np.uint8)
  labels = rng.integers(0, 47, (args.examples,)).astype(np.int32)
  seen = list(range(0, 47, 2))
  results = {}
  for name, augment in (("plain", None), ("augmented", registry.GLYPHS_AUGMENT)):
    it = ip.train_batches(images, labels, global_batch=args.batch, seed=0, classes=seen, augment=augment)
    results[name] = _time(lambda: next(it), args.steps)

  model = get_model("ViT-glyphs/8", 47)
  batch = next(ip.train_batches(images, labels, global_batch=args.batch, seed=0, augment=registry.GLYPHS_AUGMENT))
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)["params"]
  tx = optax.sgd(1e-3, momentum=0.9, nesterov=True)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):

    def loss_fn(p):
      logits = model.apply({"params": p}, batch["image"], train=True)["logits"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = [params, opt_state]

  def run_step():
    state[0], state[1], loss = step(state[0], state[1], batch)
    loss.block_until_ready()

  results["train_step"] = _time(run_step, args.steps)
  print(f"devices: {jax.devices()}, batch {args.batch}, {args.steps} timed steps")
  for name in ("plain", "augmented"):
    t, s = results[name], results["train_step"]
    print(f"input ({name:9s}): {1e3 * t:7.2f} ms/batch   share of input + step: {100 * t / (t + s):5.1f}%")
  step = results["train_step"]
  print(f"train step         : {1e3 * step:7.2f} ms/step  ({args.batch / step:.0f} img/s)")


if __name__ == "__main__":
  main()
