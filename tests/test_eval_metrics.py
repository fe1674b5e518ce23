"""Reference tests: physbert_jax/evaluation/scores.py on fixed embeddings against sentence-transformers, sklearn,
pytrec_eval and direct loops, to 1e-6."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import average_precision_score, v_measure_score
from sklearn.model_selection import StratifiedKFold

from physbert_jax.evaluation import scores as metrics


def _clustered(n_per_class=60, classes=5, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim)) * 2
  labels = np.repeat([f"c{i}" for i in range(classes)], n_per_class)
  x = centers[np.repeat(np.arange(classes), n_per_class)] + rng.normal(size=(len(labels), dim))
  return x.astype(np.float32), labels


def test_v_measure_folds_matches_sklearn_run_directly():
  x, labels = _clustered()
  got = metrics.v_measure_folds(x, labels, n_folds=10, seed=3)
  expected = []
  for _, test in StratifiedKFold(10, shuffle=True, random_state=3).split(x, labels):
    test = np.sort(test)
    pred = KMeans(n_clusters=5, n_init=10, random_state=3).fit_predict(x[test])
    expected.append(v_measure_score(labels[test], pred))
  np.testing.assert_allclose(got["folds"], expected, atol=1e-6)
  assert got["v_measure"] == pytest.approx(np.mean(expected), abs=1e-6)
  assert got["v_measure_std"] == pytest.approx(np.std(expected), abs=1e-6)
  assert got["k"] == 5 and got["n"] == len(labels)


def test_v_measure_folds_with_fewer_members_than_folds():
  x, labels = _clustered(n_per_class=12, classes=3)
  got = metrics.v_measure_folds(x, labels, n_folds=10, seed=0)
  assert len(got["folds"]) == 2  # each fold keeps >= 5 texts a class: 12 // 5


def test_small_folds_are_not_trivially_perfect():
  """10 random vectors a class over 10 folds used to put one text of each class in a fold, and KMeans with k =
  classes scored 1.0 for any model. Now folds hold >= 5 a class, and random vectors score far below 1."""
  rng = np.random.default_rng(0)
  labels = np.repeat([f"c{i}" for i in range(8)], 10)
  x = rng.normal(size=(len(labels), 16)).astype(np.float32)
  got = metrics.v_measure_folds(x, labels, n_folds=10, seed=0)
  assert len(got["folds"]) == 2
  assert got["v_measure"] < 0.8
  with pytest.raises(ValueError, match="has 4 texts; clustering needs at least 5"):
    metrics.v_measure_folds(x[:-6], labels[:-6], n_folds=10, seed=0)


def test_knn_accuracy_matches_sklearn_leave_one_out():
  from sklearn.model_selection import LeaveOneOut, cross_val_predict
  from sklearn.neighbors import KNeighborsClassifier
  x, labels = _clustered(n_per_class=30, classes=2, seed=4)      # two classes, k odd: no ties to break
  x[:, 0] += 0.5
  got = metrics.knn_accuracy(x, labels, k=5)
  pred = cross_val_predict(KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute"), x, labels,
                           cv=LeaveOneOut())
  assert got["knn_accuracy"] == pytest.approx(np.mean(pred == labels), abs=1e-9)
  for c in ("c0", "c1"):
    assert got["knn_per_class"][c] == pytest.approx(np.mean(pred[labels == c] == c), abs=1e-9)


@pytest.mark.parametrize("ties", [False, True])
def test_best_accuracy_threshold_matches_sentence_transformers(ties):
  from sentence_transformers.sentence_transformer.evaluation import BinaryClassificationEvaluator
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 500)
  scores = (rng.normal(size=500) + labels * 0.8).astype(np.float32)
  if ties:
    scores = np.round(scores, 1)  # many equal scores: a threshold may not split a group
  acc, threshold = metrics.best_accuracy_threshold(scores, labels)
  ref_acc, ref_threshold = BinaryClassificationEvaluator.find_best_acc_and_threshold(scores, labels, True)
  assert acc == pytest.approx(ref_acc, abs=1e-6)
  assert threshold == pytest.approx(float(ref_threshold), abs=1e-6)
  assert ((scores >= threshold) == labels).mean() == pytest.approx(acc, abs=1e-6)


def test_best_accuracy_all_one_class():
  acc, _ = metrics.best_accuracy_threshold([0.1, 0.5, 0.3], [0, 0, 0])
  assert acc == 1.0


def test_pair_classification_cosine_and_average_precision():
  rng = np.random.default_rng(2)
  emb = rng.normal(size=(600, 8)).astype(np.float32)
  perm = rng.permutation(600)
  left, right = perm[:300], perm[300:]  # distinct pairs: no tied scores
  labels = rng.integers(0, 2, 300)
  cos = metrics.pair_cosine(emb, left, right, block=64)
  a, b = emb[left], emb[right]
  ref = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  np.testing.assert_allclose(cos, ref, atol=1e-6)
  out = metrics.pair_classification(cos, labels)
  assert out["average_precision"] == pytest.approx(average_precision_score(labels, cos), abs=1e-6)
  # AP, independently: mean over positives of the precision at their rank (scores have no ties here).
  order = np.argsort(-cos)
  hits = labels[order] == 1
  ap = np.mean((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits])
  assert out["average_precision"] == pytest.approx(ap, abs=1e-6)


def _retrieval_case(seed=4, n_queries=40, n_docs=300, dim=12):
  rng = np.random.default_rng(seed)
  corpus = rng.normal(size=(n_docs, dim)).astype(np.float32)
  relevant = [set(rng.choice(n_docs, rng.integers(1, 4), replace=False).tolist()) for _ in range(n_queries)]
  # Queries near one of their relevant docs, so ranks spread over 1..100+.
  queries = np.stack([corpus[min(r)] + rng.normal(size=dim) * 1.5 for r in relevant]).astype(np.float32)
  return queries, corpus, relevant


def test_blocked_top_k_equals_full_ranking():
  queries, corpus, _ = _retrieval_case()
  idx, val = metrics.top_k(queries, corpus, 100, block=7)
  full = metrics.normalize(queries) @ metrics.normalize(corpus).T
  ref = np.argsort(-full, axis=1, kind="stable")[:, :100]
  np.testing.assert_array_equal(idx, ref)
  np.testing.assert_allclose(val, np.take_along_axis(full, ref, axis=1), atol=1e-6)


def test_retrieval_matches_pytrec_eval_and_sentence_transformers():
  from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
  queries, corpus, relevant = _retrieval_case()
  got = metrics.retrieval(queries, corpus, relevant, block=16)
  full = metrics.normalize(queries) @ metrics.normalize(corpus).T
  qids, dids = [f"q{i}" for i in range(len(queries))], [f"d{j:04d}" for j in range(len(corpus))]
  qrels = {q: {dids[d]: 1 for d in rel} for q, rel in zip(qids, relevant)}
  run = {q: {dids[j]: float(full[i, j]) for j in range(len(corpus))} for i, q in enumerate(qids)}

  pytrec_eval = pytest.importorskip("pytrec_eval")
  trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100"}).evaluate(run)
  assert got["ndcg@10"] == pytest.approx(np.mean([trec[q]["ndcg_cut_10"] for q in qids]), abs=1e-6)
  assert got["recall@100"] == pytest.approx(np.mean([trec[q]["recall_100"] for q in qids]), abs=1e-6)

  ev = InformationRetrievalEvaluator({q: "" for q in qids}, {d: "" for d in dids},
                                     {q: set(r) for q, r in qrels.items()}, mrr_at_k=[10], ndcg_at_k=[10],
                                     accuracy_at_k=[1], precision_recall_at_k=[100], map_at_k=[100])
  st = ev.compute_metrics([[{"corpus_id": dids[j], "score": float(full[i, j])} for j in range(len(corpus))]
                           for i in range(len(qids))])
  assert got["mrr@10"] == pytest.approx(st["mrr@k"][10], abs=1e-6)
  assert got["ndcg@10"] == pytest.approx(st["ndcg@k"][10], abs=1e-6)
  assert got["recall@100"] == pytest.approx(st["recall@k"][100], abs=1e-6)
  assert 0 < got["mrr@10"] < 1 and 0 < got["recall@100"] < 1  # the case exercises partial hits
