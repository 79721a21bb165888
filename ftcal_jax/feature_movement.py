"""The feature picture: how fine-tuning on S moves the test features of every class, absent ones included.

The pre-trained and fine-tuned features are the same network's pre-logits (the input of the linear head) before
and after FT: the same dimension D, and the same coordinates in the sense that FT starts from the pre-trained
weights and moves them a little. So a class's movement is a vector of that one space:

  m_c = mean over test samples of c of f_FT(x) - mean over the same samples of f_pre(x)     (D,)

For each U class u, its nearest S class s(u) is the S class whose PRE-TRAINED test-feature mean is closest in
cosine; the report gives cos(m_u, m_s(u)) per U class and its mean, beside a baseline: the mean of cos(m_u, m_s)
over ALL S classes s (a shared domain shift moves every class alike; "moves with its nearest S class" means more
than that baseline), and both again for the centred movements m_c - mean_{s in S} m_s, where that shared shift is
taken out. The same numbers back the toy example (experiments/toy_section6.py).

`tsne` embeds a seeded subsample of the test features with scikit-learn's TSNE (off by default: it is the slow
part), separately for the pre-trained and the fine-tuned features, the same samples in both.
"""

import time
from typing import Any, Dict, Mapping, Sequence

import numpy as np

_DIGITS = 3  # t-SNE coordinates are stored rounded (they are only drawn).


def class_means(features: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
  """(K, D) mean feature of each class in `classes` (NaN rows for classes without samples)."""
  features = np.asarray(features, np.float64)
  out = np.full((len(classes), features.shape[1]), np.nan)
  for i, c in enumerate(classes):
    rows = features[np.asarray(labels) == c]
    if rows.shape[0]:
      out[i] = rows.mean(axis=0)
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(norms > 0, x / norms, np.nan)


def movement_cosines(pre: np.ndarray, ft: np.ndarray, labels: np.ndarray, seen: Sequence[int],
                     absent: Sequence[int]) -> Dict[str, Any]:
  """Cosines between each U class's feature movement and that of its nearest S class.

  Args:
    pre, ft: (N, D) pre-trained and fine-tuned features of the same N samples, in the same order.
    labels: (N,) their labels.
    seen, absent: the class ids of S and U.

  Returns:
    {'absent': U ids, 'nearest_seen': the nearest S id of each (by cosine of the pre-trained class means),
    'cos_nearest': cos(m_u, m_s(u)) per U class, 'cos_all_seen': mean over S of cos(m_u, m_s) per U class,
    'mean_cos_nearest', 'mean_cos_all_seen' (means over the U classes with samples)}, and the same four with
    '_centred' for the movements minus the mean S movement (the shift every class shares).
  """
  seen, absent = [int(c) for c in seen], [int(c) for c in absent]
  pre_s, pre_u = class_means(pre, labels, seen), class_means(pre, labels, absent)
  move_s = class_means(ft, labels, seen) - pre_s
  move_u = class_means(ft, labels, absent) - pre_u
  # nan_to_num: an S class without samples never wins, a U class without samples gets NaN below.
  nearest = np.argmax(np.nan_to_num(_unit(pre_u) @ _unit(pre_s).T, nan=-np.inf), axis=1)
  out: Dict[str, Any] = {"absent": absent, "nearest_seen": [seen[i] for i in nearest]}
  # Centred: the mean S movement (the shift shared by every class) taken out of both sides first.
  shared = np.nanmean(move_s, axis=0) if np.isfinite(move_s).any() else np.zeros(move_s.shape[1])
  for suffix, (mu, ms) in (("", (move_u, move_s)), ("_centred", (move_u - shared, move_s - shared))):
    out.update({f"{k}{suffix}": v for k, v in _nearest_and_all(_unit(mu) @ _unit(ms).T, nearest).items()})
  return out


def _nearest_and_all(cos: np.ndarray, nearest: np.ndarray) -> Dict[str, Any]:
  """From the (|U|, |S|) cosines: per U class its cosine with the nearest S class and its mean over S, and means."""
  cos_nearest = cos[np.arange(cos.shape[0]), nearest]
  ok = np.isfinite(cos)
  with np.errstate(invalid="ignore", divide="ignore"):
    cos_all = np.where(ok, cos, 0.0).sum(axis=1) / ok.sum(axis=1)  # NaN for a U class without samples.
  finite = np.isfinite(cos_nearest)
  mean = lambda v: float(v[finite].mean()) if finite.any() else float("nan")
  return {
      "cos_nearest": cos_nearest.tolist(), "cos_all_seen": cos_all.tolist(), "mean_cos_nearest": mean(cos_nearest),
      "mean_cos_all_seen": mean(cos_all)
  }


def tsne(pre: np.ndarray, ft: np.ndarray, labels: np.ndarray, *, max_points: int, perplexity: float,
         seed: int) -> Dict[str, Any]:
  """2-D t-SNE embeddings of the pre-trained and fine-tuned features of one seeded subsample.

  Args:
    pre, ft: (N, D) features of the same samples.
    labels: (N,) their labels.
    max_points: subsample size (all N when N is smaller).
    perplexity: TSNE's perplexity (lowered to (n - 1) / 3 for tiny n, as TSNE requires perplexity < n).
    seed: seeds the subsample and TSNE.

  Returns:
    {'labels': (n,) labels of the subsample, 'pretrained', 'finetune': (n, 2) coordinates as lists, 'seconds'}.
  """
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top  (optional dependency, slow import)
  t0 = time.time()
  rng = np.random.default_rng(seed)
  n = labels.shape[0]
  idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
  perplexity = float(min(perplexity, max(1.0, (idx.size - 1) / 3)))
  out: Dict[str, Any] = {"labels": np.asarray(labels)[idx].tolist()}
  for key, feats in (("pretrained", pre), ("finetune", ft)):
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca",
               random_state=seed).fit_transform(np.asarray(feats, np.float32)[idx])
    out[key] = np.round(emb, _DIGITS).tolist()
  out["seconds"] = time.time() - t0
  return out


def section(pre: Any, ft: Any, class_split: Any, options: Mapping[str, Any], seed: int = 0) -> Dict[str, Any]:
  """The report's `feature_movement` section from the test Predictions of the pre-trained and FT models.

  Args:
    pre, ft: evaluation.Predictions (features (N, D), labels (N,)) on the same test samples.
    class_split: the job's ClassSplit.
    options: config.analyses (feature_tsne, tsne_points, tsne_perplexity).
    seed: seeds the t-SNE subsample.

  Returns:
    movement_cosines' dict and, when options['feature_tsne'], 'tsne' (see `tsne`, without its 'seconds': the
    report holds results only, so the same run twice gives the same report).
  """
  if not np.array_equal(pre.labels, ft.labels):
    raise ValueError("feature movement needs the pre-trained and FT features of the same test samples.")
  out = movement_cosines(pre.features, ft.features, ft.labels, class_split.seen, class_split.absent)
  if options.get("feature_tsne"):
    out["tsne"] = tsne(pre.features, ft.features, ft.labels, max_points=int(options.get("tsne_points", 2000)),
                       perplexity=float(options.get("tsne_perplexity", 30.0)), seed=seed)
    out["tsne"].pop("seconds")
  return out
