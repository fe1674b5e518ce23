"""data_prep: tokenizer training, MLM shard building and the demo data, checked against transformers' tokenizer.

The reference for the shards is independent of the packing code: tokenize each document with
transformers.AutoTokenizer, join with [SEP], and compare to the records with their [CLS]/[SEP] framing removed.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os

import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from data_prep import corpus_io, demo
from data_prep.build_mlm_shards import build_mlm_shards, validation_score
from physbert_jax.outputs import OutputError
from data_prep.train_tokenizer import train_tokenizer
from physbert_jax import records

SEQ_LEN = 64  # Small, so the demo corpus gives many records and many document boundaries inside them.
NUM_SHARDS = 3


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tok") / "tokenizer")
  return train_tokenizer([demo.DEMO_CORPUS], vocab_size=2000, out_dir=out, verbose=False)


@pytest.fixture(scope="module")
def shard_dir(tokenizer_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("shards") / "mlm")
  build_mlm_shards([demo.DEMO_CORPUS], tokenizer_dir, SEQ_LEN, out, num_shards=NUM_SHARDS, verbose=False)
  return out


def read_split(data_dir: str, split: str = "train") -> list[list[np.ndarray]]:
  """Records of each shard, in shard order."""
  dtype = np.dtype(records.read_manifest(data_dir)["dtype"])
  out = []
  for path in records.shard_paths(data_dir, split):
    source = ArrayRecordDataSource([path])
    out.append([records.decode(source[i], dtype) for i in range(len(source))])
  return out


def stream_order(shards: list[list[np.ndarray]]) -> list[np.ndarray]:
  """Undo the round robin: record k is shard k % n, position k // n."""
  n = len(shards)
  total = sum(len(s) for s in shards)
  return [shards[k % n][k // n] for k in range(total)]


def test_tokenizer_loads_in_transformers(tokenizer_dir):
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  assert tok.model_max_length == 512
  special = [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
  assert special == [0, 1, 2, 3, 4]
  ids = tok("Superconductivity in cuprates")["input_ids"]
  assert ids[0] == 2 and ids[-1] == 3 and len(ids) > 3
  assert ids == tok("SUPERCONDUCTIVITY IN CUPRATES")["input_ids"]  # Uncased.
  assert tok("Néel")["input_ids"] == tok("neel")["input_ids"]  # Accents stripped.
  assert tok.unk_token_id not in tok("a;b~c")["input_ids"]  # All printable ASCII is in the vocabulary.
  with open(os.path.join(tokenizer_dir, "vocab.txt")) as f:
    assert [line.rstrip("\n") for line in f][:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_tokenizer_training_is_reproducible(tokenizer_dir, tmp_path):
  again = train_tokenizer([demo.DEMO_CORPUS], vocab_size=2000, out_dir=str(tmp_path / "t"), verbose=False)
  for name in os.listdir(tokenizer_dir):
    with open(os.path.join(tokenizer_dir, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
      assert a.read() == b.read(), name


def test_records_are_framed_and_fit(shard_dir):
  shards = read_split(shard_dir)
  assert len(shards) == NUM_SHARDS
  recs = stream_order(shards)
  for r in recs:
    assert r[0] == 2 and r[-1] == 3 and 3 <= len(r) <= SEQ_LEN
  assert all(len(r) == SEQ_LEN for r in recs[:-1])  # Only the tail is short.


def test_records_reproduce_reference_tokenization(shard_dir, tokenizer_dir):
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  with open(os.path.join(demo.DEMO_CORPUS, "abstracts.jsonl")) as f:
    texts = [json.loads(line)["text"] for line in f]
  expected = []
  for i, text in enumerate(texts):
    expected += ([tok.sep_token_id] if i else []) + tok(text, add_special_tokens=False)["input_ids"]
  got = np.concatenate([r[1:-1] for r in stream_order(read_split(shard_dir))])
  np.testing.assert_array_equal(got, expected)


def test_manifest_matches_files(shard_dir, tokenizer_dir):
  manifest = records.read_manifest(shard_dir)
  assert manifest["seq_len"] == SEQ_LEN and manifest["dtype"] == "<u2"
  assert manifest["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
  with open(os.path.join(tokenizer_dir, "vocab.txt")) as f:
    assert manifest["vocab_size"] == len(f.readlines())
  split = manifest["splits"]["train"]
  shards = read_split(shard_dir)
  for entry, recs in zip(split["shards"], shards):
    assert entry["records"] == len(recs)
    assert entry["tokens"] == sum(len(r) for r in recs)
  assert split["records"] == sum(map(len, shards))
  assert split["tokens"] == sum(len(r) for s in shards for r in s)
  assert len(ArrayRecordDataSource(records.shard_paths(shard_dir))) == split["records"]
  assert set(manifest["splits"]) == {"train"}


def test_rebuild_is_byte_identical(shard_dir, tokenizer_dir, tmp_path):
  again = str(tmp_path / "again")
  build_mlm_shards([demo.DEMO_CORPUS], tokenizer_dir, SEQ_LEN, again, num_shards=NUM_SHARDS, verbose=False)
  # Building over an earlier build is refused unless asked for; then it replaces it whole.
  with pytest.raises(OutputError, match="earlier output of build_mlm_shards"):
    build_mlm_shards([demo.DEMO_CORPUS], tokenizer_dir, SEQ_LEN, again, num_shards=NUM_SHARDS, verbose=False)
  build_mlm_shards([demo.DEMO_CORPUS], tokenizer_dir, SEQ_LEN, again, num_shards=NUM_SHARDS, verbose=False,
                   overwrite=True)
  assert sorted(os.listdir(again)) == sorted(os.listdir(shard_dir))
  for name in os.listdir(shard_dir):
    with open(os.path.join(shard_dir, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
      assert a.read() == b.read(), name


def test_validation_split_is_stable_and_complete(tokenizer_dir, tmp_path):
  out = str(tmp_path / "split")
  manifest = build_mlm_shards([demo.DEMO_CORPUS], tokenizer_dir, SEQ_LEN, out, num_shards=2,
                              validation_fraction=0.3, verbose=False)
  with open(os.path.join(out, "report.json")) as f:
    docs = json.load(f)["documents"]
  assert docs["train"] + docs["validation"] == 60 and 5 < docs["validation"] < 30
  val = read_split(out, "validation")
  assert len(val) == 1 and manifest["splits"]["validation"]["records"] == len(val[0]) > 0
  # The split is a function of the id alone: recompute it.
  assert docs["validation"] == sum(validation_score(f"demo-{i:04d}") < 0.3 for i in range(1, 61))


def write_bad_corpus(directory) -> None:
  good = {"id": "ok-1", "text": "Plasma waves in a tokamak."}
  lines = [
      json.dumps(good).encode(),
      b'{"id": "broken", "text": "unterminated',  # line 2: invalid JSON
      json.dumps({"id": "no-text", "title": "x"}).encode(),  # line 3: missing text
      json.dumps({"id": "empty", "text": "   "}).encode(),  # line 4: empty text
      b"",  # line 5: blank, ignored
      b'{"id": "latin1", "text": "caf\xe9"}',  # line 6: not UTF-8
      json.dumps(["not", "an", "object"]).encode(),  # line 7
      json.dumps({"text": "Gravitational lensing of quasars."}).encode(),  # line 8: no id -> file:line
  ]
  with open(directory / "a.jsonl", "wb") as f:
    f.write(b"\n".join(lines) + b"\n")
  with gzip.open(directory / "b.jsonl.gz", "wt") as f:
    f.write(json.dumps({"id": "gz-1", "text": "Neutrino oscillations."}) + "\n")
  with open(directory / "c.txt", "w") as f:
    f.write("Quantum dots in silicon.\n\nSpin waves in magnets.\n")
  with open(directory / "ignored.md", "w") as f:
    f.write("not a corpus file\n")


def test_bad_input_is_counted_not_fatal(tokenizer_dir, tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  write_bad_corpus(corpus)
  skipped = corpus_io.Skipped()
  docs = list(corpus_io.iter_documents([str(corpus)], skipped))
  assert [d for d, _ in docs] == ["ok-1", "a.jsonl:8", "gz-1", "c.txt:1", "c.txt:3"]
  assert [(e["file"], e["line"], e["reason"]) for e in skipped.entries] == [
      ("a.jsonl", 2, "invalid JSON"), ("a.jsonl", 3, "missing text"), ("a.jsonl", 4, "empty text"),
      ("a.jsonl", 6, "not UTF-8"), ("a.jsonl", 7, "not a JSON object")]
  assert "skipped: 5" in skipped.summary()

  out = str(tmp_path / "shards")
  manifest = build_mlm_shards([str(corpus)], tokenizer_dir, SEQ_LEN, out, num_shards=2, verbose=False)
  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert report["documents"]["train"] == 5
  assert report["skipped"]["count"] == 5 and report["skipped"]["by_reason"]["invalid JSON"] == 1
  assert manifest["splits"]["train"]["records"] == 1  # 5 short documents fit one record.


def test_missing_corpus_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    list(corpus_io.iter_documents([str(tmp_path / "nope.jsonl")]))
  (tmp_path / "x.csv").write_text("a\n")
  with pytest.raises(ValueError, match="unknown corpus file type"):
    list(corpus_io.iter_documents([str(tmp_path / "x.csv")]))


def test_ensure_demo_data_builds_once_under_concurrency(tmp_path):
  cache = str(tmp_path / "cache")
  # Threads hold separate open files, and flock locks per open file, so they exclude each other like processes.
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    dirs = list(pool.map(lambda _: demo.ensure_demo_data(cache, seq_len=32, vocab_size=1000), range(3)))
  assert len(set(dirs)) == 1
  shard_dir = dirs[0]
  manifest = records.read_manifest(shard_dir)
  assert manifest["seq_len"] == 32 and set(manifest["splits"]) == {"train", "validation"}
  mtime = os.path.getmtime(os.path.join(shard_dir, records.MANIFEST))
  assert demo.ensure_demo_data(cache, seq_len=32, vocab_size=1000) == shard_dir
  assert os.path.getmtime(os.path.join(shard_dir, records.MANIFEST)) == mtime  # Reused, not rebuilt.
  # A half-deleted build is detected and rebuilt.
  os.remove(records.shard_paths(shard_dir)[0])
  demo.ensure_demo_data(cache, seq_len=32, vocab_size=1000)
  assert all(os.path.exists(p) for p in records.shard_paths(shard_dir))
