"""data_prep.pairs title-abstract: each pair is a paper's own title and abstract, eval ids excluded, seeded, and the
pair pipeline gives it (and category pairs) the label fingerprints the loss masks with."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np

from clitools import snapshot_records
from data_prep.pairs import category, title_abstract, writer
from physbert_jax import pair_pipeline


def _meta(tmp_path):
  path = tmp_path / "meta.jsonl.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in snapshot_records())
  return str(path)


def test_pairs_are_own_title_and_abstract_without_excluded_ids(tmp_path):
  meta = _meta(tmp_path)
  records = {r["id"]: r for r in snapshot_records()}
  exclude = tmp_path / "ids.txt"
  exclude.write_text("1501.00000\n1501.00007v2\n")
  out = str(tmp_path / "ta")
  title_abstract.build([meta], out, [str(exclude)], num_pairs=30, num_shards=2, quiet=True)
  pairs = list(writer.read_pairs(out))
  assert len(pairs) == 30 and len({p["anchor_id"] for p in pairs}) == 30
  for p in pairs:
    r = records[p["anchor_id"]]
    assert p["anchor_id"] == p["positive_id"] and p["source"] == "title-abstract"
    assert p["anchor"] == " ".join(r["title"].split()) and p["positive"] == " ".join(r["abstract"].split())
  assert not {"1501.00000", "1501.00007"} & {p["anchor_id"] for p in pairs}
  again = str(tmp_path / "again")
  title_abstract.build([meta], again, [str(exclude)], num_pairs=30, num_shards=2, quiet=True)
  assert list(writer.read_pairs(again)) == pairs                      # seeded: the same pairs
  m = json.load(open(os.path.join(out, "manifest.json")))
  assert m["kind"] == "title-abstract" and m["counts"]["excluded"] == 2


def test_pipeline_label_hash(tmp_path):
  """Category pairs carry their class: label_hash is its fingerprint; pairs without a label get 0 (never masked)."""
  meta = _meta(tmp_path)
  category.build([meta], str(tmp_path / "cat"), num_pairs=12, num_shards=1, quiet=True)
  title_abstract.build([meta], str(tmp_path / "ta"), num_pairs=12, num_shards=1, quiet=True)
  from tokenizers import Tokenizer, models, pre_tokenizers
  tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  os.makedirs(tmp_path / "tok")
  tok.save(str(tmp_path / "tok" / "tokenizer.json"))
  mapper = pair_pipeline.TokenizePair(str(tmp_path / "tok" / "tokenizer.json"), 16)
  from physbert_jax import records
  for pair in writer.read_pairs(str(tmp_path / "cat")):
    got = mapper.map(records.encode_pair(pair))
    assert got["label_hash"] == np.int32(pair_pipeline.text_hash(pair["label"])) != 0
  for pair in writer.read_pairs(str(tmp_path / "ta")):
    assert mapper.map(records.encode_pair(pair))["label_hash"] == 0
  assert pair_pipeline.trained_classes([str(tmp_path / "cat"), str(tmp_path / "ta")]) == \
      frozenset(json.load(open(tmp_path / "cat" / "manifest.json"))["counts"]["pairs_per_class"])
  assert pair_pipeline.trained_classes([str(tmp_path / "ta")]) is None
