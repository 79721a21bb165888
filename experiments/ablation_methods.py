r"""Ablation: full fine-tuning vs a frozen classifier (backbone only) vs a linear probe (head only).

The paper asks which part of the model causes the collapse of Acc_u/y: training the backbone under a frozen head
(frozen_classifier) keeps the absent-class weights but still moves the features; training only the head
(linear_probe) keeps the features. All three are calibrated the same way (ALG, PCV, gamma*). Arg: the benchmark, one
of imagenet_r (default) or an Office-Home pair (e.g. Ar-Cl, which needs its source stage, see office_home.py), then
',runlocal' for a CPU smoke run.

Data and checkpoint: as the chosen benchmark's config.

Run:

  python -m ftcal_jax.main --config experiments/ablation_methods.py:imagenet_r \
      --workdir workdirs/ablation_methods/imagenet_r --config.dataset.data_dir=$DATA

Hardware, batch and time (estimates, not measured): the chosen benchmark's, with three methods instead of FT and
the Oracle: on ImageNet-R about 20-25 minutes on a TPU v3-8 or an 8-GPU host; global batch 64.
"""

from ftcal_jax import recipes as pr


def get_config(arg=None):
  """Arg: 'imagenet_r' or an Office-Home pair, optionally ',runlocal'."""
  args = pr.parse_arg(arg, positional="benchmark", benchmark="imagenet_r", runlocal=False)
  local = ",runlocal" if args["runlocal"] else ""
  if args["benchmark"] == "imagenet_r":
    config = pr.load("imagenet_r", __file__).get_config(local)
  else:
    config = pr.load("office_home", __file__).get_config(args["benchmark"] + local)  # Raises on an unknown pair.
  config.methods = ("finetune", "frozen_classifier", "linear_probe")  # The three arms, in one job.
  return config
