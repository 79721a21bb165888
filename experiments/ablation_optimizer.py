r"""Ablation: the optimiser of fine-tuning, SGD (the paper's recipe) vs Adam, on ImageNet-R 100/100.

The paper's claim is that the absent-class collapse is a calibration problem under either optimiser: after
fine-tuning with Adam, FT + gamma* still beats the pre-trained model, while the raw FT numbers differ. Both arms run
the same job as experiments/imagenet_r.py except the optimiser:
  * sgd:  SGD + Nesterov 0.9, head lr 1e-3, backbone 0.1x, weight decay 1e-4 (identical to imagenet_r.py);
  * adam: AdamW (decoupled weight decay 1e-4), lr 1e-5 for all parameters, 500 warm-up steps, cosine.
Arg: 'sgd' or 'adam', then ',runlocal' for a CPU smoke run.

Data and checkpoint: as experiments/imagenet_r.py.

Run:

  python -m ftcal_jax.main --config experiments/ablation_optimizer.py:sgd --workdir workdirs/ablation_optimizer/sgd \
      --config.dataset.data_dir=$DATA
  python -m ftcal_jax.main --config experiments/ablation_optimizer.py:adam \
      --workdir workdirs/ablation_optimizer/adam --config.dataset.data_dir=$DATA

Hardware, batch and time (estimates, not measured): as imagenet_r.py without the Oracle: global batch 64, ~1.3M
training images per arm, about 15-20 minutes per arm on a TPU v3-8 or an 8-GPU host.
"""

from ftcal_jax import recipes as pr

OPTIMIZERS = ("sgd", "adam")


def get_config(arg=None):
  """Arg: 'sgd' or 'adam', optionally ',runlocal'."""
  args = pr.parse_arg(arg, positional="optimizer", optimizer="sgd", runlocal=False)
  if args["optimizer"] not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer arm {args['optimizer']!r}; valid: {', '.join(OPTIMIZERS)}.")
  config = pr.load("imagenet_r", __file__).get_config("runlocal" if args["runlocal"] else None)
  config.methods = ("finetune",)  # The ablation compares FT (and its calibrations) only.
  if args["optimizer"] == "adam":
    config.optimizer.name = "adamw"  # Adam with decoupled weight decay.
    config.optimizer.lr = 1e-5  # Adam's usual fine-tuning rate for ViT-B.
    config.optimizer.momentum = 0.0  # Unused by AdamW.
    config.optimizer.nesterov = False  # Unused by AdamW.
    config.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters.
    config.optimizer.warmup_steps = 1 if args["runlocal"] else 500  # Linear warm-up, then cosine.
  return config
