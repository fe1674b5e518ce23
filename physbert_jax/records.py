"""The on-disk formats of training shards. Writers (data_prep) and readers (input_pipeline) both use this module;
also the strict JSON-lines reader of inputs whose every line counts (encode, the evaluation sets).

## MLM shards (format "physbert-mlm-v1")

A shard directory holds:

    manifest.json   {"format": "physbert-mlm-v1", "seq_len": 128, "dtype": "<u2", "vocab_size": 30523,
                     "special_ids": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
                     "tokenizer": {"path": "/abs/path/tokenizer", "sha256": "<of tokenizer.json>"},
                     "splits": {"train": {"records": N, "tokens": T,
                                          "shards": [{"path": "train-00000-of-00004.array_record",
                                                      "records": n, "tokens": t}, ...]},
                                "validation": {...}}}
    train-00000-of-00004.array_record, ...

Each ArrayRecord record is one training sequence, ready for the model:

    [CLS] tok tok ... [SEP] tok tok ... [SEP]        (length <= seq_len, documents joined by [SEP])

stored as the raw little-endian bytes of a uint16 array when the vocabulary fits (30,523 does), else uint32.
Which one is in the manifest (`dtype`); a record carries no header, so reading is one `np.frombuffer`.
Sequences shorter than seq_len (the tail of a stream) are padded by the collator, not on disk.

## Pair shards (format "physbert-pairs-v1"), for the contrastive stage

    manifest.json   {"format": "physbert-pairs-v1", "kind": "category" | "citation" | "synthetic-qa",
                     "splits": {"train": {"records": N, "shards": [{"path": ..., "records": n}, ...]}},
                     ... (seed, sources, counts: whatever the builder wants to record)}
    train-00000-of-00008.array_record, ...

Each record is UTF-8 JSON (`encode_pair`): {"anchor": text, "positive": text, "source": kind, ...}, plus optional
ids ("anchor_id", "positive_id") and an optional "negative" text (a hard negative). Text, not tokens: pairs are
tokenized in the Grain workers, so one pair set serves any tokenizer and max length.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import Iterator

import numpy as np

FORMAT = "physbert-mlm-v1"
PAIRS_FORMAT = "physbert-pairs-v1"
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype("<u2") if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype("<u4")


def encode(ids: np.ndarray, dtype: np.dtype) -> bytes:
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(f"a record is a 1-D token sequence, got shape {ids.shape}")
  if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(dtype).max):
    raise ValueError(f"token ids out of range for {dtype}: [{ids.min()}, {ids.max()}]")
  return ids.astype(dtype).tobytes()


def decode(record: bytes, dtype: np.dtype) -> np.ndarray:
  """bytes -> int32 token ids."""
  return np.frombuffer(record, dtype=dtype).astype(np.int32)


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


# One record per ArrayRecord chunk: the input pipeline reads records in a global random order, and reading record i
# should decompress only record i.
WRITER_OPTIONS = "group_size:1"


class ShardWriter:
  """Deals records round robin over the shard files `names` in `directory` (MLM and pair shards alike). Each file
  is written under a temp name and renamed on close, so a shard file that exists is complete."""

  def __init__(self, directory: str, names: list[str]):
    from array_record.python.array_record_module import ArrayRecordWriter
    self.directory, self.names = directory, names
    self.writers = [ArrayRecordWriter(self._tmp(n), WRITER_OPTIONS) for n in names]
    self.counts = [[0, 0] for _ in names]   # [records, tokens] per shard
    self.records = 0

  def _tmp(self, name: str) -> str:
    return os.path.join(self.directory, f".{name}.tmp")

  def write(self, record: bytes, tokens: int = 0) -> None:
    shard = self.records % len(self.writers)
    self.writers[shard].write(record)
    self.counts[shard][0] += 1
    self.counts[shard][1] += tokens
    self.records += 1

  def close(self) -> list[dict]:
    """Rename the shards into place; one {"path", "records", "tokens"} entry per shard."""
    for w, n in zip(self.writers, self.names):
      w.close()
      os.chmod(self._tmp(n), 0o644)
      os.replace(self._tmp(n), os.path.join(self.directory, n))
    return [{"path": n, "records": r, "tokens": t} for n, (r, t) in zip(self.names, self.counts)]


def encode_pair(pair: dict) -> bytes:
  """A text pair record: UTF-8 JSON {"anchor": str, "positive": str, "source": str, ...}."""
  for key in ("anchor", "positive"):
    if not isinstance(pair.get(key), str) or not pair[key].strip():
      raise ValueError(f"pair record needs a non-empty string {key!r}: {str(pair)[:200]}")
  return json.dumps(pair, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_pair(record: bytes) -> dict:
  return json.loads(record.decode("utf-8"))


def read_manifest(data_dir: str, fmt: str = FORMAT) -> dict:
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {data_dir} is not a shard directory. Build one with "
        "`python -m data_prep.build_mlm_shards --corpus ... --tokenizer ... --out {data_dir}`.")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("format") != fmt:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}")
  return manifest


def shard_paths(data_dir: str, split: str = "train", fmt: str = FORMAT) -> list[str]:
  manifest = read_manifest(data_dir, fmt)
  if split not in manifest["splits"]:
    raise KeyError(f"{data_dir}/{MANIFEST} has no split {split!r} (has {sorted(manifest['splits'])})")
  shards = manifest["splits"][split]["shards"]
  paths = [os.path.join(data_dir, s["path"]) for s in shards]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(f"{data_dir}/{MANIFEST} lists shards that are missing: {missing[:5]}")
  return paths


SPECIAL_TOKENS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def special_ids(tokenizer_json: str, tok=None, optional: tuple[str, ...] = ()) -> dict[str, int]:
  """The ids of BERT's special tokens in `tokenizer_json` (or in `tok`, a tokenizers.Tokenizer already loaded from
  it), as manifests record them. A token that is missing, and not named in `optional`, is an error naming the file."""
  if tok is None:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_json)
  ids = {name: tok.token_to_id(token) for name, token in SPECIAL_TOKENS.items()}
  missing = [SPECIAL_TOKENS[n] for n, i in ids.items() if i is None and n not in optional]
  if missing:
    raise ValueError(f"{tokenizer_json} lacks the special tokens {missing}: a BERT WordPiece tokenizer is expected "
                     "(train one with data_prep.train_tokenizer)")
  return ids


def strict_lines(path: str, error: type[Exception] = ValueError, fix: str = "recompress the file",
                 json_rows: bool = True) -> Iterator[tuple[int, object]]:
  """(line number, row) of a plain or gzip JSON-lines file in which every line counts (an embedding's row, an
  evaluation set's row), blank lines passed over: a line that is not UTF-8 or not JSON, or a truncated gzip,
  raises `error` naming the file and line, never a silent skip. json_rows=False yields each line's text."""
  opener = gzip.open if path.endswith(".gz") else open
  n = 0
  try:
    with opener(path, "rb") as f:
      for n, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          raise error(f"{path}:{n}: not UTF-8 (byte {e.start} of the line); re-encode the file as UTF-8") from None
        if not json_rows:
          yield n, line.rstrip("\n").rstrip("\r")
        elif line.strip():
          try:
            row = json.loads(line)
          except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
          yield n, row
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise error(f"{path}: truncated or corrupt gzip after line {n} ({e}); {fix}") from None
