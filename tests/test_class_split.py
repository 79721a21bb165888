"""ClassSplit: construction and validation errors that name the classes (PCV pseudo-splits: test_pcv.py)."""

import json

import ml_collections
import numpy as np
import pytest

from ftcal_jax.class_split import ClassSplit


def test_from_lists_defaults_absent_to_complement():
  s = ClassSplit.from_lists(6, seen=[4, 0, 2])
  assert s.seen == (0, 2, 4)
  assert s.absent == (1, 3, 5)
  assert s.remaining == ()
  np.testing.assert_array_equal(s.seen_mask, [True, False, True, False, True, False])
  np.testing.assert_array_equal(s.absent_mask, ~s.seen_mask)
  assert s.seen_mask.dtype == np.bool_


def test_from_lists_complement_skips_remaining():
  s = ClassSplit.from_lists(6, seen=[0, 1], remaining=[5])
  assert s.absent == (2, 3, 4)
  assert s.remaining == (5,)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(seen=[0, 1, 2], absent=[2, 3, 4, 5]), r"\[2\] are in both seen and absent"),
    (dict(seen=[], absent=[0, 1, 2, 3, 4, 5]), "seen set S is empty"),
    (dict(seen=[0, 1, 2, 3, 4, 5]), "absent set U is empty"),
    (dict(seen=[0, 1, 7, 9], absent=[2, 3, 4, 5]), r"outside the label space \[0, 6\): \[7, 9\]"),
    (dict(seen=[0, 1, 1, 2], absent=[3, 4, 5]), r"more than once: \[1\]"),
    (dict(seen=[0, 1], absent=[2, 3]), r"Classes \[4, 5\] are in none"),
    (dict(seen=[0, 1.5], absent=[2, 3, 4, 5]), "integer class ids"),
])
def test_validation_errors_name_the_classes(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    ClassSplit.from_lists(6, **kwargs)


def test_random_is_seeded_disjoint_and_sized():
  a = ClassSplit.random(47, 23, seed=3)
  b = ClassSplit.random(47, 23, seed=3)
  c = ClassSplit.random(47, 23, seed=4)
  assert a == b
  assert a.seen != c.seen
  assert len(a.seen) == 23 and len(a.absent) == 24
  assert set(a.seen) | set(a.absent) == set(range(47))
  assert a.provenance == {"kind": "random", "seed": 3, "num_seen": 23, "num_absent": 24}


def test_random_with_num_absent_leaves_remaining():
  s = ClassSplit.random(20, 5, seed=0, num_absent=5)
  assert len(s.seen) == 5 and len(s.absent) == 5 and len(s.remaining) == 10
  with pytest.raises(ValueError, match="num_absent must be in"):
    ClassSplit.random(20, 5, seed=0, num_absent=16)
  with pytest.raises(ValueError, match="num_seen must be in"):
    ClassSplit.random(20, 20, seed=0)


def test_from_config():
  cfg = ml_collections.ConfigDict(dict(kind="random", num_seen=0.5, seed=1))
  s = ClassSplit.from_config(cfg, 10)
  assert s == ClassSplit.random(10, 5, seed=1)
  cfg = ml_collections.ConfigDict(dict(kind="explicit", seen=[1, 2]))
  assert ClassSplit.from_config(cfg, 4).absent == (0, 3)
  with pytest.raises(ValueError, match="valid kinds"):
    ClassSplit.from_config(ml_collections.ConfigDict(dict(kind="nope")), 4)


def test_to_dict_is_json_ready_and_frozen():
  s = ClassSplit.random(10, 4, seed=2)
  d = json.loads(json.dumps(s.to_dict()))
  assert d["seen"] == list(s.seen) and d["provenance"]["seed"] == 2
  with pytest.raises(Exception):
    s.seen = (1,)


def test_random_among_candidates_puts_other_head_classes_in_remaining():
  candidates = list(range(0, 40, 2))  # 20 of a 40-way head
  s = ClassSplit.random(40, 10, seed=0, candidates=candidates)
  assert set(s.seen) | set(s.absent) == set(candidates)
  assert s.remaining == tuple(range(1, 40, 2))
  assert s.provenance["num_candidates"] == 20
  cfg = ml_collections.ConfigDict(dict(kind="random", num_seen=0.5, seed=0))
  assert ClassSplit.from_config(cfg, 40, candidates=candidates) == s
