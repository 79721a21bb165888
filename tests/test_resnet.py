"""ResNet parity against transformers' ResNetForImageClassification (random weights, non-trivial BatchNorm stats).

Nothing is downloaded: the references are built from ResNetConfig (its defaults are ResNet-50). torchvision does not
install beside this torch, so torchvision's (and timm's) names are checked by renaming the reference's keys.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
# Plain imports, not importorskip: CI must run the parity tests, so a missing test extra is an error.
import torch
import transformers
from jax.sharding import NamedSharding, PartitionSpec as P

from ftcal_jax import train_step
from ftcal_jax.models import get_model, load_pretrained
from ftcal_jax.models import load
from ftcal_jax.models import resnet_weights
from ftcal_jax.models import weights

# ResNet-testing's widths as a transformers config: stem 8, bottleneck stages 32/64/128/256, one block each.
_TINY = dict(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1])
_TINY_BASIC = dict(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 1, 1, 2], layer_type="basic")


def _reference(num_labels=10, seed=0, **config):
  """A random ResNet in eval mode whose BatchNorm affine parameters and running statistics are all non-trivial."""
  torch.manual_seed(seed)
  model = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=num_labels, **config))
  with torch.no_grad():
    for mod in model.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
        mod.bias.copy_(0.2 * torch.randn_like(mod.bias))
        mod.running_mean.copy_(0.3 * torch.randn_like(mod.running_mean))
        mod.running_var.copy_(0.5 + torch.rand_like(mod.running_var))
    model.classifier[1].weight.copy_(0.1 * torch.randn_like(model.classifier[1].weight))
    model.classifier[1].bias.copy_(0.1 * torch.randn_like(model.classifier[1].bias))
  return model.eval()


def _run_reference(model, images_nhwc):
  x = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    out = model(x, output_hidden_states=True)
    pooled = model.resnet(x).pooler_output.flatten(1)
  # hidden_states: the embedder's output (our tap 0) and each stage's (taps 1..4), NCHW.
  blocks = {k: h.permute(0, 2, 3, 1).flatten(1, 2).numpy() for k, h in enumerate(out.hidden_states)}
  return {"logits": out.logits.numpy(), "pre_logits": pooled.numpy(), "blocks": blocks}


def _state_dict(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _rel_err(got, want):
  """max |got - want| / max |want|: the error relative to the output's scale."""
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def _assert_parity(out, ref, taps=()):
  for key in ("logits", "pre_logits"):
    assert out[key].shape == ref[key].shape
    assert _rel_err(out[key], ref[key]) < 1e-4, key
  for k in taps:
    assert out["blocks"][k].shape == ref["blocks"][k].shape
    assert _rel_err(out["blocks"][k], ref["blocks"][k]) < 1e-4, k


def _images(n=2, res=64, seed=1):
  return np.random.RandomState(seed).randn(n, res, res, 3).astype(np.float32)


def _to_torchvision(sd):
  """transformers ResNet keys -> torchvision's (stages counted from 1, downsample.{0,1}, fc)."""
  out = {}
  for k, v in sd.items():
    k = k.replace("resnet.embedder.embedder.convolution", "conv1").replace("resnet.embedder.embedder.normalization",
                                                                           "bn1")
    m = re.fullmatch(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)", k)
    if m:
      s, i, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
      rest = re.sub(r"layer\.(\d+)\.convolution", lambda r: f"conv{int(r.group(1)) + 1}", rest)
      rest = re.sub(r"layer\.(\d+)\.normalization", lambda r: f"bn{int(r.group(1)) + 1}", rest)
      rest = rest.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1")
      k = f"layer{s}.{i}.{rest}"
    out[k.replace("classifier.1", "fc")] = v
  return out


def _apply(model):
  return jax.jit(model.apply, static_argnames=("train", "feature_blocks", "mutable"))


@pytest.mark.slow
def test_resnet50_parity_with_transformers():
  """ResNetConfig() is ResNet-50; 64-px images keep it cheap (the network is size-agnostic)."""
  ref_model = _reference(num_labels=1000)
  x = _images()
  ref = _run_reference(ref_model, x)
  model, variables = load_pretrained("ResNet-50", _state_dict(ref_model))
  assert model.num_classes == 1000 and variables["params"]["head"]["kernel"].shape == (2048, 1000)
  out = _apply(model)(variables, x, feature_blocks=(0, 1, 2, 3, 4))
  _assert_parity(out, ref, taps=range(5))
  count = sum(v.size for v in jax.tree.leaves(variables["params"]))
  assert count == 25_557_032  # torchvision's resnet50 parameter count


def test_tiny_bottleneck_parity_and_torchvision_names(tmp_path):
  ref_model = _reference(**_TINY)
  x = _images(3, 48)
  ref = _run_reference(ref_model, x)
  sd = _state_dict(ref_model)
  model, variables = load_pretrained("ResNet-testing", sd)
  _assert_parity(_apply(model)(variables, x, feature_blocks=(0, 1, 2, 3, 4)), ref, taps=range(5))
  # torchvision/timm names, from a .pth file, give the same variables.
  tv = _to_torchvision(sd)
  assert "layer1.0.downsample.1.running_var" in tv and "fc.weight" in tv and "bn1.weight" in tv
  torch.save({k: torch.from_numpy(v) for k, v in tv.items()}, tmp_path / "r.pth")
  _, tv_variables = load_pretrained("ResNet-testing", str(tmp_path / "r.pth"))
  jax.tree.map(np.testing.assert_array_equal, tv_variables, variables)
  # ... and so does a .safetensors file with a 'module.' prefix (a DataParallel checkpoint).
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({"module." + k: np.ascontiguousarray(v) for k, v in tv.items()}, str(tmp_path / "r.safetensors"))
  _, st_variables = load_pretrained("ResNet-testing", str(tmp_path / "r.safetensors"))
  jax.tree.map(np.testing.assert_array_equal, st_variables, variables)


def test_basic_block_parity():
  ref_model = _reference(**_TINY_BASIC)
  x = _images(2, 40)
  ref = _run_reference(ref_model, x)
  model = get_model("ResNet-testing", 10, block="basic", stage_sizes=(2, 1, 1, 2))
  loaded = resnet_weights.load_resnet_state_dict(_state_dict(ref_model))
  variables = load.restore_variables(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 40, 40, 3))), loaded)
  _assert_parity(_apply(model)(variables, x, feature_blocks=(0, 2, 4)), ref, taps=(0, 2, 4))


def test_train_mode_matches_torch_train_mode():
  """Batch statistics normalise, and the running statistics update as torch's (momentum 0.1, unbiased var)."""
  ref_model = _reference(**_TINY)
  x = _images(4, 32)
  model, variables = load_pretrained("ResNet-testing", _state_dict(ref_model))
  out, updates = _apply(model)(variables, x, train=True, mutable=("batch_stats",))
  ref_model.train()
  with torch.no_grad():
    ref_logits = ref_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
  assert _rel_err(out["logits"], ref_logits) < 1e-4
  new = resnet_weights.load_resnet_state_dict(_state_dict(ref_model))["batch_stats"]
  flat_new, flat_got = weights.flatten(new), weights.flatten(updates["batch_stats"])
  assert sorted(flat_new) == sorted(flat_got)
  for k in flat_new:
    np.testing.assert_allclose(flat_got[k], flat_new[k], rtol=1e-4, atol=1e-5, err_msg=k)
  # The statistics moved: the test compares updated values, not the loaded ones.
  assert not np.allclose(flat_got["layer4_0/bn3/var"], weights.flatten(variables["batch_stats"])["layer4_0/bn3/var"])


@pytest.mark.slow
def test_batch_statistics_cover_the_global_batch_on_8_devices():
  """With the batch sharded over the mesh (P('data')), the batch statistics are those of the global batch.

  8 devices give what 1 device gives for the whole batch; statistics of each device's own shard (what a per-device
  BatchNorm would use) give something else, so the comparison can fail.
  """
  assert jax.device_count() == 8
  model = get_model("ResNet-testing", 5, stage_sizes=(1, 1))  # two stages: compiles faster, same BatchNorm
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  x = np.random.RandomState(2).randn(16, 16, 16, 3).astype(np.float32) * 2.0 + 0.5

  def jitted(devices):
    mesh = train_step.make_mesh(devices)
    f = jax.jit(lambda v, b: model.apply(v, b, train=True, mutable=("batch_stats",)),
                in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(train_step.DATA_AXIS))),
                out_shardings=NamedSharding(mesh, P()))
    return lambda batch: jax.device_get(f(variables, batch))

  run_one = jitted(jax.devices()[:1])
  one, eight = run_one(x), jitted(jax.devices())(x)
  # Equal up to float summation order (batch-normalising 16 samples at 1x1 amplifies it to ~1e-5).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), eight, one)
  per_shard = [run_one(x[i:i + 2]) for i in range(0, 16, 2)]
  local_mean = np.mean([s[1]["batch_stats"]["bn1"]["var"] for s in per_shard], axis=0)
  assert not np.allclose(local_mean, one[1]["batch_stats"]["bn1"]["var"], rtol=1e-3)


def test_errors_name_keys_and_shapes():
  sd = _state_dict(_reference(**_TINY_BASIC))
  with pytest.raises(ValueError, match=r"missing key 'layer1_0/conv3/kernel'"):
    load_pretrained("ResNet-testing", sd)  # basic-block weights into a bottleneck model
  with pytest.raises(ValueError, match=r"No ResNet mapping.*'extra.weight' \(3,\)"):
    load_pretrained("ResNet-testing", {**sd, "extra.weight": np.zeros(3, np.float32)})
  tiny = _state_dict(_reference(**_TINY))
  with pytest.raises(ValueError, match=r"shape mismatch at 'head/kernel'.*\(256, 3\).*\(256, 10\)"):
    load.restore_variables(
        jax.eval_shape(get_model("ResNet-testing", 3).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))),
        resnet_weights.load_resnet_state_dict(tiny))


def test_new_head_and_class_subset():
  sd = _state_dict(_reference(**_TINY))
  model, variables = load_pretrained("ResNet-testing", sd, head="new", num_classes=65)
  assert model.num_classes == 65 and not np.any(variables["params"]["head"]["kernel"])
  _, full = load_pretrained("ResNet-testing", sd)
  _, sub = load_pretrained("ResNet-testing", sd, head=[7, 2])
  np.testing.assert_array_equal(sub["params"]["head"]["kernel"], full["params"]["head"]["kernel"][:, [7, 2]])
  jax.tree.map(np.testing.assert_array_equal, sub["batch_stats"], full["batch_stats"])


@pytest.mark.parametrize("name,count", [("ResNet-18", 11_689_512), ("ResNet-34", 21_797_672), ("ResNet-50", 25_557_032),
                                        ("ResNet-101", 44_549_160)])
def test_parameter_counts_match_torchvision(name, count):
  """torchvision's published sizes with the 1000-class head; eval_shape builds nothing."""
  model = get_model(name, 1000)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == count
  assert model.num_layers == 4


def test_round_trip_through_ftcal_npz(tmp_path):
  """The .npz that ftcal_jax writes (variables: params and batch_stats) loads back as it was."""
  _, variables = load_pretrained("ResNet-testing", _state_dict(_reference(**_TINY)))
  weights.save_npz(variables, str(tmp_path / "source_model.npz"))
  _, again = load_pretrained("ResNet-testing", str(tmp_path / "source_model.npz"))
  jax.tree.map(np.testing.assert_array_equal, again, variables)
  weights.save_npz(variables["params"], str(tmp_path / "params_only.npz"))
  with pytest.raises(ValueError, match="no 'batch_stats"):
    load_pretrained("ResNet-testing", str(tmp_path / "params_only.npz"))
