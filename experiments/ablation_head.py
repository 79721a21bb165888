r"""Ablation: the classifier head of fine-tuning, the FC (linear) head vs a cosine classifier, on Glyphs.

The paper's table compares an NN with an FC head and one with a cosine classifier (s * cos(w_c, f)). Both arms
here are the Glyphs demo's FT (configs/glyphs.py: its checkpoint, split, optimiser and epochs), FT only and no PCV
(the rows need neither); only config.model.head differs. The cosine arm starts from the same checkpoint: its
linear head's kernel becomes the class vectors w_c (its bias, a fixed offset there, starts at 0), so the pre-trained
row changes as well.

Arg: 'linear' or 'cosine' [,epochs=E] [,scale=S] [,runlocal]. As a script it runs both arms in one process and
prints and writes the two rows (AUSUC, Acc_y/y, Acc_s/y, Acc_u/y of FT and of the pre-trained model):

  python experiments/ablation_head.py --workdir workdirs/ablation_head                  # 10 epochs per arm
  python experiments/ablation_head.py --workdir /tmp/head --arg epochs=3                # a reduced budget
  python -m ftcal_jax.main --config experiments/ablation_head.py:cosine --workdir workdirs/ablation_head/cosine

Time: one arm is one Glyphs FT run plus its evaluation (about 30-60 s on 2 CPU cores at 10 epochs).
"""

import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
  sys.path.insert(0, _REPO)  # Run as a script: import this checkout's ftcal_jax, not an installed one.

from ftcal_jax import recipes  # pylint: disable=g-import-not-at-top,wrong-import-position

HEADS = ("linear", "cosine")
ROWS = ("pretrained", "finetune")
COLUMNS = ("acc_y/y", "acc_s/y", "acc_u/y")


def get_config(arg=None):
  """Arg: 'linear' or 'cosine', optionally ',epochs=E', ',scale=S', ',runlocal'."""
  args = recipes.parse_arg(arg, positional="head", config_name="experiments/ablation_head.py", head="linear",
                           epochs=10.0, scale=16.0, runlocal=False)
  if args["head"] not in HEADS:
    raise ValueError(f"Unknown head {args['head']!r}; valid: {', '.join(HEADS)}.")
  config = recipes.load_file(os.path.join(_REPO, "configs",
                                          "glyphs.py")).get_config("runlocal" if args["runlocal"] else None)
  config.unlock()
  config.model.head = args["head"]  # The arm: 'linear' (FC) or 'cosine' (s * cos).
  config.model.cosine_scale = args["scale"]  # s of the cosine arm (unused by the linear one).
  config.methods = ("finetune",)  # The table compares FT with each head.
  config.pcv.enabled = False  # AUSUC and the accuracies need no PCV.
  if not args["runlocal"]:
    config.num_epochs = args["epochs"]  # Passes over S's fine-tuning data (the demo's 10 by default).
  config.lock()
  return config


def rows(report):
  """{row: {'ausuc', acc_y/y, acc_s/y, acc_u/y}} of one arm's report.json dict."""
  return {r: {"ausuc": report["ausuc"][r], **{c: report["methods"][r]["top1"][c] for c in COLUMNS}} for r in ROWS}


def markdown(table, epochs) -> str:
  """The two heads' rows as a Markdown table; `table` is {head: rows(report)}."""
  lines = [
      f"FT with an FC vs a cosine head on Glyphs ({epochs:g} epochs), top-1 % on target_test.", "",
      "| head | model | AUSUC | Acc_y/y | Acc_s/y | Acc_u/y |", "|---|---|---|---|---|---|"
  ]
  for head, by_row in table.items():
    for r, v in by_row.items():
      lines.append(f"| {head} | {'FT' if r == 'finetune' else 'Pre-trained'} | {v['ausuc']:.3f} | " +
                   " | ".join(f"{v[c]:.1f}" for c in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  from ftcal_jax import train  # pylint: disable=g-import-not-at-top  (JAX loads only when run)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="Each arm runs in WORKDIR/<head>.")
  parser.add_argument("--arg", default="", help="Extra config arguments for both arms, e.g. 'epochs=3'.")
  args = parser.parse_args(argv)
  table = {}
  for head in HEADS:
    config = get_config(",".join(filter(None, [head, args.arg])))
    table[head] = rows(train.train_and_evaluate(config, os.path.join(args.workdir, head)))
  text = markdown(table, config.num_epochs)
  print(text)
  with open(os.path.join(args.workdir, "head_table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(args.workdir, "head_table.json"), "w") as f:
    json.dump(table, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
