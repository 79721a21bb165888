"""Damaged caches are reported by name and ignored (None), never a bare BadZipFile or JSONDecodeError."""

import json

import numpy as np
import pytest

from ftcal_jax import atomic_write
from ftcal_jax import caches


def _npz(tmp_path):
  path = tmp_path / "predictions.npz"
  atomic_write.save_npz(path, logits=np.random.default_rng(0).normal(size=(64, 47)), labels=np.arange(64))
  return path


def test_a_good_npz_and_json_load(tmp_path):
  arrays = caches.read_npz(_npz(tmp_path), required=("logits",))
  assert arrays["logits"].shape == (64, 47) and arrays["labels"][-1] == 63
  atomic_write.write_json(tmp_path / "history.json", {"step": [0, 2]})
  assert caches.read_json(tmp_path / "history.json", required=("step",)) == {"step": [0, 2]}


def test_missing_files_are_none_without_a_warning(tmp_path, recwarn):
  assert caches.read_npz(tmp_path / "none.npz") is None
  assert caches.read_json(tmp_path / "none.json") is None
  assert not recwarn.list


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "flip"])
def test_a_damaged_npz_warns_with_its_name_and_is_none(tmp_path, damage):
  path = _npz(tmp_path)
  data = path.read_bytes()
  if damage == "truncate":
    data = data[:len(data) // 2]
  elif damage == "empty":
    data = b""
  elif damage == "garbage":
    data = np.random.default_rng(1).bytes(len(data))
  else:  # One bit in the middle of the logits: zip's CRC-32 catches it.
    data = bytearray(data)
    data[len(data) // 3] ^= 0x01
    data = bytes(data)
  path.write_bytes(data)
  with pytest.warns(caches.DamagedFileWarning, match=f"{path} is damaged.*recomputing"):
    assert caches.read_npz(path) is None


def test_an_npz_without_a_required_array_is_damaged(tmp_path):
  with pytest.warns(caches.DamagedFileWarning, match=r"missing arrays \['features'\]"):
    assert caches.read_npz(_npz(tmp_path), required=("logits", "features")) is None


@pytest.mark.parametrize("text", ['{"step": [0, 2', "", "\xff\xfe", "[1, 2]"])
def test_a_damaged_json_warns_with_its_name_and_is_none(tmp_path, text):
  path = tmp_path / "history.json"
  path.write_bytes(text.encode("latin-1"))
  with pytest.warns(caches.DamagedFileWarning, match=f"{path} is damaged"):
    assert caches.read_json(path, required=("step",)) is None


def test_json_without_requirements_accepts_any_value(tmp_path):
  (tmp_path / "x.json").write_text(json.dumps([1, 2]))
  assert caches.read_json(tmp_path / "x.json") == [1, 2]
