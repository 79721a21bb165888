r"""Writes CLIP zero-shot class text embeddings, (C, E) float32 .npy, for `load_pretrained(text_embeddings=...)`.

The VTAB configs start from CLIP ViT-B/32 with its zero-shot head: the normalised text embeddings of one prompt
per class, times CLIP's logit scale. This script runs the prompts through the checkpoint's text tower once and
saves the embeddings beside the checkpoint, so that the training job needs neither the tokenizer nor the text tower.
Class names come from the TFDS builder's label names (in label order; '_' becomes ' ') or from a text file, one
per line.

  python experiments/clip_zero_shot_head.py --checkpoint checkpoints/clip-vit-base-patch32/model.safetensors \
      --vocab checkpoints/clip-vit-base-patch32/vocab.json --merges checkpoints/clip-vit-base-patch32/merges.txt \
      --task dtd --data_dir $DATA --out checkpoints/vtab_dtd_clip_b32_text.npy
"""

import argparse

import numpy as np

from ftcal_jax.models import clip_weights
from ftcal_jax.models import load


def class_names(task: str, data_dir: str, names_file: str):
  if names_file:
    with open(names_file, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = tfds.builder(task, data_dir=data_dir or None).info.features["label"].names
  return [n.replace("_", " ") for n in names]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="a full CLIP checkpoint (OpenAI, open_clip or transformers)")
  p.add_argument("--model", default="CLIP-ViT-B/32")
  p.add_argument("--vocab", required=True, help="CLIP's vocab.json")
  p.add_argument("--merges", required=True, help="CLIP's merges.txt")
  p.add_argument("--task", default="", help="TFDS builder whose label names are the classes")
  p.add_argument("--data_dir", default="")
  p.add_argument("--classnames_file", default="", help="instead of --task: one class name per line")
  p.add_argument("--template", action="append", help="prompt template(s); default 'a photo of a {}.'")
  p.add_argument("--out", required=True)
  args = p.parse_args()
  if not (args.task or args.classnames_file):
    p.error("give --task or --classnames_file")
  names = class_names(args.task, args.data_dir, args.classnames_file)
  loaded = clip_weights.load_clip_state_dict(args.checkpoint)
  emb = load.clip_class_embeddings(args.model, loaded, names, args.vocab, args.merges,
                                   tuple(args.template or ("a photo of a {}.",)))
  np.save(args.out, emb)
  print(f"wrote {args.out}: {emb.shape[0]} classes x {emb.shape[1]} dims, e.g. {names[:3]}")


if __name__ == "__main__":
  main()
