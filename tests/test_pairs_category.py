"""data_prep.pairs category on a slice of the real arXiv sample: classes, balance, exclusion, determinism."""

from __future__ import annotations

import collections
import gzip
import json
import os
import random

import pytest

from data_prep import taxonomy
from data_prep.pairs import __main__ as cli
from data_prep.pairs import category, writer
from clitools import DATA, needs_data

SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(SNAPSHOT)
EVERY = 25   # every 25th record of the sample: ~6.5k papers, a dozen classes of >= 100


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  """(snapshot slice path, {id: record})"""
  lines = []
  with gzip.open(SNAPSHOT, "rb") as f:
    for i, raw in enumerate(f):
      if i % EVERY == 0:
        lines.append(raw)
  path = str(tmp_path_factory.mktemp("meta") / "slice.jsonl.gz")
  with gzip.open(path, "wb") as f:
    f.writelines(lines)
  return path, {r["id"]: r for r in map(json.loads, lines)}


def klass(record: dict) -> str | None:
  code = taxonomy.primary(record["categories"])
  return taxonomy.merged_class(code) if taxonomy.is_physics(code) else None


def build(tmp_path, meta, name="out", **kw):
  kw = {"num_pairs": 600, "min_class_papers": 100, "num_shards": 3, "quiet": True, **kw}
  out = str(tmp_path / name)
  category.build(meta if isinstance(meta, list) else [meta], out, **kw)
  return out


@needs_data
def test_pairs_share_a_class_and_are_balanced(sample, tmp_path):
  path, recs = sample
  out = build(tmp_path, path)
  pairs = list(writer.read_pairs(out))
  m = json.load(open(os.path.join(out, "manifest.json")))
  assert m["format"] == "physbert-pairs-v1" and m["kind"] == "category" and m["splits"]["train"]["records"] == 600
  assert sum(s["records"] for s in m["splits"]["train"]["shards"]) == 600 == len(pairs)
  sizes = collections.Counter(klass(r) for r in recs.values() if klass(r))
  expected = sorted(c for c, n in sizes.items() if n >= 100)
  per_class = collections.Counter()
  for p in pairs:
    assert set(p) == {"anchor", "positive", "source", "anchor_id", "positive_id", "label"}
    assert p["source"] == "category"
    a, b = recs[p["anchor_id"]], recs[p["positive_id"]]
    assert p["anchor_id"] != p["positive_id"] and klass(a) == klass(b) == p["label"]
    assert p["anchor"] == " ".join(a["abstract"].split()) and p["positive"] == " ".join(b["abstract"].split())
    per_class[klass(a)] += 1
  assert sorted(per_class) == expected
  assert max(per_class.values()) - min(per_class.values()) <= 1   # 600 over the classes, as even as integers allow
  assert len({frozenset((p["anchor_id"], p["positive_id"])) for p in pairs}) == 600


@needs_data
def test_deterministic_from_the_seed_and_excludes_both_sides(sample, tmp_path):
  path, recs = sample
  a, b = build(tmp_path, path, "a"), build(tmp_path, path, "b")
  read = lambda d: [open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d)) if n.endswith("record")]
  assert read(a) == read(b)
  assert read(build(tmp_path, path, "c", seed=1)) != read(a)
  # Exclude a third of the papers that appeared: none may come back, on either side.
  used = sorted({i for p in writer.read_pairs(a) for i in (p["anchor_id"], p["positive_id"])})
  excluded = set(random.Random(0).sample(used, len(used) // 3))
  ids = tmp_path / "ids.txt"
  ids.write_text("# eval ids\n" + "\n".join(f"{i}v2" for i in excluded) + "\n")   # versions are ignored
  pairs = list(writer.read_pairs(build(tmp_path, path, "x", exclude=[str(ids)])))
  assert len(pairs) == 600 and not excluded & {i for p in pairs for i in (p["anchor_id"], p["positive_id"])}
  report = json.load(open(tmp_path / "x" / "report.json"))
  assert report["counts"]["excluded"] == len(excluded & {i for i, r in recs.items() if klass(r)})


@needs_data
def test_meta_directory_gives_the_same_pairs_as_the_snapshot(sample, tmp_path):
  path, recs = sample
  meta = tmp_path / "meta"
  meta.mkdir()
  rows = [r for r in recs.values() if klass(r)]   # data/meta holds physics papers only, in two parts
  for k in range(2):
    with gzip.open(meta / f"papers-{k:05d}-of-00002.jsonl.gz", "wt") as f:
      f.writelines(json.dumps({**r, "class": klass(r)}) + "\n" for r in rows[k::2])
  (meta / "report.json").write_text("{}")
  assert list(writer.read_pairs(build(tmp_path, str(meta), "d"))) == list(writer.read_pairs(build(tmp_path, path)))


def test_small_class_is_capped_with_a_note(tmp_path, capsys):
  meta = tmp_path / "m.jsonl"
  abstract = "We study a model of something in physics and find a result that is long enough to keep. " * 2
  rows = [{"id": f"q{i}", "categories": "quant-ph", "abstract": abstract + str(i)} for i in range(3)]
  rows += [{"id": f"h{i}", "categories": "hep-th hep-ph", "abstract": abstract + str(i)} for i in range(40)]
  rows += [{"id": "m1", "categories": "math.AG", "abstract": abstract}, "not an object", {"id": "x"}]
  meta.write_text("\n".join(map(json.dumps, rows)) + "\n{broken\n")
  out = build(tmp_path, str(meta), num_pairs=20, min_class_papers=3)
  counts = json.load(open(os.path.join(out, "manifest.json")))["counts"]
  assert counts["pairs_per_class"] == {"hep": 10, "quant-ph": 3} and counts["non_physics"] == 1
  report = json.load(open(os.path.join(out, "report.json")))
  assert any("quant-ph" in n for n in report["notes"]) and "capped by the data" in report["notes"][0]
  assert report["skipped"]["by_reason"] == {"invalid JSON": 1, "missing categories": 1, "not a JSON object": 1}
  assert "note:" in capsys.readouterr().out


def test_sample_pairs_are_distinct_and_evenly_used():
  for n, quota in ((10, 45), (10, 30), (101, 500)):
    got = category.sample_pairs(n, quota, random.Random(0))
    assert len({frozenset(p) for p in got}) == quota and all(a != b and 0 <= a < n and 0 <= b < n for a, b in got)
  uses = collections.Counter(i for p in category.sample_pairs(101, 500, random.Random(0)) for i in p)
  # Rounds of neighbour pairs use each paper once a round (less the odd one out and repeats); drawing pairs
  # uniformly would give a Poisson spread (~3..18 uses around a mean of 10).
  assert max(uses.values()) - min(uses.values()) <= 3


@needs_data
def test_cli_rerun_is_skipped(sample, tmp_path, capsys):
  path, _ = sample
  argv = ["category", "--meta", path, "--out", str(tmp_path / "c"), "--num-pairs", "50", "--min-class-papers",
          "300", "--num-shards", "2", "--quiet"]
  cli.main(argv)
  first = os.path.getmtime(tmp_path / "c" / "manifest.json")
  capsys.readouterr()
  cli.main(argv)
  assert "skipping" in capsys.readouterr().out and os.path.getmtime(tmp_path / "c" / "manifest.json") == first
  with pytest.raises(SystemExit):     # a changed setting does not silently replace the earlier pair set
    cli.main(argv + ["--seed", "3"])
  assert "earlier output of pairs category" in capsys.readouterr().err
  assert json.load(open(tmp_path / "c" / "manifest.json"))["seed"] == 0
  cli.main(argv + ["--seed", "3", "--overwrite"])   # asked for: it rebuilds
  assert "skipping" not in capsys.readouterr().out
  assert json.load(open(tmp_path / "c" / "manifest.json"))["seed"] == 3


def test_scaled_thresholds():
  assert taxonomy.scaled(5000, 116_738) == 487        # 5000 * 116738 / 1.2M = 486.4, rounded up
  assert taxonomy.scaled(5000, 1_200_000) == 5000 and taxonomy.scaled(2_000_000, 116_738) == 194_564
  assert taxonomy.scaled(5000, 10) == 1


@needs_data
def test_default_threshold_scales_with_the_corpus_and_pairs_carry_their_class(sample, tmp_path):
  path, records = sample
  out = build(tmp_path, path, min_class_papers=None, num_pairs=None)
  counts = json.load(open(os.path.join(out, "manifest.json")))["counts"]
  physics = sum(1 for r in records.values() if klass(r))
  per_class = collections.Counter(klass(r) for r in records.values() if klass(r))
  assert counts["physics_papers"] == physics
  assert counts["min_class_papers"] == taxonomy.scaled(taxonomy.MIN_CLASS_PAPERS, physics)
  assert set(counts["pairs_per_class"]) == {c for c, n in per_class.items() if n >= counts["min_class_papers"]}
  assert len(counts["pairs_per_class"]) > 8          # the absolute 5,000 would keep none of this slice
  assert counts["pairs"] == taxonomy.scaled(category.NUM_PAIRS, physics)
  for pair in writer.read_pairs(out):
    assert pair["label"] == klass(records[pair["anchor_id"]]) == klass(records[pair["positive_id"]])
  with pytest.raises(ValueError, match="no class has 5,000 papers"):
    build(tmp_path, path, "paper", min_class_papers=5000)
