"""CLIP parity against transformers' CLIP towers (random weights), the OpenAI names, and the zero-shot head.

Nothing is downloaded: references are built from small configs (and one ViT-B/32-shaped one), and the tokenizer
test writes its own tiny BPE vocabulary.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
# Plain imports, not importorskip: CI must run the parity tests, so a missing test extra is an error.
import torch
import transformers

from ftcal_jax import ldifs
from ftcal_jax.models import clip
from ftcal_jax.models import clip_text
from ftcal_jax.models import clip_weights
from ftcal_jax.models import CLIP_CONFIGS, get_model, load_pretrained
from ftcal_jax.models import weights

# CLIP-testing's widths.
_VISION = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=32,
               patch_size=8, projection_dim=16)
_WORDS = ("a", "photo", "of", "cat", "dog", "bird", "the")
_MERGES = (("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"))


def _randomise(model, seed):
  """transformers zeroes biases and sets LayerNorm scales to 1, which would hide swapped or dropped leaves."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("logit_scale"):
        p.fill_(np.log(30.0))
      elif p.ndim >= 2:  # unit-gain matrices: at width 768 a fixed 0.2 std makes a chaotic net, not a test
        p.copy_(torch.randn_like(p) / np.sqrt(np.prod(p.shape[1:])))
      else:
        p.copy_((1.0 if "norm" in name and name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
  return model.eval()


def _vision_reference(seed=0, **config):
  return _randomise(transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**config)), seed)


def _text_config(vocab_size, eos_token_id, **kw):
  return dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, vocab_size=vocab_size,
              max_position_embeddings=16, projection_dim=16, eos_token_id=eos_token_id, bos_token_id=vocab_size - 2,
              pad_token_id=vocab_size - 1, **kw)


def _sd(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _rel_err(got, want):
  """max |got - want| / max |want|: the error relative to the output's scale."""
  return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def _images(n=2, res=32, seed=1):
  return np.random.RandomState(seed).randn(n, res, res, 3).astype(np.float32)


def _to_openai(sd):
  """transformers vision keys -> OpenAI CLIP's, q/k/v fused into in_proj as torch's nn.MultiheadAttention stores it."""
  out, qkv = {}, {}
  names = [("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
           ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
           ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
           ("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post")]
  for k, v in sd.items():
    m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.*)", k)
    if k == "visual_projection.weight":
      out["visual.proj"] = v.T
      continue
    if m:
      i, rest = m.groups()
      mq = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
      if mq:
        qkv.setdefault((i, mq.group(2)), {})[mq.group(1)] = v
        continue
      for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                   ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        rest = rest.replace(a, b)
      out[f"visual.transformer.resblocks.{i}.{rest}"] = v
      continue
    for a, b in names:
      k = k.replace(a, b)
    out[k] = v
  for (i, leaf), parts in qkv.items():
    out[f"visual.transformer.resblocks.{i}.attn.in_proj_{leaf}"] = np.concatenate([parts[c] for c in "qkv"])
  return out


def _check_vision(ref_model, x, name, image_size):
  px = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    ref = ref_model(px, output_hidden_states=True)
  model, variables = load_pretrained(name, _sd(ref_model), image_size=image_size)
  layers = ref_model.config.num_hidden_layers
  taps = ldifs.default_taps(layers)
  out = jax.jit(model.apply, static_argnames="feature_blocks")(variables, x, feature_blocks=taps)
  want = ref.image_embeds.numpy()
  errs = {"embedding": _rel_err(out["embedding"], want)}
  errs["pre_logits"] = _rel_err(out["pre_logits"], want / np.linalg.norm(want, axis=-1, keepdims=True))
  for k in taps:  # hidden_states[0] is the sequence after pre_layrnorm, as the LDIFS code's first tap
    errs[k] = _rel_err(out["blocks"][k], ref.hidden_states[k].numpy())
  assert max(errs.values()) < 1e-4, errs
  np.testing.assert_array_equal(out["logits"], out["pre_logits"])  # no head: logits are the pre-logits
  return variables


def test_vision_parity_and_openai_names():
  ref_model = _vision_reference(**_VISION)
  variables = _check_vision(ref_model, _images(), "CLIP-testing", 32)
  openai_sd = _to_openai(_sd(ref_model))
  assert "visual.transformer.resblocks.1.attn.in_proj_weight" in openai_sd and "visual.proj" in openai_sd
  _, openai_variables = load_pretrained("CLIP-testing", openai_sd, image_size=32)
  jax.tree.map(np.testing.assert_array_equal, openai_variables, variables)


def test_openai_in_proj_layout_is_torch_multihead_attention():
  """The split of in_proj into q/k/v follows nn.MultiheadAttention's arithmetic (OpenAI's attention module)."""
  torch.manual_seed(0)
  mha = torch.nn.MultiheadAttention(32, 2, batch_first=True).eval()
  x = torch.randn(2, 5, 32)
  with torch.no_grad():
    want = mha(x, x, x, need_weights=False)[0].numpy()
  sd = {f"transformer.resblocks.0.attn.{k}": v.numpy() for k, v in mha.state_dict().items()}
  attn = clip_weights.load_clip_state_dict(sd)["text"]["resblocks_0"]["attn"]
  got = clip.Attention(2).apply({"params": attn}, jnp.asarray(x.numpy()))
  assert _rel_err(got, want) < 1e-5


@pytest.mark.slow
def test_vision_parity_b32_shaped():
  """CLIPVisionConfig's defaults are ViT-B/32 (768 wide, 12 blocks, 224 px, projection 512)."""
  ref_model = _vision_reference(projection_dim=512)
  _check_vision(ref_model, _images(2, 224), "CLIP-ViT-B/32", 224)


def _write_bpe(tmp_path):
  """A tiny CLIP BPE vocabulary: letters, their end-of-word forms, a few merges, the two special tokens last."""
  letters = sorted(set("".join(_WORDS)) | {"."})
  toks = letters + [c + "</w>" for c in letters] + [a + b for a, b in _MERGES] + ["<|startoftext|>", "<|endoftext|>"]
  vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
  vocab.write_text(json.dumps({t: i for i, t in enumerate(toks)}))
  merges.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
  return str(vocab), str(merges), len(toks)


@pytest.mark.parametrize("legacy_eos", [False, True])
def test_text_tower_parity(tmp_path, legacy_eos):
  """transformers pools the first eos_token_id position, or (its legacy eos_token_id=2) the arg-max id as OpenAI."""
  vocab, merges, v = _write_bpe(tmp_path)
  ids = clip_text.tokenize(["a photo of a cat.", "the dog", "a bird"], vocab, merges, context_length=16)
  assert ids.shape == (3, 16) and np.all(ids[:, 0] == v - 2) and np.all(ids[:, -1] == v - 1)
  config = transformers.CLIPTextConfig(**_text_config(v, 2 if legacy_eos else v - 1))
  ref_model = _randomise(transformers.CLIPTextModelWithProjection(config), 3)
  with torch.no_grad():
    ref = ref_model(torch.from_numpy(ids.astype(np.int64)))
  text = clip_weights.load_clip_state_dict(_sd(ref_model))["text"]
  model = clip_text.CLIPTextTransformer(vocab_size=v, context_length=16, width=32, num_layers=2, num_heads=2,
                                        embed_dim=16, eos_token_id=None if legacy_eos else v - 1)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  out = model.apply({"params": weights.restore_into(shapes, text)}, jnp.asarray(ids))
  assert _rel_err(out["embedding"], ref.text_embeds.numpy()) < 1e-4
  assert _rel_err(out["last_hidden"], ref.last_hidden_state.numpy()) < 1e-4


def _full_clip(v, seed=5):
  config = transformers.CLIPConfig(text_config=_text_config(v, v - 1), vision_config=_VISION, projection_dim=16)
  return _randomise(transformers.CLIPModel(config), seed)


def test_zero_shot_head_from_classnames_matches_clip(tmp_path):
  """load_pretrained with class names gives transformers' CLIPModel logits_per_image, prompt by prompt."""
  vocab, merges, v = _write_bpe(tmp_path)
  ref_model = _full_clip(v)
  classes, template = ["cat", "dog", "bird"], "a photo of a {}."
  ids = clip_text.tokenize([template.format(c) for c in classes], vocab, merges, context_length=16)
  x = _images(4)
  with torch.no_grad():
    want = ref_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                     pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits_per_image.numpy()
  torch.save(ref_model.state_dict(), tmp_path / "clip.bin")
  model, variables = load_pretrained("CLIP-testing", str(tmp_path / "clip.bin"), image_size=32, classnames=classes,
                                     templates=[template], vocab_file=vocab, merges_file=merges)
  got = jax.jit(model.apply)(variables, x)["logits"]
  assert got.shape == (4, 3) and _rel_err(got, want) < 1e-4


def test_zero_shot_head_from_embedding_file(tmp_path):
  emb = np.random.RandomState(0).randn(5, 16).astype(np.float32) * 3.0
  np.save(tmp_path / "text.npy", emb)
  ref_model = _vision_reference(**_VISION)
  model, variables = load_pretrained("CLIP-testing", _sd(ref_model), image_size=32,
                                     text_embeddings=str(tmp_path / "text.npy"))
  assert model.num_classes == 5
  out = jax.jit(model.apply)(variables, _images())
  # No logit_scale in a vision-only checkpoint: OpenAI's 100.
  cos = out["pre_logits"] @ (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).T
  np.testing.assert_allclose(out["logits"], 100.0 * cos, rtol=1e-5, atol=1e-4)
  assert np.all(np.abs(out["logits"]) <= 100.0 + 1e-3)


def test_position_embedding_resized_for_another_image_size():
  ref_model = _vision_reference(**_VISION)
  model, variables = load_pretrained("CLIP-testing", _sd(ref_model), image_size=48)
  assert variables["params"]["positional_embedding"].shape == (37, 32)  # 6x6 patches + class token
  assert jax.jit(model.apply)(variables, _images(1, 48))["pre_logits"].shape == (1, 16)


def test_errors():
  sd = _sd(_vision_reference(**_VISION))
  with pytest.raises(ValueError, match=r"No CLIP mapping.*'vision_model.extra.weight' \(2,\)"):
    load_pretrained("CLIP-testing", {**sd, "vision_model.extra.weight": np.zeros(2, np.float32)}, image_size=32)
  with pytest.raises(ValueError, match=r"classnames need CLIP's text tower"):
    load_pretrained("CLIP-testing", sd, image_size=32, classnames=["cat"])
  with pytest.raises(ValueError, match=r"shape mismatch at 'resblocks_0/mlp/c_fc/kernel'.*\(768, 3072\)"):
    load_pretrained("CLIP-ViT-B/32", sd, image_size=32)


def _analytic_size(cfg, res):
  """An OpenAI CLIP image tower's parameter count from its widths, counted by hand."""
  d, p, e = cfg["width"], cfg["patch_size"], cfg["embed_dim"]
  block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
  return 3 * p * p * d + d + ((res // p)**2 + 1) * d + 2 * d + cfg["num_layers"] * block + 2 * d + d * e


@pytest.mark.parametrize("name", ["CLIP-ViT-B/32", "CLIP-ViT-B/16", "CLIP-ViT-L/14"])
def test_parameter_counts(name):
  shapes = jax.eval_shape(get_model(name, None).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  assert count == _analytic_size(CLIP_CONFIGS[name], 224)
  if name == "CLIP-ViT-B/32":
    assert count == 87_849_216  # OpenAI's ViT-B/32 `visual` tower


class _JitVisual(torch.nn.Module):

  def __init__(self):
    super().__init__()
    self.class_embedding = torch.nn.Parameter(torch.randn(4))
    self.ln_pre = torch.nn.LayerNorm(4)

  def forward(self, x):
    return self.ln_pre(x + self.class_embedding)


class _JitClip(torch.nn.Module):
  """A TorchScript archive with OpenAI's key names, as OpenAI's own `ViT-B-32.pt` files are."""

  def __init__(self):
    super().__init__()
    self.visual = _JitVisual()
    self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(100.0), dtype=torch.float32))

  def forward(self, x):
    return self.visual(x) * self.logit_scale


def test_reads_openai_torchscript_archives(tmp_path):
  torch.manual_seed(0)
  module = _JitClip()
  torch.jit.save(torch.jit.script(module), str(tmp_path / "ViT-tiny.pt"))
  loaded = clip_weights.load_clip_state_dict(str(tmp_path / "ViT-tiny.pt"))
  np.testing.assert_array_equal(loaded["visual"]["class_embedding"], module.visual.class_embedding.detach().numpy())
  assert sorted(loaded["visual"]["ln_pre"]) == ["bias", "scale"]
  assert abs(loaded["logit_scale"] - 100.0) < 1e-3


def test_round_trip_through_ftcal_npz(tmp_path):
  emb = np.random.RandomState(0).randn(3, 16).astype(np.float32)
  _, variables = load_pretrained("CLIP-testing", _sd(_vision_reference(**_VISION)), image_size=32, text_embeddings=emb)
  weights.save_npz(variables["params"], str(tmp_path / "clip.npz"))
  model, again = load_pretrained("CLIP-testing", str(tmp_path / "clip.npz"), image_size=32)
  assert model.num_classes == 3
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_zero_shot_head_script_writes_the_embeddings_load_pretrained_uses(tmp_path):
  """experiments/clip_zero_shot_head.py, from a class-names file: its .npy gives the same head as classnames=."""
  vocab, merges, v = _write_bpe(tmp_path)
  ref_model = _full_clip(v)
  torch.save(ref_model.state_dict(), tmp_path / "clip.bin")
  (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [
      sys.executable,
      os.path.join(repo, "experiments", "clip_zero_shot_head.py"), "--model", "CLIP-testing", "--checkpoint",
      str(tmp_path / "clip.bin"), "--vocab", vocab, "--merges", merges, "--classnames_file",
      str(tmp_path / "classes.txt"), "--out",
      str(tmp_path / "text.npy")
  ]
  subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": repo}, capture_output=True)
  assert np.load(tmp_path / "text.npy").shape == (3, 16)
  kw = dict(image_size=32)
  _, from_file = load_pretrained("CLIP-testing", str(tmp_path / "clip.bin"), text_embeddings=str(tmp_path / "text.npy"),
                                 **kw)
  _, from_names = load_pretrained("CLIP-testing", str(tmp_path / "clip.bin"), classnames=["cat", "dog", "bird"],
                                  vocab_file=vocab, merges_file=merges, **kw)
  np.testing.assert_allclose(from_file["params"]["head"]["kernel"], from_names["params"]["head"]["kernel"], rtol=1e-5,
                             atol=1e-6)
