"""Checks every number of a job config before any data or model is built.

`validate_config(config)` raises one ValueError that lists every problem, each naming the field, its value and
the valid range, e.g. `optimizer.lr = -0.01: must be > 0`. Without it, `num_epochs=-1` trained one step and
reported findings, `batch_size=0` raised ZeroDivisionError, and |S| = 1 failed only after all training, in ALG.

The class-split checks need the number of classes S is drawn from (a fraction of them, or |S| < that number):
call it once with `num_classes=None` at the start of the job, then again with the dataset's class count once it
is known, still before training. Fields a config lacks are skipped (the schema is that of configs/glyphs.py and
ftcal_jax/recipes.py).
"""

import numbers
from typing import Any, List, Optional, Sequence

from ftcal_jax import methods as methods_lib
from ftcal_jax import optimizers

_MISSING = object()


def _get(config: Any, field: str) -> Any:
  node = config
  for part in field.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return _MISSING
  return node


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


class _Checks:
  """Collects the problems of one config."""

  def __init__(self, config):
    self.config = config
    self.errors: List[str] = []

  def error(self, field: str, value: Any, rule: str) -> None:
    self.errors.append(f"{field} = {value!r}: {rule}")

  def integer(self, field: str, lo: int) -> None:
    v = _get(self.config, field)
    if v is not _MISSING and not (_is_int(v) and v >= lo):
      self.error(field, v, f"must be an integer >= {lo}")

  def real(self, field: str, lo: float, *, strict: bool, hi: Optional[float] = None, hi_strict: bool = True) -> None:
    """lo < v (strict) or lo <= v; and v < hi (hi_strict) or v <= hi when hi is given."""
    v = _get(self.config, field)
    if v is _MISSING:
      return
    ok = _is_real(v) and (v > lo if strict else v >= lo)
    if hi is not None:
      ok = ok and (v < hi if hi_strict else v <= hi)
    if not ok:
      left, right = ("(" if strict else "["), (")" if hi_strict else "]")
      rng = f"in {left}{lo:g}, {hi:g}{right}" if hi is not None else f"{'>' if strict else '>='} {lo:g}"
      self.error(field, v, f"must be a number {rng}")

  def one_of(self, field: str, options: Sequence[Any]) -> None:
    v = _get(self.config, field)
    if v is not _MISSING and v not in options:
      self.error(field, v, f"must be one of {', '.join(repr(o) for o in options)}")


def _optimizer(checks: _Checks, prefix: str) -> None:
  checks.real(f"{prefix}.lr", 0.0, strict=True)
  checks.real(f"{prefix}.momentum", 0.0, strict=False, hi=1.0)
  checks.real(f"{prefix}.weight_decay", 0.0, strict=False)
  checks.real(f"{prefix}.backbone_lr_mult", 0.0, strict=False)
  checks.integer(f"{prefix}.warmup_steps", 0)
  checks.one_of(f"{prefix}.schedule", ("cosine", "constant"))
  checks.real(f"{prefix}.grad_clip_norm", 0.0, strict=False)
  cfg = _get(checks.config, prefix)
  if cfg is not _MISSING and _get(checks.config, f"{prefix}.name") is not _MISSING:
    try:  # The optimiser module owns its list of names; building one (no parameters needed) checks it.
      optimizers.make_optimizer(cfg, {"head": "head"})
    except ValueError as e:
      checks.error(f"{prefix}.name", cfg.name, str(e))
    except Exception:  # pylint: disable=broad-except  # A bad number the checks above already name.
      pass


def seen_count(num_seen: Any, num_candidates: Optional[int]) -> Optional[int]:
  """|S| from class_split.num_seen: an integer count, an integral float >= 1 (a command-line '24' arrives as 24.0
  when the default is a fraction), or a fraction in (0, 1) of `num_candidates` (rounded); None when unknown."""
  if _is_int(num_seen):
    return int(num_seen)
  if _is_real(num_seen) and num_seen >= 1 and float(num_seen).is_integer():
    return int(num_seen)
  if _is_real(num_seen) and 0 < num_seen < 1 and num_candidates is not None:
    return int(round(num_seen * num_candidates))
  return None


def _class_split(checks: _Checks, num_classes: Optional[int]) -> None:
  cfg = _get(checks.config, "class_split")
  if cfg is _MISSING or tuple(_get(checks.config, "methods") or ()) == ("pretrain",):
    return  # Pre-training uses every class: no split.
  kind = _get(checks.config, "class_split.kind")
  checks.one_of("class_split.kind", ("random", "explicit", "natural"))  # natural: the dataset gives S
  count = None
  if kind == "random":
    v = _get(checks.config, "class_split.num_seen")
    count = seen_count(v, num_classes)
    if not (_is_real(v) and (0 < v < 1 or seen_count(v, None) is not None)):
      checks.error("class_split.num_seen", v, "must be a count (an integer >= 1) or a fraction in (0, 1)")
      count = None
    absent = _get(checks.config, "class_split.num_absent")
    if absent not in (None, _MISSING) and not (_is_int(absent) and absent >= 1):
      checks.error("class_split.num_absent", absent, "must be None (every class not in S) or an integer >= 1")
  elif kind == "explicit":
    seen = _get(checks.config, "class_split.seen")
    if seen in (None, _MISSING) or isinstance(seen, (str, bytes)) or not all(_is_int(c) for c in seen) or not seen:
      checks.error("class_split.seen", None if seen is _MISSING else seen, "must be a non-empty list of class ids")
    else:
      count = len(set(seen))
  if count is None:
    return
  if num_classes is not None and not 1 <= count <= num_classes - 1:
    checks.error("class_split.num_seen", _get(checks.config, "class_split.num_seen"),
                 f"gives |S| = {count}; must be in [1, {num_classes - 1}] for {num_classes} classes")
  names = _get(checks.config, "methods")
  calibrated = [
      n for n in (() if names is _MISSING else names)
      if n in methods_lib.list_methods() and methods_lib.get_method(n).calibrated
  ]
  needs = (["ALG (methods " + ", ".join(calibrated) + ")"] if calibrated else [])
  if _get(checks.config, "pcv.enabled") is True:
    needs.append("PCV (pcv.enabled)")
  if count < 2 and needs:
    field = "class_split.seen" if kind == "explicit" else "class_split.num_seen"
    checks.error(field, _get(checks.config, field),
                 f"gives |S| = {count}; {' and '.join(needs)} need |S| >= 2: use more seen classes, or drop them")


def validate_config(config: Any, *, num_classes: Optional[int] = None) -> None:
  """Raises ValueError listing every invalid field of `config` (field, value, valid range).

  Args:
    config: a job config (ConfigDict or nested dict) in the schema of configs/glyphs.py.
    num_classes: the number of classes the class split draws from (the dataset's, or its present classes); None
      skips the checks that need it.
  """
  c = _Checks(config)
  c.integer("num_steps", 0)
  c.real("num_epochs", 0.0, strict=False)
  steps, epochs = _get(config, "num_steps"), _get(config, "num_epochs")
  if _is_int(steps) and _is_real(epochs) and steps == 0 and epochs == 0:
    c.error("num_steps", steps, f"and num_epochs = {epochs!r}: set one of them > 0")
  for field in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
    c.integer(field, 1)
  _optimizer(c, "optimizer")
  _optimizer(c, "ldifs.optimizer")
  c.real("ldifs.alpha", 0.0, strict=False)
  c.one_of("ldifs.normalisation", ("channel", "token"))
  c.real("holistic_transfer.distill_weight", 0.0, strict=False)
  c.real("holistic_transfer.temperature", 0.0, strict=True)
  c.real("pcv.holdout_fraction", 0.0, strict=True, hi=1.0)
  if _get(config, "pcv.enabled") is True:
    c.integer("pcv.num_splits", 1)
  c.real("heartbeat_s", 0.0, strict=True)
  c.one_of("model.dtype", ("float32", "bfloat16", "float16"))
  head = _get(config, "init_head")
  if head is not _MISSING and head not in ("keep", "new") and (isinstance(head, str) or
                                                               not all(_is_int(i) for i in head)):
    c.error("init_head", head, "must be 'keep', 'new' or a list of class indices")
  names = _get(config, "methods")
  if names is not _MISSING and not names:
    c.error("methods", names, "must name at least one method")
  _class_split(c, num_classes)
  if c.errors:
    raise ValueError("Invalid config (nothing was built or trained):\n  " + "\n  ".join(c.errors))
