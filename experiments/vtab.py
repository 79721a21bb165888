r"""VTAB tasks, the paper's table: fine-tune on a random half of a task's classes, evaluate on all of them.

Arg: the task, one of caltech101, dtd, oxford_flowers102 (TFDS builders of the same name), then ',vit' for the ViT
alternative and ',runlocal' for a CPU smoke run. Train on the TFDS 'train' split (caltech101 3,060, dtd 1,880,
oxford_flowers102 1,020 images), test on 'test' (6,084 / 1,880 / 6,149), with PCV, ALG, gamma* and the Oracle.

The pre-trained model must already know every class of the task, so its head cannot be a fresh one. The paper
follows Holistic Transfer and starts from a CLIP ViT-B/32 with its zero-shot text head: the classifier is CLIP's
logit scale times the normalised text embeddings of 'a photo of a {class}.', over the normalised image embedding.
Two files, both made once:
  checkpoints/clip-vit-base-patch32/model.safetensors   the transformers openai/clip-vit-base-patch32 weights (or
      OpenAI's ViT-B-32.pt, or open_clip's; docs/backbones.md), with its vocab.json and merges.txt;
  checkpoints/vtab_<task>_clip_b32_text.npy             the (C, 512) class text embeddings in TFDS label order:
      python experiments/clip_zero_shot_head.py --task <task> --data_dir $DATA \
          --checkpoint checkpoints/clip-vit-base-patch32/model.safetensors \
          --vocab checkpoints/clip-vit-base-patch32/vocab.json --merges checkpoints/clip-vit-base-patch32/merges.txt \
          --out checkpoints/vtab_<task>_clip_b32_text.npy
Inputs are normalised with CLIP's mean and std. The alternative ',vit' takes a vit_jax-format .npz whose head is
(768, num_classes) in the TFDS label order, at checkpoints/vtab_<task>_vit_b32.npz.

Data: `tfds build <task> --data_dir=$DATA` once on a machine with network (all three download automatically);
on a pod use a shared data_dir (gs://BUCKET/tfds). The job itself never downloads.

Run:

  python -m ftcal_jax.main --config experiments/vtab.py:dtd --workdir workdirs/vtab/dtd \
      --config.dataset.data_dir=$DATA
  # CPU smoke run: --config experiments/vtab.py:dtd,runlocal

Hardware, batch and time (estimates from image counts, not measured): global batch 64; 20 epochs of at most
~1.5k S images; every task finishes in a few minutes on one TPU v3-8 or one GPU, dominated by compilation and
evaluation of the test split.
"""

from ftcal_jax import recipes as pr

TASKS = ("caltech101", "dtd", "oxford_flowers102")


def get_config(arg=None):
  """Arg: 'TASK[,vit][,runlocal]', e.g. 'dtd' or 'caltech101,runlocal'."""
  args = pr.parse_arg(arg, positional="task", task="dtd", vit=False, runlocal=False)
  if args["task"] not in TASKS:
    raise ValueError(f"Unknown VTAB task {args['task']!r}; valid tasks: {', '.join(TASKS)}.")
  config = pr.recipe(
      dataset=dict(name=args["task"]),
      num_seen=0.5,  # Half of the task's classes (rounded); the rest are absent.
      weight_decay=5e-4,
      num_epochs=20,  # Office-Home's recipe: VTAB's train sets are as small.
      model="ViT-B/32" if args["vit"] else "CLIP-ViT-B/32",
      init_checkpoint=(f"checkpoints/vtab_{args['task']}_vit_b32.npz"
                       if args["vit"] else "checkpoints/clip-vit-base-patch32/model.safetensors"),
      init_head="keep")
  if not args["vit"]:
    config.model.text_embeddings = f"checkpoints/vtab_{args['task']}_clip_b32_text.npy"  # the zero-shot head
  return pr.finish(config, args["runlocal"])
