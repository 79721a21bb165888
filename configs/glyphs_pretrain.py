r"""Pre-training ViT-glyphs/8 on the Glyphs source domain (printed fonts, all 47 classes).

This produces the checkpoint the demo ships (ftcal_jax/assets/glyphs_vit8_pretrained.npz); the demo never
pre-trains. Rebuild it with experiments/pretrain_glyphs.py, or directly:

  python -m ftcal_jax.main --config configs/glyphs_pretrain.py --workdir /tmp/ftcal_pretrain

The job writes workdir/glyphs_vit8_pretrained.npz and reports the accuracy on held-out printed fonts
(source_test) and, for reference, on the target domain (target_test).
"""

from ftcal_jax import base_config
from ftcal_jax import recipes


def get_config(arg=None):
  """Returns the pre-training config; arg='runlocal' trains for a few steps only."""
  args = recipes.parse_arg(arg, config_name="configs/glyphs_pretrain.py", runlocal=False)
  config = base_config.get_config()  # The schema; below, what pre-training from scratch changes.

  config.dataset.name = "glyphs"  # Rendered offline (datasets/glyphs.py), held in memory.
  config.dataset.train_split = "target_train"  # Unused by pre-training (kept: the dataset object wants it).
  config.dataset.test_split = "target_test"  # Reported for reference: the pre-trained model on the target.
  config.dataset.source_split = "source_train"  # The pre-training data.
  config.dataset.source_test_split = "source_test"  # Held-out printed font families.
  # augment None = the dataset's default mild augmentation; holdout_seed is unused here (no PCV).

  config.model.name = "ViT-glyphs/8"  # models.MODEL_CONFIGS key.
  config.model.dtype = "float32"  # CPUs have no fast bfloat16.
  # init_checkpoint "" = from scratch; init_head is unused without a checkpoint.
  config.methods = ("pretrain",)  # The 'pretrain' method: all classes of source_split, all params.

  config.optimizer.name = "adamw"  # A ViT from scratch trains best with AdamW.
  config.optimizer.lr = 2e-3  # Peak learning rate.
  config.optimizer.momentum = 0.0  # Unused by AdamW.
  config.optimizer.nesterov = False  # Unused by AdamW.
  config.optimizer.weight_decay = 0.05  # Decoupled weight decay.
  config.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters.
  config.optimizer.warmup_steps = 100  # Linear warm-up, then cosine.
  config.optimizer.grad_clip_norm = 1.0  # Global-norm clip.

  config.num_epochs = 6.0  # Passes over source_train (1,128 steps of 128): the shipped checkpoint's recipe.
  config.batch_size = 128  # Global batch.
  config.eval_batch_size = 1024  # Global eval batch.

  # class_split, ldifs, holistic_transfer and pcv are unused by pre-training; these keep the values this config has
  # always recorded in its report.json and checkpoint fingerprint.
  config.ldifs.alpha = 0.0
  config.holistic_transfer.distill_weight = 0.0
  config.holistic_transfer.temperature = 1.0
  config.pcv.enabled = False
  config.pcv.num_splits = 0
  config.pcv.seed = 0

  config.checkpoint_every_steps = 200  # Orbax saves (and at the end).
  config.write_figures = False  # No report for pre-training.
  config.heartbeat_s = 10.0  # Seconds between "still working" lines during long silent stages.
  config.pretrain_output = "glyphs_vit8_pretrained.npz"  # Written inside the workdir.

  if args["runlocal"]:
    config.num_steps = 20
  config.lock()
  return config
