"""Exact-value tests of the report on a fake model with fixed logits (scenic's habit), and its files.

The fixed logits: C = 4, S = {0, 1}, U = {2, 3}; 8 test samples (s1..s4 of S, u1..u4 of U). Each sample's
breakpoint is gamma_i = max_S z - max_U z; it predicts U exactly when gamma > gamma_i. Every number asserted below
was worked out by hand from these tables (see the comments), not by running the code.
"""

import json
import os

import numpy as np
import pytest

from ftcal_jax.class_split import ClassSplit
from ftcal_jax.evaluation import Predictions
from ftcal_jax import report as report_lib
from ftcal_jax import report_markdown

LABELS = np.array([0, 1, 0, 1, 2, 3, 2, 3])

# Fine-tuned model.        gamma_i  S-top right  U-top right
FT_LOGITS = np.array([
    [3.0, 1.0, 0.0, 0.0],  # s1  3.0   yes          -
    [1.0, 2.0, 1.5, 0.0],  # s2  0.5   yes          -
    [1.0, 5.0, 1.0, 0.0],  # s3  4.0   no           -
    [0.0, 4.0, 0.5, 0.0],  # s4  3.5   yes          -
    [2.0, 0.0, 1.0, 0.0],  # u1  1.0   -            yes
    [2.5, 0.0, 0.0, 1.0],  # u2  1.5   -            yes
    [1.0, 0.0, 0.0, 0.25],  # u3  0.75  -            no
    [0.0, 1.0, 0.0, 2.0],  # u4 -1.0   -            yes
])
# At gamma = 0: S right s1 s2 s4 (75%), U right u4 (25%), all 4/8 (50%). Within S: s3 wrong (75%); within U:
# u3 wrong (75%). Correct counts per gamma interval peak uniquely at 5/8 on (1.5, 3): gamma* lies there, with
# Acc_s/y 50 (s1, s4), Acc_u/y 75 (u1, u2, u4). Path from gamma = +inf: (0, .75) -> (.25, .75) -> (.5, .75) ->
# (.5, .5) -> (.5, .25) -> (.75, .25) -> (.75, 0), so AUSUC = .25*.75 + .25*.75 + .25*.25 = 0.4375.

# Pre-trained model.
PRE_LOGITS = np.array([
    [1.0, 0.0, 0.0, 0.5],  # s1  0.5   yes
    [0.0, 1.0, 1.2, 0.0],  # s2 -0.2   yes
    [0.0, 1.0, 0.0, 0.0],  # s3  1.0   no
    [1.1, 0.0, 0.0, 0.0],  # s4  1.1   no
    [0.0, 0.0, 1.0, 0.0],  # u1 -1.0               yes
    [0.0, 0.0, 1.5, 0.5],  # u2 -1.5               no
    [0.3, 0.0, 0.9, 0.0],  # u3 -0.6               yes
    [0.0, 2.0, 0.0, 1.2],  # u4  0.8               yes
])
# At gamma = 0: S right s1 (25%); U right u1, u3 (50%); all 3/8. Within S: s1, s2 right (50%); within U: u2 wrong
# (75%). Path: (0, .75) -> (0, .5) -> (.25, .5) -> (.5, .5) -> (.5, .25) -> (.5, 0): AUSUC = 0.25. The best
# interval is (-0.6, -0.2) with 4/8.

# FT on its S-only training data: non-GT S logit means 1, 0, 2, 1 (mean 1); U logit means 0, 0, -.5, -.5
# (mean -.25); so ALG gamma = 1.25, inside (1, 1.5): Acc_s/y 50 (s1, s4), Acc_u/y 50 (u1, u4), Acc_y/y 50.
ALG_LOGITS = np.array([[4.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, -1.0], [5.0, 2.0, -1.0, 0.0], [1.0, 6.0, 0.0, -1.0]])
ALG_LABELS = np.array([0, 1, 0, 1])

# NCM: the training features of class c lie along axis direction c (0: +x, 1: +y, 2: -x, 3: -y).
NCM_FEATS = np.array([[2.0, 0.4], [1.0, -0.2], [0.4, 2.0], [-0.2, 1.0], [-2.0, 0.4], [-1.0, -0.2], [0.4, -2.0],
                      [-0.2, -1.0]])
NCM_LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])
# Pre-trained test features: nearest axes 0, 1, 1, 2 | 2, 3, 0, 1 -> s/y 50, u/y 50, y/y 50.
PRE_FEATS = np.array([[1, .1], [.1, 1], [0, 1], [-1, .2], [-1, 0], [.2, -1], [1, 0], [0, 1]])
# Fine-tuned test features: nearest axes 0, 1, 0, 1 | 2, 3, 2, 0 -> s/y 100, u/y 75, y/y 87.5.
FT_FEATS = np.array([[1, 0], [0, 1], [1, .5], [.5, 1], [-1, .1], [.1, -1], [-1, -.3], [1, -.5]])

# PCV: two splits found gamma 2.0 and 2.4 (mean 2.2, inside (1.5, 3)); the third found none and is skipped.
PCV = {"gammas": [2.0, 2.4, 9.0], "found": [True, True, False], "taus": [40.0, 50.0, 45.0]}

HISTORY = {
    "finetune": {
        "step": [0, 10, 20], "head_norm_seen": [1.0, 1.5, 2.0], "head_norm_absent": [1.0, 0.9, 0.8],
        "absent_update_cos": [float("nan"), 0.8, 0.9], "loss": [1.4, 0.9, 0.5]
    }
}


def _split(num_classes=4):
  return ClassSplit.from_lists(num_classes, seen=[0, 1], absent=[2, 3], remaining=range(4, num_classes))


def _inputs(extra_classes=0, extra_logit=0.0):
  """The fixed predictions, optionally with `extra_classes` head columns the dataset lacks."""
  pad = lambda z: np.concatenate([z, np.full((len(z), extra_classes), extra_logit)], axis=1)
  p = lambda z, f, y: Predictions(pad(z), np.asarray(f, np.float32), y)
  ncm_pad = np.zeros((len(NCM_LABELS), 4))  # NCM runs on features only; its logits are never used.
  return dict(
      class_split=_split(4 + extra_classes),
      test={"pretrained": p(PRE_LOGITS, PRE_FEATS, LABELS),
            "finetune": p(FT_LOGITS, FT_FEATS,
                          LABELS)}, alg_train={"finetune": p(ALG_LOGITS, np.zeros((4, 2)), ALG_LABELS)},
      ncm_train={"pretrained": p(ncm_pad, NCM_FEATS, NCM_LABELS), "finetune": p(ncm_pad, NCM_FEATS, NCM_LABELS)},
      pcv=PCV, history=HISTORY, config={"method": "finetune", "seed": 0, "lr": 1e-3})


@pytest.fixture(scope="module")
def report():
  return report_lib.build_report(**_inputs())


def _acc(report, method):
  return [report["methods"][method]["top1"][k] for k in report_lib.ACC_KEYS]


def test_accuracies_are_the_hand_computed_ones(report):
  # Columns: Acc_y/y, s/y, u/y, s/s, u/u.
  np.testing.assert_allclose(_acc(report, "pretrained"), [37.5, 25, 50, 50, 75])
  np.testing.assert_allclose(_acc(report, "finetune"), [50, 75, 25, 75, 75])
  np.testing.assert_allclose(_acc(report, "finetune+ALG"), [50, 50, 50, 75, 75])
  np.testing.assert_allclose(_acc(report, "finetune+PCV"), [62.5, 50, 75, 75, 75])
  np.testing.assert_allclose(_acc(report, "finetune+gamma*"), [62.5, 50, 75, 75, 75])
  assert list(report["methods"]) == ["pretrained", "finetune", "finetune+ALG", "finetune+PCV", "finetune+gamma*"]
  assert "top5" not in report["methods"]["finetune"]  # C = 4 < 10


def test_gammas_and_ausuc(report):
  g = report["gammas"]
  assert g["alg"]["finetune"] == pytest.approx(1.25)
  assert g["pcv"]["gamma"] == pytest.approx(2.2)
  assert g["pcv"]["found"] == [True, True, False]
  assert 1.5 < g["oracle"]["finetune"]["gamma"] < 3.0
  assert g["oracle"]["finetune"]["acc_y/y"] == pytest.approx(62.5)
  assert -0.6 < g["oracle"]["pretrained"]["gamma"] < -0.2
  assert g["oracle"]["pretrained"]["acc_y/y"] == pytest.approx(50.0)
  assert report["methods"]["finetune+ALG"]["gamma"] == pytest.approx(1.25)
  assert report["ausuc"]["finetune"] == pytest.approx(0.4375, abs=1e-6)
  assert report["ausuc"]["pretrained"] == pytest.approx(0.25, abs=1e-6)
  # The stored curve runs between the two end points (Acc_u/y = 0 and Acc_s/y = 0), in %.
  c = report["curves"]["finetune"]
  assert min(c["acc_seen"]) == 0.0 and max(c["acc_seen"]) == pytest.approx(75.0)
  assert max(c["acc_unseen"]) == pytest.approx(75.0) and min(c["acc_unseen"]) == 0.0
  # Recovery of gamma*'s Acc_y/y gain (12.5 points): ALG none, PCV all of it.
  assert g["recovery"] == {"alg": pytest.approx(0.0), "pcv": pytest.approx(1.0)}


def test_ncm_and_gains(report):
  ncm = report["ncm"]
  assert "absent" in ncm["diagnostic"]
  assert [ncm["pretrained"][k] for k in ("acc_y/y", "acc_s/y", "acc_u/y")] == pytest.approx([50, 50, 50])
  assert [ncm["finetune"][k] for k in ("acc_y/y", "acc_s/y", "acc_u/y")] == pytest.approx([87.5, 100, 75])
  assert ncm["gains"]["ncm"] == pytest.approx({"acc_y/y": 37.5, "acc_s/y": 50, "acc_u/y": 25})
  assert ncm["gains"]["nn"] == pytest.approx({"acc_y/y": 12.5, "acc_s/y": 50, "acc_u/y": -25})


def test_softmax_decomposition_matches_numpy(report):
  for key, z in (("pretrained", PRE_LOGITS), ("finetune", FT_LOGITS)):
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = p[LABELS >= 2][:, 2:].sum(1).mean()
    got = report["softmax_decomposition"][key]
    assert got["mean_p_absent_on_absent"] == pytest.approx(expected, rel=1e-5)
    assert got["acc_u/u"] == report["methods"][key]["top1"]["acc_u/u"]


def test_findings_are_computed(report):
  verdicts = [f["holds"] for f in report["findings"]]
  # FT lowers Acc_u/y (25 < 50); NCM u/y rises (50 -> 75); AUSUC .4375 > .25; FT+gamma* u/y 75 > 50;
  # ALG recovers 0% (does not hold); PCV recovers 100%.
  assert verdicts == [True, True, True, True, False, True]
  # Flip the pre-trained model's U accuracy below FT's: the first finding must flip with it.
  inputs = _inputs()
  worse = PRE_LOGITS.copy()
  worse[4:, 2:] -= 10.0  # every U sample now goes to S: pre-trained Acc_u/y = 0
  inputs["test"]["pretrained"] = Predictions(worse, PRE_FEATS, LABELS)
  flipped = report_lib.build_report(**inputs)
  assert flipped["methods"]["pretrained"]["top1"]["acc_u/y"] == 0.0
  assert flipped["findings"][0]["holds"] is False


def test_head_norm_summary(report):
  h = report["head_norms"]["finetune"]
  assert h["head_norm_seen"] == {"first": 1.0, "last": 2.0}
  assert h["head_norm_absent"] == {"first": 1.0, "last": 0.8}
  assert h["absent_update_cos"]["mean"] == pytest.approx(0.85)  # the NaN first record is skipped
  assert h["last_norm_ratio_seen_over_absent"] == pytest.approx(2.5)


def test_class_mask_drops_head_classes_the_dataset_lacks(report):
  # Two extra head classes with the largest logits would win every argmax if kept.
  masked = report_lib.build_report(**_inputs(extra_classes=2, extra_logit=9.0),
                                   class_mask=np.array([True] * 4 + [False] * 2))
  for key in report["methods"]:
    assert masked["methods"][key]["top1"] == pytest.approx(report["methods"][key]["top1"]), key
  assert masked["ausuc"] == pytest.approx(report["ausuc"])
  assert masked["gammas"]["alg"] == pytest.approx(report["gammas"]["alg"])
  assert masked["ncm"]["finetune"] == pytest.approx(report["ncm"]["finetune"])
  assert masked["head_classes"]["policy"] == "mask" and masked["head_classes"]["num_scored_classes"] == 4
  kept = report_lib.build_report(**_inputs(extra_classes=2, extra_logit=9.0))
  assert kept["head_classes"]["policy"] == "keep"
  assert kept["methods"]["finetune"]["top1"]["acc_y/y"] == 0.0


def test_top5_table_when_ten_or_more_classes(tmp_path):
  rng = np.random.default_rng(0)
  n, c = 60, 12
  labels = rng.integers(0, c, n)
  split = ClassSplit.from_lists(c, seen=range(6))
  mk = lambda: Predictions(rng.normal(size=(n, c)), rng.normal(size=(n, 3)), labels)
  rep = report_lib.build_report(class_split=split, test={"pretrained": mk(), "finetune": mk()})
  top1, top5 = rep["methods"]["finetune"]["top1"], rep["methods"]["finetune"]["top5"]
  assert all(top5[k] >= top1[k] for k in report_lib.ACC_KEYS)
  # No NCM, ALG or PCV inputs: those rows and sections are left out, and their findings say so.
  assert list(rep["methods"]) == ["pretrained", "finetune", "finetune+gamma*"]
  assert "ncm" not in rep and [f["holds"] for f in rep["findings"]][-1] is None
  paths = report_markdown.write_report(rep, str(tmp_path))
  assert "Methods (top-5)" in open(paths["markdown"]).read()


def test_bad_inputs_raise(report):
  inputs = _inputs()
  del inputs["test"]["pretrained"]
  with pytest.raises(ValueError, match="pretrained"):
    report_lib.build_report(**inputs)
  inputs = _inputs()
  # ALG on data holding absent-class samples is the official code's leak: refuse it.
  inputs["alg_train"] = {"finetune": Predictions(FT_LOGITS, FT_FEATS, LABELS)}
  with pytest.raises(ValueError, match="S-only"):
    report_lib.build_report(**inputs)
  inputs = _inputs()
  inputs["test"]["ldifz"] = inputs["test"]["finetune"]
  with pytest.raises(ValueError, match="Valid names"):
    report_lib.build_report(**inputs)


def test_write_report_files(report, tmp_path):
  paths = report_markdown.write_report(report, str(tmp_path))
  assert set(paths) == {"json", "markdown", "seen_unseen", "nn_vs_ncm", "head_norms"}
  for key in ("seen_unseen", "nn_vs_ncm", "head_norms"):
    with open(paths[key], "rb") as f:
      head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", key
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width >= 400 and height >= 300, (key, width, height)
    assert os.path.getsize(paths[key]) > 10_000
  with open(paths["json"]) as f:
    loaded = json.load(f)
  assert loaded == json.loads(json.dumps(report, allow_nan=False))
  assert loaded["methods"]["finetune+gamma*"]["top1"]["acc_y/y"] == 62.5
  md = open(paths["markdown"]).read()
  for text in ("| FT + ALG |", "figures/seen_unseen.png", "figures/nn_vs_ncm.png", "figures/head_norms.png",
               "does not hold", "Diagnostic only", "mean p(U\\|x) on U samples", "policy **keep**", "0.4375"):
    assert text in md, text


def test_write_report_without_figures_writes_the_json_only(report, tmp_path):
  paths = report_markdown.write_report(report, str(tmp_path), figures=False)
  assert paths == {"json": str(tmp_path / "report.json")} and os.listdir(tmp_path) == ["report.json"]
  # The bytes train.py wrote before the writer handled this case itself.
  with open(paths["json"]) as f:
    assert f.read() == json.dumps(report, indent=1)


def test_report_json_is_strict(report):
  assert json.loads(json.dumps(report, allow_nan=False)) == report
  # Non-finite numbers (an infinite gamma, a NaN cosine) become null rather than invalid JSON.
  assert report_lib.to_jsonable({"g": [np.inf, -np.inf, np.float32(np.nan),
                                       np.float64(1.5)]}) == {"g": [None, None, None, 1.5]}


def test_long_curves_are_thinned_for_the_figure_but_ausuc_uses_all_points():
  rng = np.random.default_rng(1)
  n = 1500
  labels = rng.integers(0, 4, n)
  mk = lambda: Predictions(rng.normal(size=(n, 4)), rng.normal(size=(n, 2)), labels)
  rep = report_lib.build_report(class_split=_split(), test={"pretrained": mk(), "finetune": mk()})
  c = rep["curves"]["finetune"]
  assert c["num_points"] > report_lib.MAX_CURVE_POINTS and c["thinned"]
  assert len(c["acc_seen"]) <= report_lib.MAX_CURVE_POINTS
  # Both end points survive the thinning.
  assert c["acc_seen"][0] == 0.0 and c["acc_unseen"][-1] == 0.0
  # The thinned path's area is close to, but computed separately from, the exact AUSUC.
  xs, ys = np.array(c["acc_seen"]) / 100, np.array(c["acc_unseen"]) / 100
  assert np.trapezoid(ys, xs) == pytest.approx(c["ausuc"], abs=5e-3)


def test_pcv_without_any_found_split_and_jax_values_in_history():
  import jax.numpy as jnp
  inputs = _inputs()
  inputs["pcv"] = {"gammas": [0.0, 0.0], "found": [False, False], "taus": [50.0, 50.0]}
  inputs["history"] = {
      "finetune": {
          "step": [0, 1], "head_norm_seen": [jnp.float32(1.0), jnp.float32(2.0)], "head_norm_absent": [1.0, 1.0],
          "absent_update_cos": [0.5, 0.5], "loss": [1.0, 0.5]
      }
  }
  rep = report_lib.build_report(**inputs)
  assert "finetune+PCV" not in rep["methods"] and rep["gammas"]["pcv"]["gamma"] is None
  assert rep["findings"][-1]["holds"] is None and "τ" in rep["findings"][-1]["evidence"]
  assert rep["history"]["finetune"]["head_norm_seen"] == [1.0, 2.0]
  assert json.loads(json.dumps(rep, allow_nan=False)) == rep
