"""data_prep.pairs citation: Paperscape (the real 1991-1996 files) and S2 bulk dataset files made here."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from data_prep.pairs import citation, writer
from clitools import DATA, needs_data

PSCP = os.path.join(DATA, "arxiv", "citations")
needs_data = needs_data(os.path.join(PSCP, "pscp-1991.csv"))


def read_rows(*years) -> dict[str, dict]:
  """Paperscape rows, parsed independently of the code under test."""
  rows = {}
  for y in years:
    for line in open(os.path.join(PSCP, f"pscp-{y}.csv"), encoding="utf-8"):
      if not line.startswith("#") and line.strip():
        aid, cats, _, _, refs, _, title = line.rstrip("\n").split(";", 6)
        rows[aid] = {"cats": cats, "refs": [r for r in refs.split(",") if r], "title": " ".join(title.split())}
  return rows


def build(tmp_path, source, name="out", **kw):
  out = str(tmp_path / name)
  citation.build(source, out, num_shards=2, quiet=True, **kw)
  return out, list(writer.read_pairs(out))


def physics_archive(aid: str) -> bool:
  return aid.split("/")[0] in {"astro-ph", "cond-mat", "gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph",
                               "nucl-ex", "nucl-th", "quant-ph", "physics", "nlin", "chao-dyn", "patt-sol",
                               "adap-org", "comp-gas", "solv-int", "acc-phys", "atom-ph", "chem-ph", "plasm-ph",
                               "ao-sci", "bayes-an", "mtrl-th", "supr-con"}


@needs_data
def test_paperscape_pairs_are_real_citations_with_row_titles(tmp_path):
  rows = read_rows(1991, 1992, 1993, 1994, 1995, 1996)
  out, pairs = build(tmp_path, citation.PaperscapeSource(PSCP))
  expected = {(a, b) for a, r in rows.items() if physics_archive(a) for b in r["refs"]
              if b in rows and b != a and rows[a]["title"].lower() != rows[b]["title"].lower()}
  got = {(p["anchor_id"], p["positive_id"]) for p in pairs}
  assert got == expected and len(pairs) == len(got) > 140_000
  for p in pairs[:2000]:
    assert p["anchor"] == rows[p["anchor_id"]]["title"] and p["positive"] == rows[p["positive_id"]]["title"]
    assert p["source"] == "citation"
  m = json.load(open(os.path.join(out, "manifest.json")))
  assert m["kind"] == "citation" and m["splits"]["train"]["records"] == len(pairs)
  assert m["sources"]["source"] == "paperscape"
  assert "capped by the data" in json.load(open(os.path.join(out, "report.json")))["notes"][0]


@needs_data
def test_fewer_pairs_are_a_prefix_exclusion_both_sides_meta_titles(tmp_path):
  source = lambda: citation.PaperscapeSource(os.path.join(PSCP, "pscp-1992.csv"))
  _, full = build(tmp_path, source(), "full")
  _, head = build(tmp_path, source(), "head", num_pairs=500)
  # Sorted by seeded hash, so a smaller set is the first pairs of a bigger one (after the round robin is undone).
  assert sorted(map(json.dumps, head)) == sorted(map(json.dumps, _prefix(tmp_path / "full", 500)))
  assert _prefix(tmp_path / "full", 10) != _prefix(tmp_path / "seed1", 10, source(), seed=1)

  excluded = {full[0]["anchor_id"], full[1]["positive_id"]}
  ids = tmp_path / "ids.txt"
  ids.write_text("\n".join(excluded) + "\n")
  _, kept = build(tmp_path, source(), "x", exclude=[str(ids)])
  assert not excluded & {i for p in kept for i in (p["anchor_id"], p["positive_id"])}

  # A cited paper that is not a row has no title, unless --meta gives one.
  rows = read_rows(1992)
  missing = sorted({b for r in rows.values() for b in r["refs"] if b not in rows and b != ""})[:5]
  meta = tmp_path / "meta.jsonl"
  meta.write_text("".join(json.dumps({"id": m, "categories": "hep-th", "abstract": "x", "title": f"Title\n  of {m}"})
                          + "\n" for m in missing))
  _, with_meta = build(tmp_path, source(), "m", meta=[str(meta)])
  titled = {p["positive_id"]: p["positive"] for p in with_meta if p["positive_id"] in missing}
  assert titled and all(t == f"Title of {m}" for m, t in titled.items())
  assert not {p["positive_id"] for p in full} & set(missing)


def _prefix(out, n, source=None, **kw):
  if source is not None:
    citation.build(source, str(out), num_shards=2, quiet=True, **kw)
  shards = [list(writer.read_pairs_shard(p)) for p in writer.shard_files(str(out))]
  flat = [shards[k % len(shards)][k // len(shards)] for k in range(sum(map(len, shards)))]
  return flat[:n]


def write_bulk(root, papers: list[dict], cites: list, files: int = 2) -> str:
  for kind, rows in (("papers", papers), ("citations", cites)):
    os.makedirs(root / kind, exist_ok=True)
    for k in range(files):
      with gzip.open(root / kind / f"{kind}-part{k}.jsonl.gz", "wt") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows[k::files])
  return str(root)


def test_s2_bulk_files(tmp_path):
  papers = [
      {"corpusid": 1, "title": "Citing  paper\n one", "externalids": {"ArXiv": "hep-th/9601001", "DOI": "x"}},
      {"corpusid": 2, "title": "Cited arXiv paper", "externalids": {"ArXiv": "hep-ph/9501002v2"}},
      {"corpusid": 3, "title": "A journal paper", "externalids": {"DOI": "10.1/abc"}},
      {"corpusid": 4, "title": "Not on arXiv, cites", "externalids": {}},
      {"corpusid": 5, "title": "Second arXiv citing paper", "externalids": {"ArXiv": "1401.0001"}},
      {"corpusid": 6, "title": None, "externalids": {}},
  ]
  cites = [
      {"citingcorpusid": 1, "citedcorpusid": 2, "isinfluential": False, "contexts": ["[3]"], "intents": []},
      {"citingcorpusid": 1, "citedcorpusid": 3, "isinfluential": True, "contexts": [], "intents": [["methodology"]]},
      {"citingcorpusid": 4, "citedcorpusid": 2, "isinfluential": False, "contexts": None, "intents": None},
      {"citingcorpusid": 5, "citedcorpusid": 1, "isinfluential": False, "contexts": [], "intents": []},
      {"citingcorpusid": 5, "citedcorpusid": None, "isinfluential": False, "contexts": [], "intents": []},
      {"citingcorpusid": 5, "citedcorpusid": 6, "isinfluential": False, "contexts": [], "intents": []},
      {"citingcorpusid": 5, "citedcorpusid": 5, "isinfluential": False, "contexts": [], "intents": []},
      "{not json",
  ]
  root = write_bulk(tmp_path / "s2", papers, cites)
  out, pairs = build(tmp_path, citation.S2BulkSource(root))
  got = {(p["anchor_id"], p["positive_id"], p["anchor"], p["positive"]) for p in pairs}
  assert got == {("hep-th/9601001", "hep-ph/9501002", "Citing paper one", "Cited arXiv paper"),
                 ("hep-th/9601001", "CorpusId:3", "Citing paper one", "A journal paper"),
                 ("1401.0001", "hep-th/9601001", "Second arXiv citing paper", "Citing paper one")}
  report = json.load(open(os.path.join(out, "report.json")))
  assert report["counts"]["self_citations"] == 1 and report["counts"]["no_title"] == 1   # corpusid 6: no title
  assert report["skipped"]["by_reason"] == {"citation without both corpus ids": 1, "invalid JSON": 1, "no title": 1}
  with pytest.raises(FileNotFoundError, match="papers"):
    citation.S2BulkSource(str(tmp_path))
