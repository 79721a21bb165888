"""Atomic writers: whole file or the old one, never half; no temporary files left behind."""

import json
import os

import numpy as np
import pytest

from ftcal_jax import atomic_write


def test_write_json_and_text_replace_the_target(tmp_path):
  path = tmp_path / "sub" / "report.json"  # Missing directories are created.
  atomic_write.write_json(path, {"a": [1, 2]}, indent=1)
  assert json.loads(path.read_text()) == {"a": [1, 2]}
  atomic_write.write_text(path, "second")
  assert path.read_text() == "second"
  assert os.listdir(tmp_path / "sub") == ["report.json"]


def test_a_failure_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "report.json"
  atomic_write.write_json(path, {"good": True})
  with pytest.raises(RuntimeError, match="killed"):
    with atomic_write.atomic_path(path) as tmp:
      with open(tmp, "w") as f:
        f.write('{"trunc')
      raise RuntimeError("killed mid-write")
  assert json.loads(path.read_text()) == {"good": True}
  assert os.listdir(tmp_path) == ["report.json"]


def test_the_temporary_keeps_the_suffix_and_the_result_the_umask_mode(tmp_path):
  with atomic_write.atomic_path(tmp_path / "curve.png") as tmp:
    assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
    with open(tmp, "wb") as f:
      f.write(b"png")
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(tmp_path / "curve.png").st_mode & 0o777 == 0o666 & ~umask


def test_save_npz_round_trip_under_the_given_name(tmp_path):
  path = tmp_path / "predictions.cache"
  atomic_write.save_npz(path, logits=np.arange(6.0).reshape(2, 3), labels=np.array([1, 2]))
  with np.load(path) as z:
    np.testing.assert_array_equal(z["logits"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(z["labels"], [1, 2])
  assert sorted(os.listdir(tmp_path)) == ["predictions.cache"]
