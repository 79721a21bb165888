"""Class splits: which classes fine-tuning sees (S), which are absent (U), and which play no part.

The paper fine-tunes on the classes S of a label space Y and evaluates on all of Y; U = Y \\ S are the absent
classes. Pseudo cross-validation (PCV) re-splits S itself: half of S (S1) is fine-tuned on and the other half
(S2) plays the role of U, while the true U takes no part (`remaining`); pcv.pseudo_split makes it.

A split is immutable and validated on construction, so a bad config fails before any training starts.
"""

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np


def _as_ids(name: str, ids: Iterable[Any]) -> Tuple[int, ...]:
  """Converts `ids` to a tuple of Python ints, rejecting non-integers."""
  out = []
  for i in ids:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
      raise ValueError(f"{name} must hold integer class ids; got {i!r} ({type(i).__name__}).")
    out.append(int(i))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class ClassSplit:
  """A partition of the label space {0, ..., num_classes - 1} into seen, absent and remaining classes.

  Attributes:
    num_classes: C, the size of the label space (the classifier head).
    seen: S, the classes whose training data fine-tuning uses, sorted.
    absent: U, the classes missing from fine-tuning but scored at test time, sorted.
    remaining: classes in neither S nor U (e.g. the true U during PCV), sorted. They take no part.
    provenance: how the split was made (kind, seed, ...), recorded in the run's output.
  """
  num_classes: int
  seen: Tuple[int, ...]
  absent: Tuple[int, ...]
  remaining: Tuple[int, ...] = ()
  provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 2:
      raise ValueError(f"num_classes must be an integer >= 2; got {self.num_classes!r}.")
    object.__setattr__(self, "num_classes", int(self.num_classes))
    groups = {}
    for name in ("seen", "absent", "remaining"):
      ids = _as_ids(name, getattr(self, name))
      dup = sorted({i for i in ids if ids.count(i) > 1})
      if dup:
        raise ValueError(f"{name} lists classes more than once: {dup}. List each class id once.")
      bad = sorted(i for i in ids if not 0 <= i < self.num_classes)
      if bad:
        raise ValueError(f"{name} has class ids outside the label space [0, {self.num_classes}): {bad}.")
      groups[name] = tuple(sorted(ids))
    for a, b in (("seen", "absent"), ("seen", "remaining"), ("absent", "remaining")):
      both = sorted(set(groups[a]) & set(groups[b]))
      if both:
        raise ValueError(f"Classes {both} are in both {a} and {b}; a class belongs to exactly one of them.")
    if not groups["seen"]:
      raise ValueError("The seen set S is empty: fine-tuning needs at least one class.")
    if not groups["absent"]:
      raise ValueError("The absent set U is empty: calibration needs at least one absent class. "
                       "Use a smaller seen set, or set absent explicitly.")
    missing = sorted(set(range(self.num_classes)) - set().union(*map(set, groups.values())))
    if missing:
      raise ValueError(f"Classes {missing} are in none of seen, absent or remaining; "
                       "put them in one (remaining if they should take no part).")
    for name, ids in groups.items():
      object.__setattr__(self, name, ids)
    object.__setattr__(self, "provenance", dict(self.provenance))

  # -- constructors ----------------------------------------------------------------------------------------------

  @classmethod
  def from_lists(cls, num_classes: int, seen: Sequence[int], absent: Optional[Sequence[int]] = None,
                 remaining: Sequence[int] = ()) -> "ClassSplit":
    """An explicit split; `absent` defaults to every class not in `seen` or `remaining`."""
    seen_ids = _as_ids("seen", seen)
    remaining_ids = _as_ids("remaining", remaining)
    if absent is None:
      taken = set(seen_ids) | set(remaining_ids)
      absent = [c for c in range(int(num_classes)) if c not in taken]
    return cls(num_classes, seen_ids, _as_ids("absent", absent), remaining_ids, provenance={"kind": "explicit"})

  @classmethod
  def random(cls, num_classes: int, num_seen: int, seed: int, num_absent: Optional[int] = None,
             candidates: Optional[Sequence[int]] = None) -> "ClassSplit":
    """A seeded random draw of `num_seen` seen classes; `num_absent` of the rest are absent (default: all).

    Args:
      num_classes: size of the label space (the head).
      num_seen: |S|.
      seed: seeds the draw; S and U come from one permutation, so the same seed with a different num_seen gives
        nested seen sets.
      num_absent: |U|; default every candidate not in S. Candidates in neither go to `remaining`.
      candidates: the classes to draw from (default all). Use it when the head is larger than the dataset's
        label set, e.g. the 200 ImageNet-R classes of a 1000-way head; the other head classes go to `remaining`.
    """
    pool = np.arange(num_classes) if candidates is None else np.asarray(_as_ids("candidates", candidates))
    n = pool.shape[0]
    if not 0 < num_seen < n:
      raise ValueError(f"num_seen must be in [1, {n - 1}] for {n} candidate classes; got {num_seen}.")
    if num_absent is None:
      num_absent = n - num_seen
    if not 0 < num_absent <= n - num_seen:
      raise ValueError(f"num_absent must be in [1, {n - num_seen}] with num_seen={num_seen} of "
                       f"{n} candidate classes; got {num_absent}.")
    perm = np.random.default_rng(seed).permutation(pool)
    seen = perm[:num_seen]
    absent = perm[num_seen:num_seen + num_absent]
    remaining = np.setdiff1d(np.arange(num_classes), np.concatenate([seen, absent]))
    provenance = {"kind": "random", "seed": int(seed), "num_seen": int(num_seen), "num_absent": int(num_absent)}
    if candidates is not None:
      provenance["num_candidates"] = int(n)
    return cls(num_classes, tuple(seen.tolist()), tuple(absent.tolist()), tuple(remaining.tolist()),
               provenance=provenance)

  @classmethod
  def from_config(cls, cfg: Any, num_classes: int, candidates: Optional[Sequence[int]] = None,
                  natural: Optional[Tuple[Sequence[int], Sequence[int]]] = None) -> "ClassSplit":
    """Builds a split from a ConfigDict (or dict); `candidates` as in `random` (e.g. a dataset's present classes).

    Fields:
      kind: 'random', 'explicit' or 'natural'.
      natural: the dataset's own (seen, absent), passed as `natural` (registry.natural_split: iWildCam's species
        of the fine-tuning split, and those only in the test split); the other classes are remaining.
      random: num_seen (int, or a float in (0, 1) read as a fraction of the candidates; an integral float >= 1
        is a count), seed, num_absent (optional).
      explicit: seen (list of ids), absent (optional list; default: the complement), remaining (optional).
    """
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    kind = get("kind", None)
    if kind == "random":
      num_seen = get("num_seen", None)
      if num_seen is None:
        raise ValueError("class_split.kind='random' needs num_seen (an int, or a fraction in (0, 1)).")
      if isinstance(num_seen, float) and num_seen >= 1.0 and num_seen.is_integer():
        # A count: '--config.class_split.num_seen=24' arrives as 24.0 when the config's value is a fraction.
        num_seen = int(num_seen)
      elif isinstance(num_seen, float):
        if not 0.0 < num_seen < 1.0:
          raise ValueError(f"A fractional num_seen must be in (0, 1); got {num_seen}.")
        num_seen = int(round(num_seen * (num_classes if candidates is None else len(candidates))))
      split = cls.random(num_classes, int(num_seen), int(get("seed", 0)), get("num_absent", None), candidates)
    elif kind == "explicit":
      seen = get("seen", None)
      if not seen:
        raise ValueError("class_split.kind='explicit' needs a non-empty list `seen`, e.g. "
                         "--config.class_split.seen=0,1,2 (absent defaults to every other class).")
      split = cls.from_lists(num_classes, list(seen), get("absent", None), list(get("remaining", None) or ()))
    elif kind == "natural":
      if natural is None:
        raise ValueError("class_split.kind='natural' needs the dataset's own (seen, absent) classes.")
      seen, absent = ([int(c) for c in ids] for ids in natural)
      taken = set(seen) | set(absent)
      split = cls(num_classes, seen, absent, [c for c in range(num_classes) if c not in taken],
                  provenance={"kind": "natural"})
    else:
      raise ValueError(f"Unknown class_split.kind {kind!r}; valid kinds: 'explicit', 'natural', 'random'.")
    return split

  # -- derived views ---------------------------------------------------------------------------------------------

  def _mask(self, ids: Sequence[int]) -> np.ndarray:
    m = np.zeros((self.num_classes,), np.bool_)
    m[list(ids)] = True
    return m

  @property
  def seen_mask(self) -> np.ndarray:
    """np.bool_ (C,): True for classes in S."""
    return self._mask(self.seen)

  @property
  def absent_mask(self) -> np.ndarray:
    """np.bool_ (C,): True for classes in U."""
    return self._mask(self.absent)

  @property
  def remaining_mask(self) -> np.ndarray:
    """np.bool_ (C,): True for classes in neither S nor U."""
    return self._mask(self.remaining)

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-ready record of the split, for the run's output."""
    return {
        "num_classes": self.num_classes, "seen": list(self.seen), "absent": list(self.absent),
        "remaining": list(self.remaining), "provenance": dict(self.provenance)
    }
