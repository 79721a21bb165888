r"""The main demo: fine-tune the shipped Glyphs ViT on half the classes in the noisy-outline domain, calibrate.

The pre-trained ViT-glyphs/8 (ftcal_jax/assets/glyphs_vit8_pretrained.npz, rebuilt by
experiments/pretrain_glyphs.py) knows all 47 classes from filled printed fonts. It is fine-tuned on a random half S
of them in the target domain (every face, printed and handwriting, drawn as outlines under Gaussian pixel noise: a
style shift all classes share) and evaluated on all 47 there; the job also runs PCV and the baselines below, then
writes report.json, report.md, figures/ and the calibrated model to the workdir.

How the recipe was chosen: experiments/glyphs_recipe_screen.py scored candidates on target_val (10% of the target
images, disjoint from target_train and target_test), never on target_test. On the v1 target (clean handwriting
outlines) no recipe made NCM Acc_u/y rise: a faster backbone made it fall. The noisy-outline domain gave NCM gains of
+4 to +10 points on seeds 0-4, and a backbone at 0.3x the head's rate (instead of 0.1x) raised the weakest seeds
(3: +4.0 -> +6.2, 4: +4.7 -> +5.4) as much as 16 epochs did, at 10 epochs' cost. But with the FC head ALG's γ
recovered only 29-53% of γ*'s Acc_y/y gain there (on target_test too: 0.50 and 0.38 on seeds 0 and 1), and no
recipe tried (augmentation, 2x or 4x the images, fewer epochs, weight decay, a slower head, other mixes of faces)
lifted it above 0.51 on seeds 1 and 4. The cosine head, whose logits are bounded by s, did: 0.76-0.95 on seeds 0-4,
with every other finding holding. The README gives the screen's table.

Run (CPU, 2 cores; the README gives the measured time):

  python -m ftcal_jax.main --config configs/glyphs.py --workdir /tmp/ftcal_glyphs

Other seeds (the class split follows the seed): --config.seed=1. Every baseline (adds frozen classifier, LDIFS,
the Holistic Transfer variant and HT by leave-out local SGD, and the t-SNE of the feature picture):
--config=configs/glyphs.py:all. A quick smoke run: --config=configs/glyphs.py:runlocal.

The analyses (config.analyses) cost little: the logit dynamics' probe (on here) is one forward of 512 U samples per
history record of an S-only run. The :all run (every baseline and the t-SNE of 2 x 2,000 test features) took 400 s
on seed 0 with the dataset built, 25 s of it the report with the t-SNE.
"""

from ftcal_jax import base_config
from ftcal_jax import recipes


def get_config(arg=None):
  """Returns the demo config; arg: '[all][,runlocal]' ('runlocal' shortens every run)."""
  args = recipes.parse_arg(arg, config_name="configs/glyphs.py", all=False, runlocal=False)
  config = base_config.get_config()  # The paper's recipe; below, what this demo changes.

  config.dataset.name = "glyphs"  # Rendered offline (datasets/glyphs.py), held in memory.
  config.dataset.train_split = "target_train"  # Fine-tuning data (only its S classes are used, except Oracle).
  config.dataset.test_split = "target_test"  # Evaluation over all 47 classes.
  config.dataset.source_split = "source_train"  # Pre-training data (configs/glyphs_pretrain.py).
  config.dataset.source_test_split = "source_test"  # Held-out printed fonts.
  # {} = no training augmentation: the rendered images already vary in scale, rotation, shift, stroke and noise
  # (the dataset's default, None, is a mild crop + brightness/contrast jitter).
  config.dataset.augment = {}

  config.class_split.num_seen = 0.5  # Fraction of the 47 classes in S (rounded): 24 seen, 23 absent.

  config.model.name = "ViT-glyphs/8"  # models.MODEL_CONFIGS key (312k parameters, 17 tokens).
  config.model.dtype = "float32"  # CPUs have no fast bfloat16.
  # The cosine classifier s * cos(w_c, f) (s = 16; models/vit.py:CosineHead) on the shipped linear head's kernel:
  # with the FC head, ALG's γ fell short on this domain (chosen on target_val; see the docstring).
  config.model.head = "cosine"
  config.init_checkpoint = "glyphs_vit8_pretrained.npz"  # The shipped checkpoint, in ftcal_jax/assets/; its 47-class
  # head is kept (init_head).
  config.methods = ("finetune", "oracle", "linear_probe")

  config.optimizer.lr = 0.01  # Head learning rate (paper 1e-3 for ImageNet-scale ViTs; this tiny ViT needs more).
  config.optimizer.backbone_lr_mult = 0.3  # Backbone at 0.3x (paper 0.1x): chosen on target_val (docstring).

  # Passes over each run's training data (PCV's smaller runs take fewer steps). 16 raised the NCM gain on target_val
  # as much as the 0.3x backbone did; 10 keeps the main job well inside 5 minutes.
  config.num_epochs = 10.0
  config.batch_size = 128  # Global batch, split over every device of every host.
  config.eval_batch_size = 1024  # Global eval batch (the last one is padded and masked).

  config.ldifs.optimizer.lr = 1e-3  # Theirs is 1e-5 for CLIP ViT-B; this tiny ViT from printed fonts needs more.
  config.ldifs.optimizer.warmup_steps = 20  # Linear warm-up steps.

  config.log_every_steps = 25  # Progress line, TensorBoard scalars and head-norm history.
  config.checkpoint_every_steps = 100  # Orbax saves (and always at the end of a run).
  config.heartbeat_s = 10.0  # Seconds between "still working" lines during long silent stages.

  # Every baseline (frozen classifier, LDIFS, the HT variant, HT by LOLSGD: M=4 copies, so 4x FT): a few more minutes.
  if args["all"]:
    config.methods = ("finetune", "oracle", "linear_probe", "frozen_classifier", "ldifs", "holistic_transfer",
                      "holistic_transfer_lolsgd")
    config.analyses.feature_tsne = True  # t-SNE of 2,000 test features, pre-trained and FT (see the time above).
  if args["runlocal"]:
    config.num_epochs = 1.0
    config.pcv.num_splits = 1
    config.methods = ("finetune",)
  config.lock()
  return config
