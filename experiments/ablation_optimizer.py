r"""Ablation: the optimiser of fine-tuning, and the optimiser study (AUSUC over a learning-rate x weight-decay grid).

The paper's claim is that the absent-class collapse is a calibration problem under any optimiser: FT + gamma* still
beats the pre-trained model, while the raw FT numbers differ. Each arm is FT alone with one optimiser:
  * sgd:  SGD + Nesterov 0.9, backbone 0.1x (the paper's recipe, identical to the base config);
  * adam: AdamW (decoupled weight decay), one rate for all parameters, linear warm-up then cosine;
  * adabelief, adadelta, adagrad, rmsprop: optax's defaults (optimizers.py), weight decay added to the gradient,
    one rate for all parameters, the same warm-up and cosine as adam.
Args: the optimiser, then optionally base=imagenet_r|glyphs (default imagenet_r), lr=X and wd=X (default: the
arm's ARM_LR and the base's weight decay), epochs=E (0 = the base's), runlocal. On the glyphs base (the offline
demo's data and checkpoint) PCV is off: the study reads AUSUC, which needs no PCV.

The study is experiments/optimizer_study.py, which runs this config over a grid and draws a heatmap per optimiser.

Data and checkpoint: as experiments/imagenet_r.py (base=imagenet_r), or none (base=glyphs).

Run one arm:

  python -m ftcal_jax.main --config experiments/ablation_optimizer.py:sgd --workdir workdirs/ablation_optimizer/sgd \
      --config.dataset.data_dir=$DATA
  python -m ftcal_jax.main --config experiments/ablation_optimizer.py:rmsprop,base=glyphs,lr=1e-3,wd=0 \
      --workdir workdirs/optimizer_glyphs/rmsprop

Hardware, batch and time (estimates, not measured): on ImageNet-R as imagenet_r.py without the Oracle: global
batch 64, ~1.3M training images per arm, about 15-20 minutes per arm on a TPU v3-8 or an 8-GPU host. On Glyphs,
one arm is one demo FT run (30-60 s on 2 idle CPU cores at 10 epochs).
"""

import os

from ftcal_jax import recipes as pr

OPTIMIZERS = ("sgd", "adam", "adabelief", "adadelta", "adagrad", "rmsprop")
BASES = ("imagenet_r", "glyphs")
# Each arm's head learning rate per base: the centre of the study's grid.
ARM_LR = {
    "imagenet_r": dict(sgd=1e-3, adam=1e-5, adabelief=1e-5, adadelta=1.0, adagrad=1e-3, rmsprop=1e-5),
    "glyphs": dict(sgd=1e-2, adam=1e-4, adabelief=1e-4, adadelta=1.0, adagrad=1e-2, rmsprop=1e-4),
}


def _base(base: str, runlocal: bool):
  """The base job, unlocked: ImageNet-R's FT, or the Glyphs demo's FT without PCV."""
  if base == "imagenet_r":
    config = pr.load("imagenet_r", __file__).get_config("runlocal" if runlocal else None)
  else:
    glyphs = pr.load_file(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "glyphs.py"))
    config = glyphs.get_config("runlocal" if runlocal else None)
    config.unlock()
    config.pcv.enabled = False  # The study reads AUSUC; PCV's pseudo runs would triple its cost.
  config.methods = ("finetune",)  # The ablation compares FT (and its calibrations) only.
  return config


def get_config(arg=None):
  """Arg: 'OPTIMIZER[,base=B][,lr=X][,wd=X][,epochs=E][,runlocal]', e.g. 'adam' or 'rmsprop,base=glyphs,lr=1e-3'."""
  args = pr.parse_arg(arg, positional="optimizer", config_name="experiments/ablation_optimizer.py", optimizer="sgd",
                      base="imagenet_r", lr=0.0, wd=-1.0, epochs=0.0, runlocal=False)
  if args["optimizer"] not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer arm {args['optimizer']!r}; valid: {', '.join(OPTIMIZERS)}.")
  if args["base"] not in BASES:
    raise ValueError(f"Unknown base {args['base']!r}; valid: {', '.join(BASES)}.")
  config = _base(args["base"], args["runlocal"])
  name = args["optimizer"]
  if name != "sgd":
    config.optimizer.name = "adamw" if name == "adam" else name  # The Adam arm decouples its weight decay.
    config.optimizer.momentum = 0.0  # Unused by the adaptive optimisers.
    config.optimizer.nesterov = False  # Unused by the adaptive optimisers.
    config.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters.
    config.optimizer.warmup_steps = 1 if args["runlocal"] else (500 if args["base"] == "imagenet_r" else 20)
  config.optimizer.lr = args["lr"] or ARM_LR[args["base"]][name]  # Head learning rate.
  if args["wd"] >= 0:
    config.optimizer.weight_decay = args["wd"]  # The grid's weight decay (default: the base's).
  if args["epochs"] > 0 and not args["runlocal"]:
    config.num_epochs = args["epochs"]  # A reduced budget for the study's grid.
  config.lock()
  return config
