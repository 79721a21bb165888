"""Content hashes (files, arrays) and the non-finite check of initial parameters."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcal_jax import integrity


def test_file_sha256_follows_the_content_not_the_path(tmp_path):
  path = tmp_path / "init.npz"
  path.write_bytes(b"a" * (3 << 20) + b"tail")  # More than one 1 MiB chunk.
  first = integrity.file_sha256(path)
  assert first == hashlib.sha256(path.read_bytes()).hexdigest()
  path.write_bytes(b"a" * (3 << 20) + b"tall")  # Overwritten in place: same path, new weights.
  assert integrity.file_sha256(path) != first
  (tmp_path / "copy.npz").write_bytes(path.read_bytes())
  assert integrity.file_sha256(tmp_path / "copy.npz") == integrity.file_sha256(path)


def test_tree_checksums_see_values_dtypes_and_shapes():
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.array(3, jnp.int32)}
  sums = integrity.tree_checksums(tree)
  assert set(sums) == {"['w']", "['step']"}
  assert integrity.compare_checksums(sums, integrity.tree_checksums(jax.tree.map(np.asarray, tree))) is None
  for other in ({"w": jnp.arange(6.0).reshape(3, 2)}, {"w": jnp.arange(6, dtype=jnp.int32).reshape(2, 3)},
                {"w": jnp.arange(6.0).reshape(2, 3).at[0, 0].set(1e-30)}):
    changed = integrity.tree_checksums({**tree, **other})
    assert "differ" in integrity.compare_checksums(sums, changed)
  assert "leaves differ" in integrity.compare_checksums(sums, integrity.tree_checksums({"w": tree["w"]}))


def test_replicated_arrays_hash_like_their_host_value():
  mesh = jax.sharding.Mesh(jax.devices(), ("data",))
  x = jax.device_put(jnp.arange(8.0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  y = jax.device_put(jnp.arange(8.0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  assert integrity.tree_checksums([x, y]) == integrity.tree_checksums([np.arange(8, dtype=np.float32)] * 2)


def test_directory_manifest_catches_missing_resized_and_edited_files(tmp_path):
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "a").write_bytes(b"0123")
  (tmp_path / "b").write_bytes(b"xy")
  manifest = integrity.directory_manifest(tmp_path)
  assert integrity.check_manifest(tmp_path, manifest) is None
  (tmp_path / "d" / "a").write_bytes(b"0124")
  assert "d/a does not match" in integrity.check_manifest(tmp_path, manifest)
  (tmp_path / "d" / "a").write_bytes(b"01")
  assert "d/a has 2 bytes, 4 were written" in integrity.check_manifest(tmp_path, manifest)
  (tmp_path / "b").unlink()
  assert "b is missing" in integrity.check_manifest(tmp_path, manifest)


def test_non_finite_initial_parameters_name_the_first_bad_leaf():
  params = {"head": {"kernel": np.ones((4, 3), np.float32)}, "embedding": {"kernel": np.zeros((2, 2), jnp.bfloat16)}}
  integrity.check_finite(params, "init.npz")  # All finite: no error.
  assert integrity.first_nonfinite(params) is None
  params["head"]["kernel"][1, 2] = np.nan
  params["head"]["kernel"][0, 0] = np.inf
  assert integrity.first_nonfinite(params) == ("['head']['kernel']", 2)
  with pytest.raises(
      ValueError, match=r"from /x/init.npz are not finite: \['head'\]\['kernel'\] has 2 NaN/inf.*"
      "whatever the learning rate"):
    integrity.check_finite(params, "/x/init.npz")
  params["embedding"]["kernel"] = jnp.full((2, 2), jnp.nan, jnp.bfloat16)
  assert integrity.first_nonfinite(params) == ("['embedding']['kernel']", 4)
  assert integrity.first_nonfinite({"step": np.array(3)}) is None  # Integers are never NaN.
