"""data_prep.arxiv_metadata on the real arXiv sample: physics filter, class counts, sharding, restart, bad input."""

from __future__ import annotations

import collections
import gzip
import json
import os
import re

import pytest

from data_prep import arxiv_metadata, stage, taxonomy
from clitools import DATA, needs_data

SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(SNAPSHOT)


def head(n: int) -> list[bytes]:
  with gzip.open(SNAPSHOT, "rb") as f:
    return [next(f) for _ in range(n)]


def write_gz(path, lines: list[bytes]) -> str:
  with gzip.open(path, "wb") as f:
    f.writelines(lines)
  return str(path)


def tree_bytes(d: str) -> dict[str, bytes]:
  return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d)) if not n.startswith(".")}


@needs_data
def test_category_counts_on_the_whole_sample_match_an_independent_count(tmp_path):
  out = str(tmp_path / "meta")
  arxiv_metadata.main(["--snapshot", SNAPSHOT, "--out", out, "--quiet"])
  stats = stage.read_json(os.path.join(out, "stats.json"))
  # Independent count: a regex over the raw lines, no JSON parsing, the README's published figures.
  primaries = collections.Counter()
  with gzip.open(SNAPSHOT, "rt", encoding="utf-8") as f:
    for line in f:
      primaries[re.search(r'"categories":"([^" ]+)', line).group(1)] += 1
  physics_archives = ("astro-ph", "cond-mat", "gr-qc", "hep-", "math-ph", "nlin", "nucl-", "physics.", "quant-ph",
                      "chem-ph", "atom-ph", "acc-phys", "chao-dyn", "plasm-ph", "bayes-an", "ao-sci", "adap-org",
                      "patt-sol", "comp-gas", "solv-int")
  expected = {c: n for c, n in primaries.items() if c.startswith(physics_archives) and not c.startswith("math.")}
  assert stats["primary_counts"] == dict(sorted(expected.items()))
  assert stats["physics_papers"] == sum(expected.values()) == 116_738
  assert stats["papers_read"] == 163_860
  # Spot checks against the data README.
  assert stats["category_counts"]["astro-ph.CO"] == 1_647 and stats["primary_counts"]["chao-dyn"] == 39
  assert stats["category_counts"]["nlin.CD"] == 615 + 39  # chao-dyn is counted as nlin.CD
  assert stats["class_counts"]["cond-mat"] == 18_702 and stats["class_counts"]["astro-ph"] == 9_793
  assert stats["class_counts"]["hep"] == 1_068 + 627 + 4_123 + 2_543
  # The paper's 5,000 on ~1.2M papers, scaled to the sample's 116,738: 487 (--min-class-papers 5000 for the paper's).
  assert stats["threshold"] == 487 and all(n >= 487 for n in stats["classes"].values())
  assert len(stats["classes"]) == 30
  assert set(stats["classes"]) | set(stats["dropped_classes"]) == set(stats["class_counts"])
  # The records themselves: physics only, with the derived fields, snapshot fields untouched.
  with gzip.open(os.path.join(out, "papers-00000-of-00001.jsonl.gz"), "rt") as f:
    first = json.loads(next(f))
  assert list(first)[:14] == ["id", "submitter", "authors", "title", "comments", "journal-ref", "doi", "report-no",
                              "categories", "license", "abstract", "versions", "update_date", "authors_parsed"]
  assert first["class"] == taxonomy.merged_class(first["categories"].split()[0])
  report = stage.read_json(os.path.join(out, "report.json"))
  assert report["skipped"]["count"] == 0


@needs_data
def test_parts_partition_the_papers_and_restart_is_byte_identical(tmp_path, monkeypatch):
  snap = write_gz(tmp_path / "snap.jsonl.gz", head(3000))
  one, three = str(tmp_path / "one"), str(tmp_path / "three")
  arxiv_metadata.main(["--snapshot", snap, "--out", one, "--quiet"])
  for k in range(3):
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(k))
    arxiv_metadata.main(["--snapshot", snap, "--out", three, "--quiet"])
  monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
  os.remove(stage.report_path(three, 1, 3))
  with pytest.raises(SystemExit, match="1 of 3 parts are not done"):  # The merge checks every part.
    arxiv_metadata.main(["--snapshot", snap, "--out", three, "--num-shards", "3", "--merge", "--quiet"])
  arxiv_metadata.main(["--snapshot", snap, "--out", three, "--num-shards", "3", "--shard-index", "1", "--quiet"])
  arxiv_metadata.main(["--snapshot", snap, "--out", three, "--merge", "--quiet"])
  ids = lambda d, n: [json.loads(l)["id"] for i in range(n)
                      for l in gzip.open(arxiv_metadata.papers_path(d, i, n), "rt")]
  assert sorted(ids(three, 3)) == sorted(ids(one, 1)) and len(set(ids(three, 3))) == len(ids(one, 1))
  assert stage.read_json(os.path.join(three, "stats.json"))["class_counts"] == \
      stage.read_json(os.path.join(one, "stats.json"))["class_counts"]

  # A part that dies half-way leaves no output and no report; rerun, it matches a clean run byte for byte.
  clean = tree_bytes(three)
  crashed = str(tmp_path / "crashed")
  calls = {"n": 0}
  real = taxonomy.merged_class

  def dying(code):
    calls["n"] += 1
    if calls["n"] > 300:
      raise KeyboardInterrupt("killed")
    return real(code)

  monkeypatch.setattr(taxonomy, "merged_class", dying)
  with pytest.raises(KeyboardInterrupt):
    arxiv_metadata.main(["--snapshot", snap, "--out", crashed, "--num-shards", "3", "--shard-index", "0", "--quiet"])
  assert not any(n.startswith(("papers", "report")) for n in os.listdir(crashed))
  monkeypatch.setattr(taxonomy, "merged_class", real)
  with open(os.path.join(crashed, ".papers-00000-of-00003.jsonl.gz.stale.tmp"), "wb") as f:
    f.write(b"left by a SIGKILL")  # Temp files of killed jobs are hidden and ignored.
  for k in range(3):
    arxiv_metadata.main(["--snapshot", snap, "--out", crashed, "--num-shards", "3", "--shard-index", str(k),
                         "--quiet"])
  arxiv_metadata.main(["--snapshot", snap, "--out", crashed, "--num-shards", "3", "--merge", "--quiet"])
  assert tree_bytes(crashed) == clean
  # A finished part is skipped, not redone.
  mtime = os.path.getmtime(arxiv_metadata.papers_path(crashed, 2, 3))
  arxiv_metadata.main(["--snapshot", snap, "--out", crashed, "--num-shards", "3", "--shard-index", "2", "--quiet"])
  assert os.path.getmtime(arxiv_metadata.papers_path(crashed, 2, 3)) == mtime


@needs_data
def test_bad_input_is_reported_with_file_line_and_id(tmp_path, capsys):
  lines = head(40)
  good = [json.loads(l) for l in lines]
  physics = [p for p in good if taxonomy.is_physics(taxonomy.primary(p["categories"]))]
  enc = lambda o: (json.dumps(o) + "\n").encode()
  bad = [
      lines[0],
      b'{"id":"9999.00001","title":"unterminated\n',                       # line 2: invalid JSON
      enc({k: v for k, v in physics[1].items() if k != "categories"}),      # line 3: missing categories
      enc({**physics[2], "abstract": "  \n "}),                             # line 4: empty abstract
      lines[1].replace(b'"abstract":"', b'"abstract":"\xff\xfe'),           # line 5: not UTF-8
      lines[0],                                                             # line 6: duplicate id
      enc({**physics[3], "id": None}),                                      # line 7: missing id
  ] + lines[2:30]
  data = gzip.compress(b"".join(bad))
  snap = tmp_path / "truncated.jsonl.gz"
  snap.write_bytes(data[:len(data) * 2 // 3])  # Truncated gzip: the tail of the file is lost.
  out = str(tmp_path / "meta")
  arxiv_metadata.main(["--snapshot", str(snap), "--out", out, "--quiet"])
  report = stage.read_json(os.path.join(out, "report.json"))
  entries = {(e["line"], e["reason"]): e for e in report["skipped"]["entries"]}
  assert (2, "invalid JSON") in entries
  assert (3, "missing categories") in entries and entries[(3, "missing categories")]["id"] == physics[1]["id"]
  assert (4, "empty abstract") in entries and entries[(4, "empty abstract")]["id"] == physics[2]["id"]
  assert (5, "not UTF-8") in entries and entries[(5, "not UTF-8")]["id"] == good[1]["id"]
  assert (6, "duplicate id") in entries and (7, "missing id") in entries
  trunc = [e for e in report["skipped"]["entries"] if e["reason"] == "truncated or corrupt gzip"]
  assert len(trunc) == 1 and trunc[0]["file"] == "truncated.jsonl.gz" and 8 < trunc[0]["line"] < 37
  assert report["skipped"]["count"] == 7
  # The rest completed: every good line read before the truncation is there.
  read = trunc[0]["line"] - 1
  assert report["counts"]["papers_read"] == read - 2  # all but the invalid-JSON and non-UTF-8 lines
  assert "invalid JSON" in capsys.readouterr().out


def test_slurm_variables_choose_the_part(monkeypatch):
  monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "6")
  monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
  assert stage.resolve_shards(None, None) == (8, [5])
  assert stage.resolve_shards(4, 2) == (4, [2])
  with pytest.raises(ValueError, match="outside"):
    stage.resolve_shards(4, 4)
  monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
  monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
  assert stage.resolve_shards(None, None) == (1, [0]) and stage.resolve_shards(3, None) == (3, [0, 1, 2])
  assert [stage.shard_of("hep-th/9901001", 7)] * 2 == [stage.shard_of("hep-th/9901001", 7)] * 2
