r"""ImageNet-R, the paper's table: 100 fine-tuning / 100 absent classes of its 200, on an ImageNet-1k head.

The pre-trained model is an ImageNet-1k classifier (its head already covers all 200 ImageNet-R classes), fine-tuned
on 100 random ImageNet-R classes and evaluated on all 200 (24,076 train / 5,924 test, carved per class with a
seeded 80/20 split of TFDS's one split), with PCV, ALG, gamma* and the Oracle.

Arg: '[keep][,vit][,runlocal]'. The head has 1000 classes: by default ('mask') the 800 that ImageNet-R lacks are masked
out of every argmax (the paper's label space Y); 'keep' scores all 1000, as the official code does. The report
records which was in force.

Data: `tfds build imagenet_r --data_dir=$DATA` once on a machine with network (TFDS fetches the tar from the
authors' site), or place imagenet-r.tar in $DATA/downloads/manual; on a pod use a shared data_dir
(gs://BUCKET/tfds) and pass --config.dataset.data_dir. The job itself never downloads.

Backbone: the paper's ImageNet-1k ResNet-50 with its 1000-class head kept, as the official code: torchvision's
resnet50-0676ba61.pth (IMAGENET1K_V1, what `resnet50(pretrained=True)` loads; any torchvision/timm/transformers
ResNet-50 state dict works, docs/backbones.md), copied to checkpoints/resnet50-0676ba61.pth. Inputs are normalised
with ImageNet's mean and std. The alternative ',vit' uses an ImageNet-1k ViT-B/32 in vit_jax format, e.g.
gs://vit_models/augreg/ (B_32 ... imagenet2012 ... res_224) or imagenet21k+imagenet2012_ViT-B_32.npz, copied to
checkpoints/ViT-B_32_imagenet1k.npz.

Run:

  python -m ftcal_jax.main --config experiments/imagenet_r.py --workdir workdirs/imagenet_r \
      --config.dataset.data_dir=$DATA
  # CPU smoke run: --config experiments/imagenet_r.py:runlocal

Hardware, batch and time (estimates from image counts, not measured): global batch 64 (the paper's); 50 epochs of
~12k S images = 0.6M images for FT, 1.2M for the Oracle and ~0.7M for PCV's 3 half-size runs: ~2.5M training
images, about 25-35 minutes on a TPU v3-8 or an 8-GPU host at ~2k img/s (bfloat16). One host suffices.
"""

from ftcal_jax import recipes as pr


def get_config(arg=None):
  """Arg: '[keep][,vit][,runlocal]' (head_classes='keep' instead of 'mask'; the ViT-B/32; CPU smoke run)."""
  args = pr.parse_arg(arg, keep=False, vit=False, runlocal=False)
  config = pr.recipe(
      # head_classes: 'mask' the 800 head classes ImageNet-R lacks out of every argmax, or 'keep' all 1000.
      dataset=dict(name="imagenet_r", head_classes="keep" if args["keep"] else "mask"),
      num_seen=100,
      num_absent=100,
      weight_decay=1e-4,
      num_epochs=50,
      model="ViT-B/32" if args["vit"] else "ResNet-50",
      init_checkpoint="checkpoints/ViT-B_32_imagenet1k.npz" if args["vit"] else "checkpoints/resnet50-0676ba61.pth",
      init_head="keep")
  return pr.finish(config, args["runlocal"])
