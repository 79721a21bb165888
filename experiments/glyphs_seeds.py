r"""The Glyphs demo over several seeds, and the mean ± std table of its report.json metrics.

Each seed is the README's main command with --config.seed=S (the class split, init, batch order and PCV follow
it) in its own process and workdir, so a rerun resumes or reuses finished seeds. The table goes to stdout and to
WORKDIR/seeds_table.md, the numbers to WORKDIR/seeds_summary.json.

  python experiments/glyphs_seeds.py --workdir workdirs/glyphs_seeds            # seeds 0-4, ~15 min on 2 cores
  python experiments/glyphs_seeds.py --workdir /tmp/s --config configs/glyphs.py:runlocal --seeds 0,1   # quick
  python experiments/glyphs_seeds.py --workdir workdirs/glyphs_seeds --table_only   # re-tabulate finished seeds

std is the sample standard deviation over seeds (ddof=1); with one seed it is 0.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCS = ("acc_y/y", "acc_s/y", "acc_u/y", "acc_s/s", "acc_u/u")


def run_seed(config: str, seed: int, workdir: str) -> None:
  """Runs (or resumes) the demo for one seed through the command line; raises if it fails."""
  cmd = [sys.executable, "-m", "ftcal_jax.main", f"--config={config}", f"--config.seed={seed}", f"--workdir={workdir}"]
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)


def _mean_std(values: Sequence[Any]) -> Dict[str, Any]:
  """Mean and sample std over the seeds that have a value (None = missing, e.g. PCV found no γ)."""
  x = np.asarray([v for v in values if v is not None], np.float64)
  mean = float(np.mean(x)) if x.size else float("nan")
  std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
  return {"mean": mean, "std": std, "n": int(x.size), "values": list(values)}


def summarize(reports: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
  """Mean and std over seeds of the methods' top-1 accuracies, AUSUC, NCM accuracies, γ's and findings.

  Args:
    reports: report.json dicts, one per seed (report.build_report's layout).

  Returns:
    {'seeds', 'methods': {row: {'name', acc: {mean, std, n, values}}}, 'ausuc', 'ncm', 'gammas', 'findings'}.
    A row or value missing from some seeds is summarised over the seeds that have it.
  """
  rows: List[str] = []
  for r in reports:
    rows += [k for k in r["methods"] if k not in rows]
  out: Dict[str, Any] = {
      "seeds": [r["config"].get("seed") for r in reports], "methods": {}, "ausuc": {}, "ncm": {}, "gammas": {},
      "findings": {}
  }
  for row in rows:
    have = [r["methods"][row] for r in reports if row in r["methods"]]
    out["methods"][row] = {"name": have[0]["name"], **{a: _mean_std([h["top1"][a] for h in have]) for a in ACCS}}
  for key in rows:
    vals = [r["ausuc"][key] for r in reports if key in r.get("ausuc", {})]
    if vals:
      out["ausuc"][key] = _mean_std(vals)
  for model in ("pretrained", "finetune"):
    have = [r["ncm"][model] for r in reports if model in r.get("ncm", {})]
    if have:
      out["ncm"][model] = {a: _mean_std([h[a] for h in have]) for a in ("acc_y/y", "acc_s/y", "acc_u/y")}
  gam = {
      "ALG": [r["gammas"]["alg"].get("finetune") for r in reports],
      "PCV": [(r["gammas"].get("pcv") or {}).get("gamma") for r in reports],
      "gamma*": [r["gammas"]["oracle"]["finetune"]["gamma"] for r in reports]
  }
  out["gammas"] = {k: _mean_std(v) for k, v in gam.items() if any(x is not None for x in v)}
  for r in reports:
    for f in r.get("findings", []):
      row = out["findings"].setdefault(f["claim"], {"holds": 0, "fails": 0, "unchecked": 0, "per_seed": []})
      row[{True: "holds", False: "fails", None: "unchecked"}[f["holds"]]] += 1
      row["per_seed"].append({
          "seed": r["config"].get("seed"), "estimate": f.get("estimate"), "interval": f.get("interval"),
          "holds": f["holds"], "unit": f.get("unit", "")
      })
  for row in out["findings"].values():
    row["estimate"] = _mean_std([p["estimate"] for p in row["per_seed"]])
  return out


def _fmt(s: Mapping[str, Any], scale: float = 1.0, digits: int = 1) -> str:
  if s is None or math.isnan(s["mean"]):
    return "–"
  text = f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
  return text if s["n"] == len(s["values"]) else f"{text} (n={s['n']})"


def markdown(summary: Mapping[str, Any]) -> str:
  """The summary as Markdown tables (accuracies in %, AUSUC in [0, 1])."""
  n = len(summary["seeds"])
  lines = [
      f"Glyphs demo, {n} seed(s) {summary['seeds']}: mean ± std (ddof=1) of top-1 accuracy (%) on target_test.", "",
      "| method | Acc_y/y | Acc_s/y | Acc_u/y | Acc_s/s | Acc_u/u | AUSUC |", "|---|---|---|---|---|---|---|"
  ]
  for row, s in summary["methods"].items():
    ausuc = _fmt(summary["ausuc"].get(row), digits=3) if row in summary["ausuc"] else ""
    lines.append(f"| {s['name']} | " + " | ".join(_fmt(s[a]) for a in ACCS) + f" | {ausuc} |")
  if summary["ncm"]:
    lines += [
        "", "NCM (diagnostic: class means from the target training data of all classes):", "",
        "| features | Acc_y/y | Acc_s/y | Acc_u/y |", "|---|---|---|---|"
    ]
    for model, s in summary["ncm"].items():
      lines.append(f"| {model} | " + " | ".join(_fmt(s[a]) for a in ("acc_y/y", "acc_s/y", "acc_u/y")) + " |")
  if summary["gammas"]:
    lines += ["", "γ applied to FT: " + ", ".join(f"{k} {_fmt(v, digits=2)}" for k, v in summary["gammas"].items())]
  if summary["findings"]:
    seeds = summary["seeds"]
    lines += [
        "", "Each finding's margin per seed with its paired-bootstrap 95% interval (findings.py); ✓ = the interval "
        "excludes the threshold in the claimed direction.", "",
        "| finding | holds | margin, mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|---|" + "---|" * len(seeds)
    ]
    for claim, t in summary["findings"].items():
      by_seed = {p["seed"]: p for p in t["per_seed"]}
      digits = 3 if any(p["unit"] == "AUSUC" for p in t["per_seed"]) else 2
      cells = [_finding_cell(by_seed.get(s), digits) for s in seeds]
      lines.append(f"| {claim} | {t['holds']}/{n} | {_fmt(t['estimate'], digits=digits)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _finding_cell(p: Any, digits: int) -> str:
  """'+7.32 [+4.23, +9.84] ✓' for one seed's finding ('–' when not evaluated)."""
  if p is None or p["estimate"] is None or p["interval"] is None:
    return "–"
  lo, hi = p["interval"]
  mark = {True: "✓", False: "✗", None: "?"}[p["holds"]]
  return f"{p['estimate']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] {mark}"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="Parent directory; seed S runs in WORKDIR/seed_S.")
  parser.add_argument("--config", default="configs/glyphs.py", help="Config (path[:arg]) relative to the repo.")
  parser.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated seeds.")
  parser.add_argument("--table_only", action="store_true", help="Only tabulate seeds whose report.json exists.")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  workdir = os.path.abspath(args.workdir)
  reports = []
  for seed in seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    if not args.table_only:
      run_seed(args.config, seed, seed_dir)
    path = os.path.join(seed_dir, "report.json")
    if not os.path.exists(path):
      if args.table_only:
        continue
      raise FileNotFoundError(f"{path} missing after the run of seed {seed}.")
    with open(path) as f:
      reports.append(json.load(f))
  if not reports:
    raise SystemExit(f"No report.json under {workdir}/seed_*; run without --table_only first.")
  summary = summarize(reports)
  table = markdown(summary)
  print(table)
  with open(os.path.join(workdir, "seeds_table.md"), "w") as f:
    f.write(table)
  with open(os.path.join(workdir, "seeds_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
