"""The report sections of the paper's extra analyses, each selected by config.analyses (base_config.py).

  head_update_cosine  the cosine matrix of the head-weight changes, S then U, and its block means
                      (head_geometry.py; from the matrix each run's history holds);
  logit_dynamics      GT / largest other-U / largest S logit of held-out U samples over training
                      (logit_dynamics.py; from the curves each S-only run's history holds);
  feature_movement    per class, the movement of the mean test feature under FT, the cosine of each U class's
                      movement with its nearest S class's, and optionally a t-SNE (feature_movement.py; from the
                      pre-trained and FT test predictions).

report.build_report calls `report_sections`; analysis_render.py draws and writes them. Without config.analyses (a
report built by hand), the history-driven sections appear when the history holds their data, and the feature
movement (which needs no extra data) stays off.
"""

from typing import Any, Dict, Mapping, Optional

from ftcal_jax import feature_movement
from ftcal_jax import head_geometry
from ftcal_jax import logit_dynamics

# History keys that are one value per run, not a curve: the report's `history` (the curves) leaves them out.
NON_CURVE_KEYS = (head_geometry.MATRIX_KEY, head_geometry.BLOCKS_KEY)


def options(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """config['analyses'] as a dict, with the defaults of a report built without it."""
  given = dict((config or {}).get("analyses") or {})
  return {"head_update_cosine": True, "logit_dynamics": True, "feature_movement": False, "feature_tsne": False, **given}


def curves(history: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, list]]:
  """The report's `history`: each run's per-record curves as lists, without the NON_CURVE_KEYS."""
  return {k: {f: list(v) for f, v in h.items() if f not in NON_CURVE_KEYS} for k, h in history.items()}


def report_sections(*, test: Mapping[str, Any], history: Mapping[str, Mapping[str, Any]], class_split: Any,
                    config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """The analysis sections the config selects and the inputs allow.

  Args:
    test: model name -> evaluation.Predictions on the test split, over the WHOLE head (before any class mask:
      the split's class ids index it).
    history: model name -> its run history (training_dynamics.HeadHistory values plus the per-run records).
    class_split: the job's ClassSplit.
    config: the run config as a dict (its 'analyses' and 'seed' are read), or None.

  Returns:
    {'head_update_cosine', 'logit_dynamics', 'feature_movement'}, each only when selected and computable.
  """
  opts, out = options(config), {}
  if opts["head_update_cosine"]:
    sec = head_geometry.section(history, class_split)
    if sec:
      out["head_update_cosine"] = sec
  if opts["logit_dynamics"]:
    sec = logit_dynamics.summarize(history)
    if sec:
      out["logit_dynamics"] = sec
  if (opts["feature_movement"] or opts["feature_tsne"]) and {"pretrained", "finetune"} <= set(test):
    out["feature_movement"] = feature_movement.section(test["pretrained"], test["finetune"], class_split, opts,
                                                       seed=int((config or {}).get("seed", 0) or 0))
  return out
