r"""Office-Home, the paper's main table: 6 source -> target pairs, 30 fine-tuning / 35 absent classes of 65.

Protocol (paper.md): the paper's ImageNet-1k ResNet-50 (or, with ',vit', an ImageNet-21k ViT-B/32) is first trained
on all 65 classes of the source domain (Art or Real World): the "source stage", which yields the pre-trained model.
That model is then fine-tuned on 30 random classes of the target domain and evaluated on all 65 there (7:3 per-class
train/test split, seeded), with PCV, ALG and gamma*, the Oracle (S and U), LDIFS and the Holistic Transfer variant.
Arg: the pair, one of Ar-Cl, Ar-Pr, Ar-Rw, Rw-Ar, Rw-Cl, Rw-Pr; add ',source' for the source stage, ',vit' for the
ViT-B/32 alternative and ',runlocal' for a CPU smoke run.

Data: nothing is downloaded. Put the official OfficeHomeDataset_10072016.zip
(https://www.hemanthdv.org/officeHomeDataset.html) in a manual dir; the first job prepares the TFDS builder
office_home/<domain> from it into data_dir (ftcal_jax/datasets/office_home.py). On a pod, prepare once on one host
(run the source stage with one process, or `b.download_and_prepare(...)` as in that module's docstring) into a
shared data_dir, e.g. gs://BUCKET/tfds, and pass the same data_dir to every host.

Upstream checkpoint: torchvision's ImageNet-1k ResNet-50, resnet50-0676ba61.pth (IMAGENET1K_V1; any torchvision/
timm/transformers ResNet-50 state dict works, docs/backbones.md), copied to checkpoints/resnet50-0676ba61.pth; its
1000-class head is replaced by a fresh 65-class one, and inputs are normalised with ImageNet's mean and std. With
',vit': vit_jax's ImageNet-21k ViT-B/32 (gs://vit_models/imagenet21k/ViT-B_32.npz), copied to
checkpoints/ViT-B_32.npz. Either can be given with --config.init_checkpoint.

Run (from the repo root; each stage resumes when rerun):

  python -m ftcal_jax.main --config experiments/office_home.py:Ar-Cl,source \
      --workdir workdirs/office_home/source_Ar --config.dataset.manual_dir=$MANUAL
  python -m ftcal_jax.main --config experiments/office_home.py:Ar-Cl --workdir workdirs/office_home/Ar-Cl \
      --config.dataset.manual_dir=$MANUAL

The target stage reads workdirs/office_home/source_<Ar|Rw>/office_home_<domain>_<resnet50|vit_b32>.npz by default
(--config.init_checkpoint to change); the ResNet's file holds its BatchNorm statistics too. CPU smoke run: --config
experiments/office_home.py:Ar-Cl,runlocal.

Hardware, batch and time (estimates from image counts, not measured): global batch 64 (the paper's), which divides
over up to 64 devices; bfloat16. Target train sets hold about 1.0k-1.4k images of the 30 classes (Clipart 4,365,
Product 4,439, Real World 4,357, Art 2,427 images in all), so 20 epochs are ~28k images per method; with the source
stage, PCV's 3 runs and the 4 methods a pair needs ~0.5M training images: about 5-10 minutes on a TPU v3-8 or one
8-GPU host at ~2k img/s, dominated by compilation and tf.data start-up. One host is enough; a larger slice does not
help at batch 64.
"""

import os

from ftcal_jax import recipes as pr

_PAIRS = {
    "Ar-Cl": ("Art", "Clipart"), "Ar-Pr": ("Art", "Product"), "Ar-Rw": ("Art", "Real_World"),
    "Rw-Ar": ("Real_World", "Art"), "Rw-Cl": ("Real_World", "Clipart"), "Rw-Pr": ("Real_World", "Product")
}
PAIRS = tuple(_PAIRS)
_SHORT = {"Art": "Ar", "Real_World": "Rw"}


def source_checkpoint(source_domain: str, vit: bool = False) -> str:
  """Where the source stage of `source_domain` writes its model (relative to the repo root)."""
  return (f"workdirs/office_home/source_{_SHORT[source_domain]}/"
          f"office_home_{source_domain}_{'vit_b32' if vit else 'resnet50'}.npz")


def get_config(arg=None):
  """Arg: 'PAIR[,source][,vit][,runlocal]', e.g. 'Ar-Cl' or 'Rw-Pr,runlocal'."""
  args = pr.parse_arg(arg, positional="pair", pair="Ar-Cl", source=False, vit=False, runlocal=False)
  if args["pair"] not in _PAIRS:
    raise ValueError(f"Unknown Office-Home pair {args['pair']!r}; valid pairs: {', '.join(PAIRS)}.")
  source, target = _PAIRS[args["pair"]]
  config = pr.recipe(
      # domain: the builder config office_home/<domain> this job reads (the target; the source in the source stage).
      dataset=dict(name="office_home", domain=source if args["source"] else target),
      num_seen=30,
      num_absent=35,
      weight_decay=5e-4,
      num_epochs=20,
      model="ViT-B/32" if args["vit"] else "ResNet-50",
      init_checkpoint=source_checkpoint(source, args["vit"]),
      init_head="keep",
      methods=("finetune", "oracle", "ldifs", "holistic_transfer"))
  if args["source"]:
    upstream = "checkpoints/ViT-B_32.npz" if args["vit"] else "checkpoints/resnet50-0676ba61.pth"
    pr.source_stage(config, init_checkpoint=upstream, output=os.path.basename(source_checkpoint(source, args["vit"])))
  return pr.finish(config, args["runlocal"])
