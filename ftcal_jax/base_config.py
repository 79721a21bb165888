"""The one config schema: every field a job reads, with its default and what it means.

The defaults are the paper's fine-tuning recipe (the official code's: SGD + Nesterov 0.9, head lr 1e-3, backbone at
0.1x, cosine, global batch 64) on a TFDS benchmark. Every config starts from `get_config()` and overrides only what
differs: configs/glyphs.py (the offline demo), configs/glyphs_pretrain.py, configs/testing.py, and
`recipes.recipe()` for the paper's benchmarks in experiments/. tests/test_configs.py checks that every config has
exactly these keys, so a field is added here, once, with its comment.

A few fields have no default that fits every job and are None here; each config sets them: dataset.name and
class_split.num_seen.
"""

import ml_collections

# The recipe of the official code (paper.md): SGD + Nesterov 0.9, head lr 1e-3, backbone at 0.1x, cosine, batch 64.
PAPER_BATCH = 64
PAPER_LR = 1e-3


def _dataset() -> ml_collections.ConfigDict:
  """config.dataset: what datasets/registry.py builds (the registry reads a missing or None field as its default)."""
  d = ml_collections.ConfigDict()
  d.name = ml_collections.config_dict.placeholder(str)  # Registry name (datasets/registry.py); every config sets it.
  d.config = "default"  # Glyphs builder config: 'default', 'font_disjoint' or 'small' (other datasets ignore it).
  d.data_dir = ml_collections.config_dict.placeholder(
      str)  # TFDS data dir (a GCS bucket on a pod); None = $TFDS_DATA_DIR or ~/tensorflow_datasets.
  d.manual_dir = ml_collections.config_dict.placeholder(str)  # Where manual downloads lie (Office-Home's zip).
  # Benchmark-specific fields; None = the registry's default.
  d.domain = ml_collections.config_dict.placeholder(str)  # Office-Home/DomainNet domain: the builder config read.
  d.head_classes = ml_collections.config_dict.placeholder(
      str)  # ImageNet-R/-Sketch: 'mask' the head classes the dataset lacks out of every argmax (default), or 'keep'.
  d.image_size = 224  # TFDS sources: square input side after crop/resize (the ViT's posemb is resized to it).
  d.train_split = "train"  # The fine-tuning split (only its S classes are used, except Oracle).
  d.test_split = "test"  # Evaluation over all classes.
  d.source_split = "train"  # Only the source stage (method 'pretrain') reads it.
  d.source_test_split = "test"  # Reported by the source stage.
  # None = the registry's default (TFDS benchmarks: the official recipe, crop 0.7-1, flip, jitter 0.3, gray);
  # {} = no training augmentation.
  d.augment = None
  d.holdout_seed = 0  # Seeds the per-class 'fit'/'heldout' split PCV uses.
  d.split_seed = 0  # Seeds carved train/test splits (ImageNet-R/-Sketch).
  d.eval_crop_fraction = 0.875  # TFDS eval: resize the short side to size / 0.875, centre crop.
  d.shuffle_buffer = 10_000  # TFDS sources: tf.data shuffle buffer per host.
  return d


def _optimizers(config: ml_collections.ConfigDict) -> None:
  """config.optimizer (every method but LDIFS) and config.ldifs (LDIFS with its own optimiser)."""
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # The paper's recipe: SGD with Nesterov momentum ('sgd' or 'adamw').
  config.optimizer.lr = PAPER_LR  # Head learning rate (official default).
  config.optimizer.momentum = 0.9  # Nesterov momentum.
  config.optimizer.nesterov = True  # Nesterov, as the official code.
  config.optimizer.weight_decay = 5e-4  # PyTorch-style L2 added to the gradient (SGD), decoupled (AdamW).
  config.optimizer.backbone_lr_mult = 0.1  # The backbone trains at 0.1x the head's rate.
  config.optimizer.warmup_steps = 0  # Linear warm-up steps before the cosine (none in the official recipe).
  config.optimizer.schedule = "cosine"  # 'cosine' decay to 0 over the run, or 'constant'.
  config.optimizer.grad_clip_norm = 0.0  # Global-norm clip; 0 disables (no clipping in the official recipe).

  config.ldifs = ml_collections.ConfigDict()
  config.ldifs.alpha = 10.0  # loss = CE + alpha * LDIFS (their README's value).
  config.ldifs.taps = ()  # Feature taps; () = ldifs.default_taps(depth): the patch embedding and evenly spaced blocks.
  config.ldifs.normalisation = "channel"  # 'channel' (per-token unit vectors) or 'token' (official code's axis).
  config.ldifs.optimizer = ml_collections.ConfigDict()
  config.ldifs.optimizer.name = "adamw"  # LDIFS's recipe: AdamW + warm-up + cosine + clipping.
  config.ldifs.optimizer.lr = 1e-5  # Their rate for CLIP ViT-B.
  config.ldifs.optimizer.momentum = 0.0  # Unused by AdamW (kept so both optimiser configs share fields).
  config.ldifs.optimizer.nesterov = False  # Unused by AdamW.
  config.ldifs.optimizer.weight_decay = 0.1  # Decoupled AdamW weight decay.
  config.ldifs.optimizer.backbone_lr_mult = 1.0  # One rate for all parameters, as in their recipe.
  config.ldifs.optimizer.warmup_steps = 100  # Linear warm-up steps.
  config.ldifs.optimizer.schedule = "cosine"  # Cosine decay after the warm-up.
  config.ldifs.optimizer.grad_clip_norm = 1.0  # Global-norm clip.


def _analyses(config: ml_collections.ConfigDict) -> None:
  """config.analyses: the paper's extra analyses in the report. None changes a result, so a rerun may switch them."""
  config.analyses = ml_collections.ConfigDict()
  # Cosine matrix of the head-weight changes, S then U, and its block means (head_geometry.py); nearly free.
  config.analyses.head_update_cosine = True
  # Mean GT / largest other-U / largest S logit of held-out U samples at each history record (logit_dynamics.py):
  # one forward over `logit_samples` U samples of the fine-tuning split per record, S-only runs only.
  config.analyses.logit_dynamics = True
  config.analyses.logit_samples = 512  # At most this many U samples (balanced over U) in the probe.
  # Per class, mean FT test feature - mean pre-trained one; cosine of each U class's movement with its nearest
  # S class's (feature_movement.py); cheap.
  config.analyses.feature_movement = True
  config.analyses.feature_tsne = False  # t-SNE of the pre-trained and FT test features (scikit-learn; slow).
  config.analyses.tsne_points = 2000  # t-SNE subsample of the test set (seeded, the same samples in both panels).
  config.analyses.tsne_perplexity = 30.0  # sklearn.manifold.TSNE's perplexity.


def _pcv() -> ml_collections.ConfigDict:
  """config.pcv: pseudo cross-validation (pcv.py)."""
  pcv = ml_collections.ConfigDict()
  pcv.enabled = True  # Run PCV's pseudo-split fine-tunes inside the job and report FT + PCV.
  pcv.num_splits = 3  # K pseudo-splits (the paper uses 3).
  pcv.holdout_fraction = 0.2  # Per-class share of the training split held out to build PCV's curves.
  pcv.seed = 17  # Pseudo-split k halves S with seed pcv.seed + k.
  return pcv


def _model() -> ml_collections.ConfigDict:
  """The backbone and its input normalisation."""
  model = ml_collections.ConfigDict()
  model.name = "ViT-B/32"  # models.list_models() name: ViT-*, ResNet-18/34/50/101, CLIP-ViT-B/32, B/16, L/14.
  model.dtype = "bfloat16"  # Compute dtype on TPU/GPU ('float32' on CPU); the head and losses stay float32.
  # The input normalisation the checkpoint expects: per-channel mean and std of [0, 1] images (one value for all
  # channels, or one per channel). (0.5,)/(0.5,) is the pipeline's [-1, 1] as it is (vit_jax's); ImageNet's for
  # torchvision ResNets, CLIP's for CLIP (recipes.INPUT_NORMALISATION).
  model.input_mean = (0.5,)
  model.input_std = (0.5,)
  model.text_embeddings = ""  # CLIP: a (C, E) .npy of class text embeddings: the zero-shot head ("" = none).
  # The classifier: 'linear' (the FC head W^T f + b) or 'cosine' (s * cos(w_c, f); models/vit.py:CosineHead, the
  # paper's cosine-classifier row). Both keep head/kernel (D, C) and head/bias (C,), so either loads the other's
  # checkpoint; the cosine head's bias is a fixed logit offset (0 at the start, never trained; the calibrated export
  # folds γ into it). Every method trains the head the same way.
  model.head = "linear"
  model.cosine_scale = 16.0  # s of the cosine head, fixed (not learned): logits lie in [-s, s] (plus the offset).
  return model


def get_config() -> ml_collections.ConfigDict:
  """The schema with the paper's recipe as defaults, unlocked: the caller overrides fields, then locks it."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds the class split, the init, batch order, augmentation, dropout and PCV's pseudo-splits.
  config.dataset = _dataset()

  config.class_split = ml_collections.ConfigDict()
  # 'random' (seeded), 'explicit' (lists seen/absent) or 'natural' (the dataset's own S and U: iWildCam's species
  # of the fine-tuning split, and those only in the test split; num_seen is then unused).
  config.class_split.kind = "random"
  # |S|: an int, or a float in (0, 1), a fraction of the dataset's classes (rounded). Every config sets it; its
  # type (int or float) is the one the config gives it.
  config.class_split.num_seen = None
  config.class_split.num_absent = ml_collections.config_dict.placeholder(int)  # |U|; None = all classes not in S.
  # kind='explicit' only; settable on the command line, e.g. --config.class_split.seen=0,1,2.
  config.class_split.seen = ()  # S, class ids.
  config.class_split.absent = ml_collections.config_dict.placeholder(tuple)  # U; None = every class not in S.
  config.class_split.remaining = ()  # Classes in neither S nor U (they take no part).
  config.class_split.seed = config.get_ref("seed")  # Follows config.seed.

  config.model = _model()
  # The pre-trained model: a vit_jax or ftcal_jax .npz, a torchvision/timm/transformers ResNet or an OpenAI/open_clip/
  # transformers CLIP state dict (models.load_pretrained); bare names are looked up in assets/; "" = random init.
  config.init_checkpoint = ""
  config.init_head = "keep"  # 'keep' the checkpoint's head (it must cover the dataset's classes), or 'new'.

  # Trained in this order; each checkpoints to workdir/<method>. 'finetune' is required by the report.
  config.methods = ("finetune", "oracle")

  _optimizers(config)
  config.num_epochs = 20.0  # Passes over each run's training data (PCV's smaller runs take fewer steps).
  config.num_steps = 0  # If > 0, overrides num_epochs with a fixed step count.
  config.batch_size = PAPER_BATCH  # Global batch over all devices of all hosts (must divide by the device count).
  config.eval_batch_size = 512  # Global eval batch (the last one is padded and masked).
  # True: the gradients are all-gathered and summed over devices in a fixed order (train_step.py), so that any
  # process x device layout with the same device count gives bit-identical results (a pod launch checked against
  # one machine); costs (devices - 1) x the gradient memory. No BatchNorm models, no LOLSGD.
  config.exact_reductions = False

  config.holistic_transfer = ml_collections.ConfigDict()
  config.holistic_transfer.distill_weight = 1.0  # lambda of the U-logit distillation (holistic_transfer.py).
  config.holistic_transfer.temperature = 2.0  # Softmax temperature T of the distillation.
  # 'holistic_transfer_lolsgd' only (lolsgd.py): each round, M copies take K local steps, each copy leaving out
  # round(f * |S|) random classes of S. The values are this implementation's choice, not the paper's.
  config.holistic_transfer.lolsgd_copies = 4  # M local copies per round (about M x FT's compute).
  config.holistic_transfer.lolsgd_local_steps = 4  # K local steps per copy; each takes batch_size / K examples.
  config.holistic_transfer.lolsgd_leave_out = 0.5  # f: the share of S each copy leaves out, in [0, 1).

  config.pcv = _pcv()

  _analyses(config)
  config.log_every_steps = 50  # Progress line, TensorBoard scalars and head-norm history.
  config.checkpoint_every_steps = 500  # Orbax saves (and always at the end of a run).
  config.write_figures = True  # report.md and figures/*.png besides report.json.
  config.heartbeat_s = 30.0  # Seconds between "still working" lines during long silent stages.
  config.pretrain_output = ""  # Only a source stage (method 'pretrain') writes a checkpoint, inside the workdir.
  # The deployable model: FT with this rule's γ folded into the head bias of U (export.py), written to
  # workdir/finetune_calibrated.npz (+ .json). 'ALG' (needs no extra runs), 'PCV' (needs pcv.enabled), or '' = none.
  config.export_calibration = "ALG"
  return config
