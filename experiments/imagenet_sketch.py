r"""ImageNet-Sketch, the paper's table: 500 fine-tuning / 500 absent classes of 1000, on an ImageNet-1k head.

The pre-trained ImageNet-1k classifier is fine-tuned on 500 random classes of ImageNet-Sketch and evaluated on all
1000 (40,889 train / 10,000 test: 10 test images per class carved with a seed from TFDS's one split), with PCV,
ALG, gamma* and the Oracle.

Data: `tfds build imagenet_sketch --data_dir=$DATA` once on a machine with network (TFDS fetches the archive from
Google Drive; if that fails, put ImageNet-Sketch.zip in $DATA/downloads/manual); on a pod use a shared data_dir
(gs://BUCKET/tfds). The job itself never downloads.

Backbone: the paper's ImageNet-1k ResNet-50 with its 1000-class head, checkpoints/resnet50-0676ba61.pth (see
imagenet_r.py); ',vit' for the alternative ImageNet-1k ViT-B/32, checkpoints/ViT-B_32_imagenet1k.npz.

Run:

  python -m ftcal_jax.main --config experiments/imagenet_sketch.py --workdir workdirs/imagenet_sketch \
      --config.dataset.data_dir=$DATA
  # CPU smoke run: --config experiments/imagenet_sketch.py:runlocal

Hardware, batch and time (estimates from image counts, not measured): global batch 64; 50 epochs of ~20k S images
= 1.0M images for FT, 2.0M for the Oracle and ~1.2M for PCV: ~4.2M training images, about 40-60 minutes on a TPU
v3-8 or an 8-GPU host at ~2k img/s (bfloat16). Sketch JPEGs are large: give tf.data several CPU cores per host.
"""

from ftcal_jax import recipes as pr


def get_config(arg=None):
  """Arg: '[vit][,runlocal]'."""
  args = pr.parse_arg(arg, vit=False, runlocal=False)
  config = pr.recipe(
      # head_classes: Sketch covers all 1000 head classes, so 'mask' and 'keep' agree.
      dataset=dict(name="imagenet_sketch", head_classes="mask"),
      num_seen=500,
      num_absent=500,
      weight_decay=1e-4,
      num_epochs=50,
      model="ViT-B/32" if args["vit"] else "ResNet-50",
      init_checkpoint="checkpoints/ViT-B_32_imagenet1k.npz" if args["vit"] else "checkpoints/resnet50-0676ba61.pth",
      init_head="keep")
  return pr.finish(config, args["runlocal"])
