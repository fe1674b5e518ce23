"""The paper's three metrics, on fixed embeddings (numpy arrays; read-only memmaps are fine).

  * clustering: KMeans with k = number of labels, V-measure, over stratified 10 folds (mean and std);
  * pair classification: cosine similarity, accuracy at the best threshold (the scan of sentence-transformers'
    BinaryClassificationEvaluator) and average precision (sklearn);
  * retrieval: cosine ranking, nDCG@10 (trec_eval's definition: linear gain, log2 discount, ideal over the judged
    relevant documents), MRR@10 and recall@100, with the corpus scored in blocks of queries.

tests/test_eval_metrics.py checks each against sentence-transformers, sklearn, pytrec_eval or a direct loop.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, v_measure_score
from sklearn.model_selection import StratifiedKFold


def normalize(x: np.ndarray) -> np.ndarray:
  """Unit rows in float32 (a copy); zero rows stay zero instead of turning into NaN."""
  x = np.asarray(x, dtype=np.float32)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------------

# A fold must hold at least this many texts of each class. With one text a class per fold, KMeans with k = classes
# puts each text in its own cluster and scores V = 1.0 whatever the model (10 texts a class over 10 folds did).
MIN_PER_CLASS_PER_FOLD = 5


def clustering_folds(labels, n_folds: int, seed: int) -> list[np.ndarray]:
  """Indices of each stratified fold: each fold is a class-balanced tenth of the set, clustered on its own.

  Fewer folds are used when the smallest class cannot give each fold MIN_PER_CLASS_PER_FOLD texts; a class with
  fewer texts than that in all raises ValueError (nothing could be measured).
  """
  labels = np.asarray(labels)
  classes, counts = np.unique(labels, return_counts=True)
  if counts.min() < MIN_PER_CLASS_PER_FOLD:
    raise ValueError(f"class {classes[counts.argmin()]!r} has {counts.min()} texts; clustering needs at least "
                     f"{MIN_PER_CLASS_PER_FOLD} a class in every fold ({MIN_PER_CLASS_PER_FOLD * n_folds} a class for "
                     f"{n_folds} folds): with fewer, KMeans scores any model near 1.0. Build the set with more texts "
                     "per class")
  n_folds = min(n_folds, int(counts.min()) // MIN_PER_CLASS_PER_FOLD)
  if n_folds < 2:
    return [np.arange(len(labels))]  # too few to split: cluster the whole set once
  skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
  return [test for _, test in skf.split(np.zeros(len(labels)), labels)]


def v_measure_folds(embeddings: np.ndarray, labels, n_folds: int = 10, seed: int = 0) -> dict:
  """KMeans (k = labels in the fold) on raw embeddings of each fold, as MTEB's clustering; V-measure per fold.

  Raw, not unit-normalised, embeddings: the paper and MTEB cluster what the model outputs.
  """
  labels = np.asarray(labels)
  scores = []
  for idx in clustering_folds(labels, n_folds, seed):
    idx = np.sort(idx)
    x, y = np.asarray(embeddings[idx], dtype=np.float32), labels[idx]
    k = len(np.unique(y))
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    scores.append(float(v_measure_score(y, pred)))
  return {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores)), "folds": scores,
          "n": int(len(labels)), "k": int(len(np.unique(labels)))}


def knn_accuracy(embeddings: np.ndarray, labels, k: int = 10, block: int = 2048) -> dict:
  """Leave-one-out k-nearest-neighbour class accuracy (cosine; majority vote, ties to the nearer neighbour's class).

  The local structure V-measure can hide: a model can keep its class centroids apart while the neighbourhoods of
  small or untaught classes dissolve. Returns the mean over texts and the accuracy of each class.
  """
  labels = np.asarray(labels)
  classes, y = np.unique(labels, return_inverse=True)
  x = normalize(embeddings)
  n = len(y)
  k = min(k, n - 1)
  correct = np.zeros(n, bool)
  for s in range(0, n, block):
    sims = x[s:s + block] @ x.T                                     # (b, n)
    sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf  # not itself
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, nn, axis=1), axis=1)
    nn_labels = y[np.take_along_axis(nn, order, axis=1)]             # (b, k), nearest first
    for i, row in enumerate(nn_labels):
      votes = np.bincount(row, minlength=len(classes))
      best = np.flatnonzero(votes == votes.max())
      pred = best[0] if len(best) == 1 else next(c for c in row if c in best)
      correct[s + i] = pred == y[s + i]
  per_class = {str(c): float(correct[y == j].mean()) for j, c in enumerate(classes)}
  return {"knn_accuracy": float(correct.mean()), "knn_k": int(k), "knn_per_class": per_class}


# ---------------------------------------------------------------------------------------------------------------
# Pair classification
# ---------------------------------------------------------------------------------------------------------------

def pair_cosine(emb: np.ndarray, left: np.ndarray, right: np.ndarray, block: int = 65536) -> np.ndarray:
  """cos(emb[left[i]], emb[right[i]]) for each pair, in blocks (no (pairs, H) copy of the whole set)."""
  out = np.empty(len(left), np.float32)
  for s in range(0, len(left), block):
    a, b = normalize(emb[left[s:s + block]]), normalize(emb[right[s:s + block]])
    out[s:s + block] = np.einsum("ij,ij->i", a, b)
  return out


def best_accuracy_threshold(scores, labels) -> tuple[float, float]:
  """Highest accuracy of `score >= t` over all thresholds t, and that t (midpoint between score groups).

  The same scan as BinaryClassificationEvaluator.find_best_acc_and_threshold, vectorised: sort by score
  descending; after each group of equal scores, everything so far is predicted positive.
  """
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels).astype(np.int64)
  n = len(scores)
  if n == 0:
    raise ValueError("no pairs")
  order = np.argsort(-scores, kind="stable")
  s, y = scores[order], labels[order]
  tp = np.cumsum(y == 1)                     # positives predicted positive after position i
  tn = (y == 0).sum() - np.cumsum(y == 0)    # negatives still predicted negative
  last_of_group = np.r_[s[1:] != s[:-1], True]
  acc = (tp + tn) / n
  best_acc, best_t = (y == 0).sum() / n, float(np.nextafter(s[0], np.inf))  # threshold above all: all negative
  cand = np.flatnonzero(last_of_group)
  i = cand[np.argmax(acc[cand])]
  if acc[i] > best_acc:
    best_acc = float(acc[i])
    best_t = float(s[i]) if i == n - 1 else float((s[i] + s[i + 1]) / 2)
  return float(best_acc), best_t


def pair_classification(scores, labels) -> dict:
  acc, threshold = best_accuracy_threshold(scores, labels)
  return {"accuracy": acc, "threshold": threshold,
          "average_precision": float(average_precision_score(np.asarray(labels), np.asarray(scores))),
          "n": int(len(labels)), "positives": int(np.sum(np.asarray(labels) == 1))}


# ---------------------------------------------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------------------------------------------

def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Top-k corpus indices and cosine scores per query, (Q, k) each, ranked by score then corpus index.

  Blocks of `block` queries against the whole corpus: memory is block x N scores, never Q x N.
  """
  corpus_n = normalize(corpus)
  k = min(k, len(corpus_n))
  idx = np.empty((len(queries), k), np.int64)
  val = np.empty((len(queries), k), np.float32)
  for s in range(0, len(queries), block):
    sims = normalize(queries[s:s + block]) @ corpus_n.T   # (b, N)
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else \
        np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    part_scores = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)     # score descending, ties by corpus index
    idx[s:s + block] = np.take_along_axis(part, order, axis=1)
    val[s:s + block] = np.take_along_axis(part_scores, order, axis=1)
  return idx, val


def retrieval_scores(ranked: np.ndarray, relevant: list[set[int]], ndcg_k: int = 10, mrr_k: int = 10,
                     recall_k: int = 100) -> dict:
  """nDCG@k, MRR@k and recall@k from ranked corpus indices (Q, >= max k) and each query's relevant set."""
  discounts = 1.0 / np.log2(np.arange(2, max(ndcg_k, 1) + 2))
  ndcg, mrr, recall = [], [], []
  for row, rel in zip(ranked, relevant):
    hits = np.fromiter((d in rel for d in row), bool, len(row))
    dcg = float(discounts[:ndcg_k][hits[:ndcg_k]].sum())
    ideal = float(discounts[:min(len(rel), ndcg_k)].sum())
    ndcg.append(dcg / ideal)
    first = np.flatnonzero(hits[:mrr_k])
    mrr.append(1.0 / (first[0] + 1) if len(first) else 0.0)
    recall.append(hits[:recall_k].sum() / len(rel))
  return {f"ndcg@{ndcg_k}": float(np.mean(ndcg)), f"mrr@{mrr_k}": float(np.mean(mrr)),
          f"recall@{recall_k}": float(np.mean(recall)), "queries": len(relevant)}


def retrieval(queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]], block: int = 256) -> dict:
  ranked, _ = top_k(queries, corpus, 100, block)
  out = retrieval_scores(ranked, relevant)
  out["documents"] = int(len(corpus))
  return out
