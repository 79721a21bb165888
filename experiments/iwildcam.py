r"""iWildCam (WILDS v2.0): fine-tune on the species of the training cameras, evaluate on the OOD test cameras.

The class split is the data's own (class_split.kind = 'natural', datasets/iwildcam.py): S = the species present
in the fine-tuning split (WILDS 'train'), U = the species that appear only in the test split (WILDS 'test');
species in neither take no part. Evaluation is over the test split (S and U images). Arg: ',runlocal' for a CPU
smoke run.

Data: WILDS iWildCam v2.0 (`iwildcam_v2.0.tar.gz`, ~11 GB, or the extracted `iwildcam_v2.0/` folder) in
`manual_dir`; the first run converts it to TFDS records in data_dir (nothing is downloaded). Reading the .tar.gz
takes one sequential pass per split; extracting it first is faster.

The pre-trained model must already know every species, so its head cannot be a fresh one: give a vit_jax .npz
whose head is (768, 182) in WILDS's label order (y), at checkpoints/iwildcam_vit_b32.npz or with
--config.init_checkpoint (ftcal_jax does not build it; e.g. a ViT-B/32 trained on another camera set, or CLIP's
zero-shot head as Holistic Transfer does).

Run:

  python -m ftcal_jax.main --config experiments/iwildcam.py --workdir workdirs/iwildcam \
      --config.dataset.manual_dir=$WILDS --config.dataset.data_dir=$DATA

Hardware, batch and time (estimates from image counts, not measured): global batch 64, ~130k training images x
20 epochs, about 1.5-2 hours on a TPU v3-8 or an 8-GPU host.
"""

from ftcal_jax import recipes as pr


def get_config(arg=None):
  """Arg: '[runlocal]'."""
  args = pr.parse_arg(arg, config_name="experiments/iwildcam.py", runlocal=False)
  config = pr.recipe(
      dataset=dict(name="iwildcam", manual_dir="wilds"),  # Where iwildcam_v2.0[.tar.gz] lies.
      num_seen=None,  # Unused: the natural split below defines S and U.
      weight_decay=5e-4,  # Office-Home's recipe.
      num_epochs=20,
      init_checkpoint="checkpoints/iwildcam_vit_b32.npz",
      init_head="keep")
  config.class_split.kind = "natural"  # S = species of 'train', U = species only in 'test'.
  config.dataset.train_split = "train"  # WILDS's training cameras.
  config.dataset.test_split = "test"  # WILDS's OOD test cameras.
  return pr.finish(config, args["runlocal"])
