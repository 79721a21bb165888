r"""Ablation: the number of fine-tuning classes |S| on ImageNet-R (of its 200 classes; the rest are absent).

The paper's table varies how many classes fine-tuning sees; the gap between FT and FT + calibration should persist
at every |S|. Each value is one job, identical to experiments/imagenet_r.py except class_split.num_seen (and
num_absent = 200 - |S|). Arg: 'num_seen=N' (default 100; the paper's sweep: 25, 50, 100, 150), then ',runlocal'.
The class split is drawn from one seeded permutation, so a smaller S is a subset of a larger one.

Data and checkpoint: as experiments/imagenet_r.py.

Run (one job per value):

  for n in 25 50 100 150; do
    python -m ftcal_jax.main --config experiments/ablation_num_classes.py:num_seen=$n \
        --workdir workdirs/ablation_num_classes/$n --config.dataset.data_dir=$DATA
  done

Hardware, batch and time (estimates, not measured): global batch 64; FT and PCV scale with |S|, about 5-20 minutes
per value on a TPU v3-8 or an 8-GPU host at ~2k img/s.
"""

from ftcal_jax import recipes as pr

NUM_CLASSES = 200  # ImageNet-R's classes.


def get_config(arg=None):
  """Arg: 'num_seen=N[,runlocal]'."""
  args = pr.parse_arg(arg, num_seen=100, runlocal=False)
  n = args["num_seen"]
  if not 2 <= n <= NUM_CLASSES - 1:
    raise ValueError(f"num_seen must be in [2, {NUM_CLASSES - 1}] (PCV halves S); got {n}.")
  config = pr.load("imagenet_r", __file__).get_config("runlocal" if args["runlocal"] else None)
  config.methods = ("finetune",)  # FT and its calibrations at each |S|.
  config.class_split.num_seen = n
  config.class_split.num_absent = NUM_CLASSES - n
  return config
