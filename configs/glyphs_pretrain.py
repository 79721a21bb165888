r"""Pre-training ViT-glyphs/8 on the Glyphs source domain (printed fonts, all 47 classes).

This produces the checkpoint the demo ships (ftcal_jax/assets/glyphs_vit8_pretrained.npz); the demo never
pre-trains. Rebuild it with experiments/pretrain_glyphs.py, or directly:

  python -m ftcal_jax.main --config configs/glyphs_pretrain.py --workdir /tmp/ftcal_pretrain

The job writes workdir/glyphs_vit8_pretrained.npz and reports the accuracy on held-out printed fonts
(source_test) and, for reference, on the target domain (target_test).
"""

import ml_collections


def get_config(arg=None):
  """Returns the pre-training config; arg='runlocal' trains for a few steps only."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds the init, batch order and augmentation.

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "glyphs"  # Registry name (input_pipeline.get_dataset).
  config.dataset.config = "default"  # Glyphs builder config.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(
      str)  # TFDS data dir; None = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  config.dataset.train_split = "target_train"  # Unused by pre-training (kept: the dataset object wants it).
  config.dataset.test_split = "target_test"  # Reported for reference: the pre-trained model on the target.
  config.dataset.source_split = "source_train"  # The pre-training data.
  config.dataset.source_test_split = "source_test"  # Held-out printed font families.
  config.dataset.augment = None  # None = the dataset's default mild augmentation.
  config.dataset.holdout_seed = 0  # Unused here (no PCV).

  config.model = ml_collections.ConfigDict()
  config.model.name = "ViT-glyphs/8"  # models.MODEL_CONFIGS key.
  config.model.dtype = "float32"  # Compute dtype.
  config.init_checkpoint = ""  # From scratch.
  config.init_head = "keep"  # Unused without a checkpoint.

  config.methods = ("pretrain",)  # The 'pretrain' method: all classes of source_split, all params.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"  # A ViT from scratch trains best with AdamW.
  config.optimizer.lr = 2e-3  # Peak learning rate.
  config.optimizer.momentum = 0.0  # Unused by AdamW.
  config.optimizer.nesterov = False  # Unused by AdamW.
  config.optimizer.weight_decay = 0.05  # Decoupled weight decay.
  config.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters.
  config.optimizer.warmup_steps = 100  # Linear warm-up, then cosine.
  config.optimizer.schedule = "cosine"
  config.optimizer.grad_clip_norm = 1.0  # Global-norm clip.

  config.num_epochs = 10.0  # Passes over source_train.
  config.num_steps = 0  # If > 0, overrides num_epochs.
  config.batch_size = 128  # Global batch.
  config.eval_batch_size = 1024  # Global eval batch.

  # Unused by pre-training; present because the training loop reads one config layout.
  config.ldifs = ml_collections.ConfigDict(dict(alpha=0.0, taps=(), normalisation="channel"))
  config.holistic_transfer = ml_collections.ConfigDict(dict(distill_weight=0.0, temperature=1.0))
  config.pcv = ml_collections.ConfigDict(dict(enabled=False, num_splits=0, holdout_fraction=0.2, seed=0))

  config.log_every_steps = 50  # Progress line and TensorBoard scalars.
  config.checkpoint_every_steps = 200  # Orbax saves (and at the end).
  config.write_figures = False  # No report for pre-training.
  config.heartbeat_s = 10.0  # Seconds between "still working" lines during long silent stages.
  config.pretrain_output = "glyphs_vit8_pretrained.npz"  # Written inside the workdir.

  if arg == "runlocal":
    config.num_steps = 20
  config.lock()
  return config
