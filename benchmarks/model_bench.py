r"""Fine-tune train-step throughput: the Flax ViT or ResNet against the PyTorch reference (transformers'), on CPU.

Both frameworks run the same ViT (the Flax one starts from the converted PyTorch weights, and the first losses
are checked to agree), the same batch, float32, and one step = forward + cross-entropy + backward + SGD-momentum
update. The Flax step is jitted with the train state donated. Timing rounds alternate between the two
frameworks, so that load from other processes hits both alike; the fastest and median rounds and the CPU
time per step are reported.

  python benchmarks/model_bench.py                      # ViT-Ti widths, depth 4, 224px, batch 32
  python benchmarks/model_bench.py --depth 12 --res 112 --batch 64
  python benchmarks/model_bench.py --model ViT-glyphs/8 --res 32 --batch 128 --classes 47   # the demo's model
  python benchmarks/model_bench.py --model ResNet-50 --res 224 --batch 32   # the paper's ResNet-50 (BatchNorm in
                                                                          # train mode, as fine-tuning runs it)

With --host_devices N, XLA splits the CPU into N devices and the Flax step runs data-parallel over them (batch on
P('data'), state replicated), as the project's train step does on a mesh; PyTorch keeps its intra-op threads.

  python benchmarks/model_bench.py --host_devices 2

XLA:CPU allocates a step's temporaries as one fresh buffer per step (about 640 MB for ViT-Ti/224 at batch 32),
which glibc maps anew each time: the kernel then zeroes every page the step touches (a fifth of the CPU samples).
Transparent huge pages for malloc cut that cost; the setting applies to the whole process, so to PyTorch too:

  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/model_bench.py --host_devices 2

With --gpu, only the Flax side runs (on the default JAX backend), e.g. ViT-B/16 at bf16 on an accelerator:

  python benchmarks/model_bench.py --gpu --model ViT-B/16 --depth 12 --res 224 --batch 128 --dtype bfloat16
"""

import argparse
import os
import statistics
import time


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="ViT-Ti/16", help="registry name whose widths are used")
  p.add_argument("--depth", type=int, default=4, help="number of encoder blocks (overrides the registry's)")
  p.add_argument("--res", type=int, default=224, help="image side in pixels")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--classes", type=int, default=100)
  p.add_argument("--steps", type=int, default=2, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=6, help="alternating timing rounds per framework")
  p.add_argument("--warmup", type=int, default=3, help="untimed steps per framework after the first one")
  p.add_argument("--dtype", default="float32", help="Flax compute dtype (--gpu only; the CPU comparison is f32)")
  p.add_argument("--gpu", action="store_true", help="time only the Flax step on the default backend, with MFU")
  p.add_argument("--host_devices", type=int, default=1,
                 help="split the CPU into this many XLA devices and run the Flax step data-parallel over them")
  return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.host_devices > 1:  # must reach XLA before jax is imported
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={ARGS.host_devices}"]).strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from ftcal_jax.models import MODEL_CONFIGS, get_model  # pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax.models import RESNET_CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax.models import load  # pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax.models import resnet_weights  # pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax.models import weights  # pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax.train_step import make_mesh  # pylint: disable=g-import-not-at-top,wrong-import-position


def flax_step_fn(model, tx, mesh=None):
  """The pure fine-tune step: (state, images, labels) -> (state, loss), state = (params, batch_stats, opt_state).

  batch_stats is {} for a ViT; a ResNet normalises with batch statistics and updates its running ones (train
  mode). With a mesh, the batch is sharded on P('data') and the state replicated, as in ftcal_jax.train_step.
  """

  def step(state, images, labels):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      if not batch_stats:
        return xent(model.apply({"params": p}, images, train=True)["logits"]), batch_stats
      out, new = model.apply({"params": p, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"])
      return xent(out["logits"]), new["batch_stats"]

    def xent(logits):
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state), loss

  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  return jax.jit(step, donate_argnums=0, in_shardings=(rep, data, data), out_shardings=(rep, rep))


def time_flax(step, state, images, labels, n):
  """Returns the new state and (wall seconds, process CPU seconds) per step."""
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(n):
    state, loss = step(state, images, labels)
  jax.block_until_ready((state, loss))
  return state, ((time.perf_counter() - t0) / n, (time.process_time() - c0) / n)


def torch_reference(cfg, depth, res, classes):
  import transformers  # pylint: disable=g-import-not-at-top
  if cfg is None:  # ResNet-50: ResNetConfig's defaults
    return transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=classes)).train()
  config = transformers.ViTConfig(hidden_size=cfg["hidden_size"], num_hidden_layers=depth,
                                  num_attention_heads=cfg["num_heads"], intermediate_size=cfg["mlp_dim"],
                                  image_size=res, patch_size=cfg["patch_size"][0], num_labels=classes,
                                  layer_norm_eps=1e-6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return transformers.ViTForImageClassification(config).train()


def time_torch(torch, model, opt, images, labels, n):
  """Returns the last loss and (wall seconds, process CPU seconds) per step."""
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(n):
    loss = torch.nn.functional.cross_entropy(model(pixel_values=images).logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  return loss.item(), ((time.perf_counter() - t0) / n, (time.process_time() - c0) / n)


def flax_model_from(args, ref, cfg):
  """The Flax model of args.model with the PyTorch reference's weights: (model, params, batch_stats or {})."""
  resnet = cfg is None
  model = get_model(args.model, args.classes, **({} if resnet else {"num_layers": args.depth}))
  init = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, args.res, args.res, 3)))
  if resnet:
    variables = load.restore_variables(init, resnet_weights.load_resnet_state_dict(ref.state_dict()))
  else:
    loaded = weights.load_torch_state_dict(ref.state_dict(), num_heads=cfg["num_heads"])
    variables = {"params": weights.restore_into(init["params"], loaded)}
  params, batch_stats = jax.tree.map(jnp.asarray, (variables["params"], variables.get("batch_stats", {})))
  return model, params, batch_stats


def run_cpu(args):
  import torch  # pylint: disable=g-import-not-at-top
  resnet = args.model in RESNET_CONFIGS
  if resnet and args.model != "ResNet-50":
    raise SystemExit("The ResNet comparison is for ResNet-50 (transformers' ResNetConfig defaults).")
  cfg = None if resnet else MODEL_CONFIGS[args.model]
  rng = np.random.RandomState(0)
  images = rng.randn(args.batch, args.res, args.res, 3).astype(np.float32)
  labels = rng.randint(0, args.classes, size=args.batch)

  torch.manual_seed(0)
  ref = torch_reference(cfg, args.depth, args.res, args.classes)
  t_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  t_labels = torch.from_numpy(labels)
  t_opt = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)

  model, params, batch_stats = flax_model_from(args, ref, cfg)
  tx = optax.sgd(1e-3, momentum=0.9)
  state = (params, batch_stats, tx.init(params))
  j_images, j_labels = jnp.asarray(images), jnp.asarray(labels)
  mesh = None
  if args.host_devices > 1:
    mesh = make_mesh()
    if args.batch % mesh.size:
      raise SystemExit(f"--batch {args.batch} is not divisible by --host_devices {mesh.size}.")
    state = jax.device_put(state, NamedSharding(mesh, P()))
    j_images, j_labels = jax.device_put((j_images, j_labels), NamedSharding(mesh, P("data")))
  step = flax_step_fn(model, tx, mesh)

  # One step each: compiles / warms up, and shows both compute the same loss from the same weights.
  t0 = time.perf_counter()
  state, j_loss = step(state, j_images, j_labels)
  j_loss = float(j_loss)
  compile_s = time.perf_counter() - t0
  t_loss, _ = time_torch(torch, ref, t_opt, t_images, t_labels, 1)
  shape = "BatchNorm in train mode" if resnet else (f"depth {args.depth}, {(args.res // cfg['patch_size'][0])**2 + 1}"
                                                    " tokens")
  print(f"config: {args.model} widths, {shape}, {args.res}px, batch {args.batch}, float32, SGD momentum 0.9")
  print(f"threads: torch {torch.get_num_threads()}, cpu_count {os.cpu_count()}; jax {jax.__version__} "
        f"({jax.default_backend()}, {len(jax.devices())} device(s), Flax step "
        f"{'data-parallel' if mesh else 'on one device'}), torch {torch.__version__}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  print(f"first-step loss: flax {j_loss:.6f}  torch {t_loss:.6f}  (flax compile + step {compile_s:.1f}s)")
  if abs(j_loss - t_loss) > 1e-3 * max(1.0, abs(t_loss)):
    raise SystemExit("The two models disagree on the first loss: not the same computation, refusing to compare.")
  # Untimed steps: both processes' allocators, page tables and thread pools reach their steady state.
  state, _ = time_flax(step, state, j_images, j_labels, args.warmup)
  time_torch(torch, ref, t_opt, t_images, t_labels, args.warmup)

  j_times, t_times = [], []
  for _ in range(args.rounds):
    state, dt = time_flax(step, state, j_images, j_labels, args.steps)
    j_times.append(dt)
    _, dt = time_torch(torch, ref, t_opt, t_images, t_labels, args.steps)
    t_times.append(dt)
  # Other processes share the cores: the fastest round is the least disturbed, the median the typical one.
  # CPU seconds per step (all threads) are a second, load-insensitive view of the work each framework does.
  summary = {}
  for name, times in (("flax", j_times), ("torch", t_times)):
    wall = [w for w, _ in times]
    summary[name] = (min(wall), statistics.median(wall), statistics.median([c for _, c in times]))
    print(f"{name:5s} step wall min {min(wall) * 1e3:7.0f} ms ({args.batch / min(wall):5.1f} img/s), "
          f"median {statistics.median(wall) * 1e3:7.0f} ms; CPU {summary[name][2] * 1e3:7.0f} ms/step; rounds: " +
          ", ".join(f"{w * 1e3:.0f}" for w in wall))
  (jmin, jmed, jcpu), (tmin, tmed, tcpu) = summary["flax"], summary["torch"]
  print(f"ratio flax/torch throughput: {tmin / jmin:.2f}x (min wall), {tmed / jmed:.2f}x (median wall), "
        f"{tcpu / jcpu:.2f}x (CPU time)")


def run_gpu(args):
  """Flax-only step time and MFU on the default backend (FLOPs from XLA's cost analysis)."""
  dtype = jnp.dtype(args.dtype)
  overrides = {} if args.model in RESNET_CONFIGS else {"num_layers": args.depth}
  model = get_model(args.model, args.classes, dtype=dtype, **overrides)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, args.res, args.res, 3)))
  tx = optax.sgd(1e-3, momentum=0.9)
  state = (variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]))
  images = jax.random.normal(jax.random.key(1), (args.batch, args.res, args.res, 3))
  labels = jax.random.randint(jax.random.key(2), (args.batch,), 0, args.classes)
  step = flax_step_fn(model, tx)
  cost = step.lower(state, images, labels).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))
  state, _ = time_flax(step, state, images, labels, 3)  # compile + warm-up
  times = []
  for _ in range(args.rounds):
    state, (dt, _) = time_flax(step, state, images, labels, args.steps)
    times.append(dt)
  dt = statistics.median(times)
  peak = float(os.environ.get("PEAK_TFLOPS", "989")) * 1e12  # H100 SXM dense bf16
  print(f"{jax.devices()[0].device_kind}: {args.model} depth {args.depth} {args.res}px batch {args.batch} "
        f"{args.dtype}: step {dt * 1e3:.1f} ms, {args.batch / dt:.0f} img/s, "
        f"{flops / 1e12:.2f} TFLOP/step (XLA), MFU {flops / dt / peak:.1%} of {peak / 1e12:.0f} TFLOP/s")


if __name__ == "__main__":
  run_gpu(ARGS) if ARGS.gpu else run_cpu(ARGS)
