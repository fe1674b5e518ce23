"""The benchmark's tasks: read a set, embed its texts with one model (through the cache), score them.

Each task returns a dict of metrics whose `main` is the number that goes into the table, or raises TaskSkipped
with the reason when its set was not built (e.g. no citation data). A malformed set raises sets.SetError.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from physbert_jax.evaluation import embed_cache, scores, sets

TASKS = ("clustering", "citation", "retrieval") + tuple(f"subdomain-{d}" for d in sets.SUBDOMAINS)
# Column titles and the metric shown, as in the paper's Table 1.
MAIN_METRIC = {"clustering": "v_measure", "citation": "accuracy", "retrieval": "ndcg@10",
               **{f"subdomain-{d}": "v_measure" for d in sets.SUBDOMAINS}}


class TaskSkipped(Exception):
  """The task cannot run on these sets; str(e) is the reason shown in the report."""


@dataclasses.dataclass
class Context:
  sets_dir: str
  cache_dir: str
  seed: int = 0
  batch_size: int = 64
  folds: int = 10
  # Classes the model was trained on as pairs (the category pair set's classes): clustering is then also reported
  # on them and on the others separately, so forgetting of untaught classes is visible. None: not split.
  trained_classes: frozenset | None = None
  _sha: dict = dataclasses.field(default_factory=dict)

  def path(self, name: str) -> str:
    return os.path.join(self.sets_dir, name)

  def sha256(self, name: str) -> str:
    if name not in self._sha:
      self._sha[name] = sets.sha256_file(self.path(name))
    return self._sha[name]

  def require(self, name: str) -> str:
    """The path of a set file, or TaskSkipped with the reason the builder recorded for its absence."""
    path = self.path(name)
    if not os.path.exists(path):
      reason = [n for n in sets.read_manifest(self.sets_dir).get("capped", []) if "not built" in n]
      raise TaskSkipped(reason[0] if reason else f"{path} not found")
    return path


def set_files(task: str) -> list[tuple[str, str]]:
  """(file name, schema) of the sets a task reads."""
  if task == "clustering":
    return [(sets.CLUSTERING, "labelled")]
  if task == "citation":
    return [(sets.CITATION, "pairs")]
  if task == "retrieval":
    return [(sets.RETRIEVAL_QUERIES, "queries"), (sets.RETRIEVAL_CORPUS, "corpus")]
  if task.startswith("subdomain-"):
    return [(sets.subdomain_file(task[len("subdomain-"):]), "labelled")]
  raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def validate(ctx: Context, task: str) -> None:
  """Read every row of the task's files now, so a bad file stops the run before any model is encoded."""
  for name, schema in set_files(task):
    if os.path.exists(ctx.path(name)):
      for _ in sets.read_rows(ctx.path(name), schema):
        pass


def _embed_field(ctx: Context, encoder, name: str, schema: str, field: str, n: int) -> np.ndarray:
  texts = (row[field] for row in sets.read_rows(ctx.path(name), schema))
  return embed_cache.embed(encoder, texts, n, ctx.cache_dir, ctx.sha256(name), field, ctx.batch_size,
                           desc=f"{encoder.name} {name}")


def labelled_embeddings(ctx: Context, encoder, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(embeddings, labels) of a labelled set (clustering, subdomain)."""
  path = ctx.require(name)
  labels = np.array([r["label"] for r in sets.load_rows(path, "labelled", ("label",))])
  return _embed_field(ctx, encoder, name, "labelled", "text", len(labels)), labels


def clustering(ctx: Context, encoder, name: str = sets.CLUSTERING) -> dict:
  emb, labels = labelled_embeddings(ctx, encoder, name)
  if len(np.unique(labels)) < 2:
    raise TaskSkipped(f"{ctx.path(name)}: fewer than 2 labels, nothing to cluster")
  try:
    out = scores.v_measure_folds(emb, labels, ctx.folds, ctx.seed)
  except ValueError as e:
    raise TaskSkipped(f"{ctx.path(name)}: {e}") from None
  out["main"] = out["v_measure"]
  out.update(scores.knn_accuracy(emb, labels))
  if ctx.trained_classes is not None:
    for group, keep in (("trained", True), ("untrained", False)):
      sel = np.isin(labels, sorted(ctx.trained_classes)) == keep
      if len(np.unique(labels[sel])) >= 2 and np.unique(labels[sel], return_counts=True)[1].min() >= \
          scores.MIN_PER_CLASS_PER_FOLD:
        v = scores.v_measure_folds(emb[sel], labels[sel], ctx.folds, ctx.seed)
        out[f"v_measure_{group}"], out[f"v_measure_{group}_std"] = v["v_measure"], v["v_measure_std"]
        out[f"classes_{group}"] = sorted(np.unique(labels[sel]).tolist())
  return out


def citation(ctx: Context, encoder) -> dict:
  path = ctx.require(sets.CITATION)
  rows = sets.load_rows(path, "pairs", ("text1", "text2", "label"))
  # A paper is in many pairs: encode each distinct title once.
  index: dict[str, int] = {}
  for r in rows:
    index.setdefault(r["text1"], len(index))
    index.setdefault(r["text2"], len(index))
  emb = embed_cache.embed(encoder, iter(index), len(index), ctx.cache_dir, ctx.sha256(sets.CITATION),
                          "distinct-titles", ctx.batch_size, desc=f"{encoder.name} {sets.CITATION}")
  left = np.array([index[r["text1"]] for r in rows])
  right = np.array([index[r["text2"]] for r in rows])
  labels = np.array([r["label"] for r in rows])
  out = scores.pair_classification(scores.pair_cosine(emb, left, right), labels)
  out["main"] = out["accuracy"]
  return out


def retrieval(ctx: Context, encoder) -> dict:
  qpath, cpath = ctx.require(sets.RETRIEVAL_QUERIES), ctx.require(sets.RETRIEVAL_CORPUS)
  queries = sets.load_rows(qpath, "queries", ("id", "relevant"))
  corpus_ids = [r["id"] for r in sets.load_rows(cpath, "corpus", ("id",))]
  position = {pid: i for i, pid in enumerate(corpus_ids)}
  relevant = []
  for q in queries:
    missing = [d for d in q["relevant"] if d not in position]
    if missing:
      raise sets.SetError(f"{qpath}: query {q['id']!r}: relevant ids {missing[:3]} are not in {cpath}")
    relevant.append({position[d] for d in q["relevant"]})
  q_emb = _embed_field(ctx, encoder, sets.RETRIEVAL_QUERIES, "queries", "text", len(queries))
  c_emb = _embed_field(ctx, encoder, sets.RETRIEVAL_CORPUS, "corpus", "text", len(corpus_ids))
  out = scores.retrieval(q_emb, c_emb, relevant)
  out["main"] = out["ndcg@10"]
  return out


def run(ctx: Context, encoder, task: str) -> dict:
  if task == "clustering":
    return clustering(ctx, encoder)
  if task == "citation":
    return citation(ctx, encoder)
  if task == "retrieval":
    return retrieval(ctx, encoder)
  if task.startswith("subdomain-"):
    return clustering(ctx, encoder, sets.subdomain_file(task[len("subdomain-"):]))
  raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
