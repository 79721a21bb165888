"""Checkpoint interop, proven against a real reference: transformers' ViTForImageClassification, random weights.

The reference is built from a small ViTConfig, so nothing is downloaded. timm cannot be installed beside this
torch (it needs torchvision), so the timm mapping is checked by renaming the reference's keys to timm's names and
fusing q/k/v the way timm stores them; `test_timm_fused_qkv_layout` checks that fused layout against timm's
attention arithmetic written out in torch.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
# Plain imports, not importorskip: CI must run the parity test, so a missing test extra is an error.
import torch
import transformers

from ftcal_jax.models import get_model
from ftcal_jax.models import weights

D, HEADS, LAYERS, MLP, RES, PATCH, CLASSES = 48, 3, 3, 96, 32, 8, 7
TAPS = tuple(range(LAYERS + 1))


def _reference(image_size=RES, seed=0):
  torch.manual_seed(seed)
  config = transformers.ViTConfig(
      hidden_size=D,
      num_hidden_layers=LAYERS,
      num_attention_heads=HEADS,
      intermediate_size=MLP,
      image_size=image_size,
      patch_size=PATCH,
      num_labels=CLASSES,
      hidden_act="gelu",
      layer_norm_eps=1e-6,  # vit_jax's epsilon; HF's default is 1e-12
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  model = transformers.ViTForImageClassification(config).eval()
  # HF initialises biases to 0 and LayerNorm scales to 1, which would hide swapped or dropped leaves.
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(0.2 * torch.randn_like(p))
  return model


def _run_reference(model, images_nhwc):
  with torch.no_grad():
    out = model(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy()), output_hidden_states=True)
    pre_logits = model.vit(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).last_hidden_state[:, 0]
  # hidden_states[0] is the embedding output (our tap 0), hidden_states[k] block k's output.
  return {
      "logits": out.logits.numpy(), "pre_logits": pre_logits.numpy(),
      "blocks": {k: out.hidden_states[k].numpy() for k in TAPS}
  }


def _flax(num_classes=CLASSES, **kw):
  return get_model("ViT-testing", num_classes,
                   **{**dict(hidden_size=D, num_heads=HEADS, num_layers=LAYERS, mlp_dim=MLP), **kw})


def _init(model, res=RES):
  return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, res, res, 3)))["params"]


def _apply(model, params, images):
  fn = jax.jit(model.apply, static_argnames=("feature_blocks",))
  return jax.tree.map(np.asarray, fn({"params": params}, jnp.asarray(images), feature_blocks=TAPS))


def _images(n=4, res=RES, seed=1):
  return np.random.RandomState(seed).randn(n, res, res, 3).astype(np.float32)


def _assert_outputs_close(ours, ref):
  np.testing.assert_allclose(ours["logits"], ref["logits"], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(ours["pre_logits"], ref["pre_logits"], rtol=1e-5, atol=1e-4)
  for k in TAPS:
    np.testing.assert_allclose(ours["blocks"][k], ref["blocks"][k], rtol=1e-5, atol=1e-4, err_msg=f"block {k}")


@pytest.fixture(scope="module")
def ref():
  """(reference model, its state dict as numpy, Flax model, Flax init params, converted params)."""
  model = _reference()
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  flax_model = _flax()
  init = _init(flax_model)
  params = weights.restore_into(init, weights.load_torch_state_dict(model.state_dict(), num_heads=HEADS))
  return model, sd, flax_model, init, params


def test_hf_parity_logits_features_blocks(ref):
  model, _, flax_model, _, params = ref
  images = _images()
  ref_out = _run_reference(model, images)
  assert np.abs(ref_out["logits"]).max() > 0.1  # a meaningful comparison, not of near-zero outputs
  _assert_outputs_close(_apply(flax_model, params, images), ref_out)


def test_hf_files_safetensors_bin_and_wrapped(ref, tmp_path):
  model, _, _, init, params = ref
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  save_file(sd, tmp_path / "model.safetensors")
  torch.save(sd, tmp_path / "pytorch_model.bin")
  torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
  for name in ("model.safetensors", "pytorch_model.bin", "ckpt.pth"):
    loaded = weights.restore_into(init, weights.load_torch_state_dict(tmp_path / name, num_heads=HEADS))
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def _to_legacy_hf(sd):
  """transformers>=5 names -> the transformers<5 names that hub checkpoints carry."""
  out = {}
  for k, v in sd.items():
    k = re.sub(r"^vit\.layers\.", "vit.encoder.layer.", k)
    for new, old in (("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
                     ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
                     ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
      k = k.replace(new, old)
    out[k] = v
  return out


def test_legacy_hf_names_and_vitmodel_prefix(ref):
  _, sd, _, init, params = ref
  legacy = _to_legacy_hf(sd)
  assert "vit.encoder.layer.0.attention.attention.query.weight" in legacy
  jax.tree.map(np.testing.assert_array_equal,
               weights.restore_into(init, weights.load_torch_state_dict(legacy, num_heads=HEADS)), params)
  # A ViTModel checkpoint has no 'vit.' prefix and no classifier; its pooler is the representation layer.
  bare = {k[len("vit."):]: v for k, v in legacy.items() if k.startswith("vit.")}
  bare["pooler.dense.weight"] = np.ones((D, D), np.float32)
  bare["pooler.dense.bias"] = np.zeros(D, np.float32)
  loaded = weights.load_torch_state_dict(bare, num_heads=HEADS)
  assert "head" not in loaded and loaded["pre_logits"]["kernel"].shape == (D, D)


def _to_timm(sd):
  """HF ViT names -> timm VisionTransformer names, with q/k/v fused into one (3D, D) qkv as timm stores it."""
  out = {
      "cls_token": sd["vit.embeddings.cls_token"], "pos_embed": sd["vit.embeddings.position_embeddings"],
      "patch_embed.proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
      "patch_embed.proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
      "norm.weight": sd["vit.layernorm.weight"], "norm.bias": sd["vit.layernorm.bias"],
      "head.weight": sd["classifier.weight"], "head.bias": sd["classifier.bias"]
  }
  for i in range(LAYERS):
    hf, tm = f"vit.layers.{i}.", f"blocks.{i}."
    for leaf in ("weight", "bias"):
      out[tm + f"attn.qkv.{leaf}"] = np.concatenate([sd[hf + f"attention.{n}_proj.{leaf}"] for n in "qkv"], axis=0)
      out[tm + f"attn.proj.{leaf}"] = sd[hf + f"attention.o_proj.{leaf}"]
      out[tm + f"norm1.{leaf}"] = sd[hf + f"layernorm_before.{leaf}"]
      out[tm + f"norm2.{leaf}"] = sd[hf + f"layernorm_after.{leaf}"]
      out[tm + f"mlp.fc1.{leaf}"] = sd[hf + f"mlp.fc1.{leaf}"]
      out[tm + f"mlp.fc2.{leaf}"] = sd[hf + f"mlp.fc2.{leaf}"]
  assert len(out) == len(sd) - 4 * LAYERS  # per block, 6 q/k/v leaves became 2 fused ones
  return out


def test_timm_names_give_the_same_params(ref):
  model, sd, flax_model, init, params = ref
  timm_sd = _to_timm(sd)
  loaded = weights.restore_into(init, weights.load_torch_state_dict(timm_sd, num_heads=HEADS, source="timm"))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  images = _images(2)
  _assert_outputs_close(_apply(flax_model, loaded, images), _run_reference(model, images))


def test_timm_fused_qkv_layout(ref):
  """timm computes qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4): check our [q; k; v] row split on it."""
  model, sd, _, _, _ = ref
  qkv_w = torch.from_numpy(_to_timm(sd)["blocks.0.attn.qkv.weight"])
  qkv_b = torch.from_numpy(_to_timm(sd)["blocks.0.attn.qkv.bias"])
  x = torch.randn(2, 5, D)
  b, n, _ = x.shape
  q, k, v = torch.nn.functional.linear(x, qkv_w, qkv_b).reshape(b, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
  attn = model.vit.layers[0].attention
  with torch.no_grad():
    for ours, proj in ((q, attn.q_proj), (k, attn.k_proj), (v, attn.v_proj)):
      hf = proj(x).reshape(b, n, HEADS, D // HEADS).transpose(1, 2)
      np.testing.assert_allclose(ours.numpy(), hf.numpy(), atol=1e-6)


def test_npz_round_trip(ref, tmp_path):
  _, _, flax_model, init, params = ref
  path = tmp_path / "ViT-tiny.npz"
  weights.save_npz(params, path)
  with np.load(path, allow_pickle=False) as z:
    names = set(z.files)
  assert {
      "Transformer/encoderblock_0/LayerNorm_0/scale", "Transformer/posembed_input/pos_embedding",
      "Transformer/encoderblock_2/MultiHeadDotProductAttention_1/query/kernel", "embedding/kernel", "cls", "head/bias"
  } <= names
  loaded = weights.load_npz(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
  restored = weights.restore_into(init, loaded)
  images = _images(2)
  jax.tree.map(np.testing.assert_array_equal, _apply(flax_model, restored, images), _apply(flax_model, params, images))

  # big_vision-style prefixes: 'params/' is stripped automatically; other prefixes select a sub-tree.
  flat = weights.flatten(jax.tree.map(np.asarray, params))
  np.savez(tmp_path / "bv.npz", **{f"params/img/{k}": v for k, v in flat.items()}, **{"params/txt/x": np.zeros(1)})
  jax.tree.map(np.testing.assert_array_equal, weights.load_npz(tmp_path / "bv.npz", prefix="params/img"), loaded)
  assert set(weights.load_npz(tmp_path / "bv.npz")) == {"img", "txt"}


def test_npz_refuses_pickles(tmp_path):
  np.savez(tmp_path / "evil.npz", cls=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match="allow_pickle"):
    weights.load_npz(tmp_path / "evil.npz")


def test_resize_same_size_is_identity():
  pe = np.random.RandomState(0).randn(1, 17, D).astype(np.float32)
  for method in ("bilinear", "bicubic"):
    np.testing.assert_allclose(weights.resize_posemb(pe, 17, method=method), pe, atol=1e-6)


@pytest.mark.parametrize("new_grid", [6, 3])
def test_resize_matches_torch_bilinear(new_grid):
  pe = np.random.RandomState(0).randn(1, 17, D).astype(np.float32)
  ours = weights.resize_posemb(pe, new_grid * new_grid + 1, method="bilinear")
  grid = torch.from_numpy(pe[0, 1:].reshape(4, 4, D)).permute(2, 0, 1)[None]
  theirs = torch.nn.functional.interpolate(grid, size=(new_grid, new_grid), mode="bilinear", align_corners=False)
  np.testing.assert_array_equal(ours[:, :1], pe[:, :1])  # the class token is kept
  np.testing.assert_allclose(ours[0, 1:], theirs[0].permute(1, 2, 0).reshape(-1, D).numpy(), atol=1e-5)


def test_load_at_a_new_resolution_runs_like_the_reference(ref):
  model, sd, _, _, _ = ref
  big = _flax()
  init48 = _init(big, 48)
  params = weights.restore_into(init48, weights.load_torch_state_dict(sd, num_heads=HEADS), posemb_method="bicubic")
  pe = params["Transformer"]["posembed_input"]["pos_embedding"]
  assert pe.shape == (1, 37, D)
  # The same weights and resized table in a 48px reference must give the same outputs.
  ref48 = _reference(image_size=48)
  ref48.load_state_dict({**model.state_dict(), "vit.embeddings.position_embeddings": torch.from_numpy(pe)})
  images = _images(2, res=48)
  _assert_outputs_close(_apply(big, params, images), _run_reference(ref48, images))
  # A non-square grid must be given explicitly.
  wide = jax.eval_shape(big.init, jax.random.key(0), jnp.zeros((1, 32, 48, 3)))["params"]
  with pytest.raises(ValueError, match="posemb_grid"):
    weights.restore_into(wide, weights.load_torch_state_dict(sd, num_heads=HEADS))
  wide_params = weights.restore_into(wide, weights.load_torch_state_dict(sd, num_heads=HEADS), posemb_grid=(4, 6))
  assert wide_params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 25, D)


def test_head_class_list_keep_and_new(ref):
  _, sd, flax_model, _, params = ref
  loaded = weights.load_torch_state_dict(sd, num_heads=HEADS)
  idx = [6, 0, 3]
  small = _flax(num_classes=3)
  init3 = _init(small)
  images = _images(3)
  full = _apply(flax_model, params, images)["logits"]
  restricted = weights.restore_into(init3, loaded, head=idx)
  np.testing.assert_allclose(_apply(small, restricted, images)["logits"], full[:, idx], rtol=1e-6, atol=1e-6)
  fresh = weights.restore_into(init3, loaded, head="new")
  np.testing.assert_array_equal(fresh["head"]["kernel"], init3["head"]["kernel"])
  np.testing.assert_array_equal(fresh["embedding"]["kernel"], params["embedding"]["kernel"])
  with pytest.raises(
      ValueError, match=r"shape mismatch at 'head/kernel': model shape \(48, 3\) vs checkpoint "
      r"shape \(48, 7\).*head='new' or a class list"):
    weights.restore_into(init3, loaded, head="keep")
  with pytest.raises(ValueError, match=r"in \[0, 7\)"):
    weights.restore_into(init3, loaded, head=[0, 1, 7])
  # eval_shape structs suffice when the head is not re-initialised.
  shapes = jax.eval_shape(small.init, jax.random.key(0), jnp.zeros((1, RES, RES, 3)))["params"]
  jax.tree.map(np.testing.assert_array_equal, weights.restore_into(shapes, loaded, head=idx), restricted)


def test_error_messages_name_key_and_shapes(ref):
  _, sd, _, init, _ = ref
  loaded = weights.flatten(weights.load_torch_state_dict(sd, num_heads=HEADS))

  missing = dict(loaded)
  del missing["Transformer/encoder_norm/scale"]
  with pytest.raises(ValueError, match=r"missing key 'Transformer/encoder_norm/scale': model shape \(48,\)"):
    weights.restore_into(init, weights.unflatten(missing))

  extra = {**loaded, "pre_logits/kernel": np.zeros((D, D), np.float32)}
  with pytest.raises(ValueError, match=r"unexpected key 'pre_logits/kernel': checkpoint shape \(48, 48\)"):
    weights.restore_into(init, weights.unflatten(extra))

  narrow = _init(_flax(mlp_dim=64))
  with pytest.raises(
      ValueError, match=r"shape mismatch at 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel': "
      r"model shape \(48, 64\) vs checkpoint shape \(48, 96\)"):
    weights.restore_into(narrow, weights.unflatten(loaded))

  with pytest.raises(ValueError, match="pass variables\\['params'\\]"):
    weights.restore_into({"params": init}, weights.unflatten(loaded))
  with pytest.raises(ValueError, match=r"No mapping for source='hf'.*'vit.embeddings.mask_token' \(1, 1, 48\)"):
    weights.load_torch_state_dict({**sd, "vit.embeddings.mask_token": np.zeros((1, 1, D))}, num_heads=HEADS)
  with pytest.raises(ValueError, match="fc_norm"):
    weights.load_torch_state_dict({**_to_timm(sd), "fc_norm.weight": np.ones(D)}, num_heads=HEADS, source="timm")
  with pytest.raises(ValueError, match="source must be 'hf' or 'timm'"):
    weights.load_torch_state_dict(sd, num_heads=HEADS, source="keras")


# -- load_checkpoint_file: one entry point for init_checkpoint, any format ---------------------------------------------


def test_load_checkpoint_file_dispatches_on_the_format(ref, tmp_path):
  model, _, _, init, params = ref
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  save_file(sd, tmp_path / "model.safetensors")
  torch.save(sd, tmp_path / "pytorch_model.bin")
  torch.save({"model": sd}, tmp_path / "ckpt.pth")
  weights.save_npz(params, tmp_path / "vit.npz")
  for name in ("vit.npz", "model.safetensors", "pytorch_model.bin", "ckpt.pth"):
    loaded = weights.restore_into(init, weights.load_checkpoint_file(tmp_path / name, num_heads=HEADS))
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
  # timm key names are recognised without source=.
  timm_sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _to_timm(model.state_dict()).items()}
  torch.save(timm_sd, tmp_path / "timm.pth")
  loaded = weights.restore_into(init, weights.load_checkpoint_file(tmp_path / "timm.pth", num_heads=HEADS))
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  with pytest.raises(ValueError, match="PyTorch state dict: pass num_heads"):
    weights.load_checkpoint_file(tmp_path / "model.safetensors")


@pytest.mark.parametrize("name,damage", [("vit.npz", "empty"), ("vit.npz", "truncate"),
                                         ("model.safetensors", "truncate"), ("pytorch_model.bin", "truncate"),
                                         ("vit.npz", "safetensors_inside"), ("weights.h5", "garbage"),
                                         ("model.safetensors", "empty")])
def test_damaged_or_unknown_files_name_the_path_and_the_formats(ref, tmp_path, name, damage):
  model, _, _, _, params = ref
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  save_file(sd, tmp_path / "good.safetensors")
  torch.save(sd, tmp_path / "good.bin")
  weights.save_npz(params, tmp_path / "good.npz")
  good = {".npz": "good.npz", ".safetensors": "good.safetensors", ".bin": "good.bin"}
  data = (tmp_path / good.get(os.path.splitext(name)[1], "good.npz")).read_bytes()
  if damage == "empty":
    data = b""
  elif damage == "truncate":
    data = data[:len(data) // 2]
  elif damage == "safetensors_inside":  # What numpy used to answer with its message about pickles.
    data = (tmp_path / "good.safetensors").read_bytes()
  else:
    data = b"\x89HDF\r\n" + bytes(100)
  path = tmp_path / name
  path.write_bytes(data)
  with pytest.raises(ValueError,
                     match=re.escape(str(path)) + r".*Accepted formats: \.npz .*\.safetensors.*weights_only"):
    weights.load_checkpoint_file(path, num_heads=HEADS)


def test_a_missing_checkpoint_file_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'x.npz'} does not exist. Accepted formats"):
    weights.load_checkpoint_file(tmp_path / "x.npz")
