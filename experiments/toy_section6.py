r"""The toy example of the paper's Section 6: absent-class features move with their nearest fine-tuning classes.

Run (CPU; 57-80 s measured on this project's 2 cores at load ~12, shared with other jobs):

  python experiments/toy_section6.py --out /tmp/toy_section6.png

The setup, all low-dimensional and synthetic:
  - 8 classes, 2-D inputs: class c is a Gaussian cluster (std 0.45) around angle 2*pi*c/8 on a circle of radius 3.
  - Source domain (pre-training, all 8 classes): those clusters. Target domain: the same clusters through one
    shared shift x -> s * R(theta) x (theta = 0.45 rad, about half the angle between two classes, s = 1.2), for
    every class alike.
  - The model: a small MLP (2 -> 64 -> 64 -> 16-D features -> 8-way linear head, named 'head' as the ViT's).
  - Pre-training on the source domain, all classes; fine-tuning on the target domain, the even classes only (S,
    4 classes; U = the odd ones, each between two S classes). Both run ftcal_jax's own pure train step
    (train_step.make_train_step with the 'pretrain' and 'finetune' methods, the optimisers of optimizers.py and
    the paper's SGD recipe of base_config.py: Nesterov, cosine, backbone at 0.1x, with a toy learning rate).

What it prints, on fresh target test samples: the accuracies of the pre-trained and fine-tuned heads (Acc_u/y
drops: U samples go to S), NCM Acc_u/y before and after (the diagnostic of paper.md: class means from target
training data of all classes; it rises: the U features improve), and the feature movement of
feature_movement.movement_cosines: for each U class, cos(m_u, m_s) with its nearest S class (by pre-trained
class mean) against the mean over all S classes. The figure shows the input domains, the features before and
after FT with each class mean's movement as an arrow, and the cosines.

Measured (seed 0, the defaults, 2 CPU cores): Acc_u/y 31.2 -> 0.0 (FT sends every U sample to S), NCM Acc_u/y
98.5 -> 99.1, cos with the nearest S class 0.76 / 0.81 / 0.77 / 0.38 (mean 0.68) against a mean over all S
classes of 0.00 (0.69 against 0.00 with the mean S movement taken out): each U class's features move like those of
the S class next to it, not like S as a whole.
"""

import argparse
import os
import sys
import time
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from ftcal_jax import base_config
from ftcal_jax import feature_movement
from ftcal_jax import input_pipeline
from ftcal_jax import methods
from ftcal_jax import metrics
from ftcal_jax import optimizers
from ftcal_jax import train_step as train_step_lib

NUM_CLASSES = 8
SEEN = tuple(range(0, NUM_CLASSES, 2))
ABSENT = tuple(range(1, NUM_CLASSES, 2))
SHIFT_ANGLE = 0.45  # The target domain's shared rotation (rad), about half the angle between two classes.
SHIFT_SCALE = 1.2  # ... and scale.
FEATURE_DIM = 16  # The pre-logits width (drawn through their first two principal components).
FT_BACKBONE_LR_MULT = 0.1  # The paper's recipe: the backbone fine-tunes at 0.1x the head's rate.


class ToyMLP(nn.Module):
  """A 2-D-input MLP with 2-D features and a linear head, called like the ViT by the train step."""
  num_classes: int = NUM_CLASSES
  width: int = 64
  feature_dim: int = FEATURE_DIM

  @nn.compact
  def __call__(self, x, *, train: bool = False, feature_blocks=()):
    del train, feature_blocks  # No dropout, no feature taps.
    h = nn.tanh(nn.Dense(self.width, name="hidden_0")(x))
    h = nn.tanh(nn.Dense(self.width, name="hidden_1")(h))
    features = nn.Dense(self.feature_dim, name="features")(h)
    return {"logits": nn.Dense(self.num_classes, name="head")(features), "pre_logits": features}


def sample(rng: np.random.Generator, n_per_class: int, target: bool,
           classes=tuple(range(NUM_CLASSES))) -> Tuple[np.ndarray, np.ndarray]:
  """(x (N, 2) float32, labels (N,)) of `classes`, from the source clusters or through the target shift."""
  labels = np.repeat(np.asarray(classes, np.int32), n_per_class)
  angle = 2 * np.pi * labels / NUM_CLASSES
  x = 3.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.45 * rng.normal(size=(labels.size, 2))
  if target:
    theta, scale = SHIFT_ANGLE, SHIFT_SCALE
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    x = scale * x @ rot.T
  return x.astype(np.float32), labels


def train(model: nn.Module, params: Any, method: str, data: Tuple[np.ndarray, np.ndarray], steps: int, lr: float,
          backbone_lr_mult: float, seed: int) -> Any:
  """`steps` of ftcal_jax's train step on (x, labels), batch 128; returns the trained params."""
  mesh = train_step_lib.make_mesh(jax.devices()[:1])
  opt_cfg = base_config.get_config().optimizer  # The paper's SGD + Nesterov recipe, cosine decay.
  opt_cfg.lr, opt_cfg.backbone_lr_mult = lr, backbone_lr_mult
  m = methods.get_method(method)
  tx = optimizers.make_optimizer(opt_cfg, optimizers.param_labels(params, m.trainable))
  step_fn = train_step_lib.make_train_step(model, m, tx, opt_cfg, mesh)
  state = train_step_lib.create_train_state(params, tx, mesh, steps)
  x, y = data
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  for _ in range(steps):
    idx = rng.integers(0, y.size, 128)
    state, _ = step_fn(state, input_pipeline.shard_batch({"image": x[idx], "label": y[idx]}, mesh), key)
  return jax.device_get(state.params)


def _ncm_acc_u(apply, params, train_xy, test_xy) -> float:
  """NCM Acc_u/y (%) of the features: class means from the target training data of ALL classes (diagnostic)."""
  means = metrics.ncm_class_means(apply(params, train_xy[0])["pre_logits"], train_xy[1], NUM_CLASSES)
  logits = metrics.ncm_logits(apply(params, test_xy[0])["pre_logits"], means)
  return float(metrics.accuracies(logits, test_xy[1], _absent_mask())["acc_u/y"])


def _absent_mask() -> np.ndarray:
  return np.isin(np.arange(NUM_CLASSES), ABSENT)


def run(seed: int = 0, pretrain_steps: int = 600, finetune_steps: int = 300, n_per_class: int = 200) -> Dict[str, Any]:
  """Pre-trains, fine-tunes on S and measures; returns the numbers and the arrays the figure draws."""
  rng = np.random.default_rng(seed)
  source = sample(rng, n_per_class, target=False)
  target_train = sample(rng, n_per_class, target=True)
  target_test = sample(rng, n_per_class, target=True)
  keep = np.isin(target_train[1], SEEN)
  ft_data = (target_train[0][keep], target_train[1][keep])  # S only, as fine-tuning sees it.

  model = ToyMLP()
  params = model.init(jax.random.key(seed), source[0][:1])["params"]
  pre = train(model, params, "pretrain", source, pretrain_steps, lr=0.05, backbone_lr_mult=1.0, seed=seed)
  ft = train(model, pre, "finetune", ft_data, finetune_steps, lr=0.05, backbone_lr_mult=FT_BACKBONE_LR_MULT,
             seed=seed + 1)

  out: Dict[str, Any] = {"target_test": target_test, "source": source}
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  for name, p in (("pretrained", pre), ("finetune", ft)):
    o = apply(p, target_test[0])
    out[f"{name}_features"] = np.asarray(o["pre_logits"])
    acc = metrics.accuracies(o["logits"], target_test[1], _absent_mask())
    out[f"{name}_acc"] = {k: float(acc[k]) for k in ("acc_s/y", "acc_u/y")}
    out[f"{name}_ncm_acc_u"] = _ncm_acc_u(apply, p, target_train, target_test)
  out["movement"] = feature_movement.movement_cosines(out["pretrained_features"], out["finetune_features"],
                                                      target_test[1], SEEN, ABSENT)
  return out


def _project(pre: np.ndarray, ft: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Both feature sets on the first two principal axes of the two together (one projection, so arrows are real)."""
  both = np.concatenate([pre, ft])
  mean = both.mean(0)
  axes = np.linalg.svd(both - mean, full_matrices=False)[2][:2].T
  return (pre - mean) @ axes, (ft - mean) @ axes


def figure(result: Dict[str, Any], path: str) -> str:
  """Input domains, features before/after FT with each class mean's movement, and the movement cosines."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(15, 4.8), dpi=110, layout="constrained")
  FigureCanvasAgg(fig)
  ax_in, ax_feat, ax_cos = fig.subplots(1, 3)
  colors = [f"C{c}" for c in range(NUM_CLASSES)]
  (xs, ys), (xt, yt) = result["source"], result["target_test"]
  for c in range(NUM_CLASSES):
    ax_in.scatter(*xs[ys == c].T, s=3, color=colors[c], alpha=0.25)
    ax_in.scatter(*xt[yt == c].T, s=6, marker="o" if c in SEEN else "x", color=colors[c], alpha=0.6)
  ax_in.set_title("inputs: source (faint, all classes), target (o = S, x = U)", fontsize=9)
  pre, ft = _project(result["pretrained_features"], result["finetune_features"])
  for c in range(NUM_CLASSES):
    rows = yt == c
    ax_feat.scatter(*ft[rows].T, s=4, color=colors[c], marker="o" if c in SEEN else "x", alpha=0.4)
    a, b = pre[rows].mean(0), ft[rows].mean(0)
    style = dict(arrowstyle="->", color=colors[c], lw=2.5 if c in ABSENT else 1.2, ls="-" if c in ABSENT else "--")
    ax_feat.annotate("", xy=b, xytext=a, arrowprops=style)
    ax_feat.text(*a, f"{'U' if c in ABSENT else 'S'}{c}", fontsize=8, color=colors[c])
  ax_feat.set_title("target test features after FT (2 principal axes); arrows: class mean, pre-trained → FT",
                    fontsize=9)
  mv = result["movement"]
  x = np.arange(len(mv["absent"]))
  ax_cos.bar(x - 0.2, mv["cos_nearest"], 0.4, label=f"nearest S class (mean {mv['mean_cos_nearest']:.2f})")
  ax_cos.bar(x + 0.2, mv["cos_all_seen"], 0.4, label=f"mean over S (mean {mv['mean_cos_all_seen']:.2f})")
  ax_cos.set_xticks(x, [f"U{u}~S{s}" for u, s in zip(mv["absent"], mv["nearest_seen"])])
  ax_cos.set_ylim(-1.05, 1.05)
  ax_cos.axhline(0, color="black", lw=0.8)
  ax_cos.set_title("cosine of each U class's feature movement", fontsize=9)
  ax_cos.legend(fontsize=8)
  fig.savefig(path)
  return path


def main(argv=None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="toy_section6.png", help="the figure's path")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pretrain_steps", type=int, default=600)
  parser.add_argument("--finetune_steps", type=int, default=300)
  args = parser.parse_args(argv)
  t0 = time.time()
  result = run(args.seed, args.pretrain_steps, args.finetune_steps)
  for name in ("pretrained", "finetune"):
    acc = result[f"{name}_acc"]
    print(f"{name:10s} head: Acc_s/y {acc['acc_s/y']:5.1f}  Acc_u/y {acc['acc_u/y']:5.1f}   "
          f"NCM Acc_u/y (diagnostic) {result[f'{name}_ncm_acc_u']:5.1f}")
  mv = result["movement"]
  for u, s, c, b in zip(mv["absent"], mv["nearest_seen"], mv["cos_nearest"], mv["cos_all_seen"]):
    print(f"U class {u}: nearest S class {s}, cos(m_u, m_s) {c:+.3f}; mean over S {b:+.3f}")
  print(
      f"mean over U: cos with nearest S {mv['mean_cos_nearest']:+.3f}, mean over all S {mv['mean_cos_all_seen']:+.3f}")
  print(f"centred (the mean S movement taken out): cos with nearest S {mv['mean_cos_nearest_centred']:+.3f}, "
        f"mean over all S {mv['mean_cos_all_seen_centred']:+.3f}")
  print(f"figure: {figure(result, args.out)} ({time.time() - t0:.1f} s)")
  return result


if __name__ == "__main__":
  main()
