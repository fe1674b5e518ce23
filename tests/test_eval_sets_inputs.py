"""eval.build_sets' inputs, without the shared data: the folder data_prep.arxiv_metadata writes and Kaggle's plain
snapshot give the same sets, damaged lines are counted (as in data_prep), and --clustering-years is honoured."""

import collections
import gzip
import json
import os

from eval import build_sets
from physbert_jax.evaluation import sets


def _ids(path, schema, keys=("id",)):
  return {row[k] for row in sets.read_rows(path, schema) for k in keys}


def _synthetic_snapshot(tmp_path):
  """The demo abstracts as snapshot records (6 classes x 10): half from 2010, half from 2015."""
  from clitools import snapshot_records
  rows = snapshot_records()
  for i, r in enumerate(rows):
    if (i // 6) % 2 == 0:
      r["versions"] = [{"version": "v1", "created": "Fri, 01 Jan 2010 00:00:00 GMT"}]
  return rows


SMALL = {"clustering_per_class": 5, "citation_pairs": 10, "retrieval_queries": 10, "subdomain_eval_per_class": 1,
         "subdomain_train_pairs_per_class": 1}


def test_reads_metadata_folders_plain_json_and_damaged_lines(tmp_path):
  """What data_prep.arxiv_metadata writes (a folder of papers-*.jsonl.gz) and Kaggle's plain .json give the same
  sets; a bad line and a truncated gzip are counted in the manifest, not fatal."""
  rows = _synthetic_snapshot(tmp_path)
  plain = tmp_path / "arxiv-metadata-oai-snapshot.json"
  plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
  folder = tmp_path / "meta"
  folder.mkdir()
  for k in range(2):
    with gzip.open(folder / f"papers-{k:05d}-of-00002.jsonl.gz", "wt") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows[k::2])
  damaged = tmp_path / "damaged.jsonl.gz"
  body = "".join(json.dumps(r) + "\n" for r in rows).encode() + b"{broken\n" + b'{"id": "x", "categories": "hep-th"'
  damaged.write_bytes(gzip.compress(body)[:-12])          # cut before the gzip trailer
  quiet = dict(log=lambda *_: None)
  a = build_sets.build(str(plain), None, str(tmp_path / "a"), 0, None, SMALL, **quiet)
  b = build_sets.build(str(folder), None, str(tmp_path / "b"), 0, None, SMALL, **quiet)
  assert a["built"] == b["built"] and len(a["built"]["clustering"]) == 6     # every class with >= 5 papers
  for name in (sets.CLUSTERING, sets.RETRIEVAL_QUERIES):
    assert _ids(os.path.join(tmp_path, "a", name), "labelled" if name == sets.CLUSTERING else "queries") == \
        _ids(os.path.join(tmp_path, "b", name), "labelled" if name == sets.CLUSTERING else "queries")
  c = build_sets.build(str(damaged), None, str(tmp_path / "c"), 0, None, SMALL, **quiet)
  reasons = c["skipped"]["by_reason"]
  assert "truncated or corrupt gzip" in reasons or "invalid JSON" in reasons, reasons


def test_clustering_years_are_preferred(tmp_path):
  rows = _synthetic_snapshot(tmp_path)
  path = tmp_path / "m.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  m = build_sets.build(str(path), None, str(tmp_path / "y"), 0, None, SMALL, log=lambda *_: None,
                       clustering_years=build_sets.parse_years("2015"))
  years = {r["id"]: r["versions"][0]["created"][12:16] for r in rows}
  drawn = _ids(os.path.join(tmp_path, "y", sets.CLUSTERING), "labelled")
  in_2015 = collections.Counter(r["categories"] for r in rows if years[r["id"]] == "2015")
  assert m["built"]["clustering_in_years"] == {c: min(5, n) for c, n in _merged(in_2015).items()}
  assert sum(years[p] == "2015" for p in drawn) == sum(m["built"]["clustering_in_years"].values())


def _merged(by_category):
  from data_prep import taxonomy
  out = collections.Counter()
  for code, n in by_category.items():
    out[taxonomy.merged_class(code)] += n
  return out


def test_sizes_not_given_are_the_papers_scaled_to_the_corpus():
  small = build_sets.resolve_sizes({}, 3852, log=lambda *_: None)
  assert small == {"clustering_per_class": 20, "citation_pairs": 161, "retrieval_queries": 161,   # 50,000 x 3,852
                   "subdomain_eval_per_class": 20, "subdomain_train_pairs_per_class": 33}        # / 1.2M, rounded up
  assert build_sets.resolve_sizes({}, 2_700_000, log=lambda *_: None) == build_sets.PAPER_SIZES   # never above
  given = build_sets.resolve_sizes({"citation_pairs": 7}, 3852, log=lambda *_: None)
  assert given["citation_pairs"] == 7 and given["retrieval_queries"] == 161
