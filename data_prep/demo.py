"""Demo training data, built on first use, so that a fresh clone trains the `tiny` config with no data step.

    shard_dir = ensure_demo_data("~/.cache/physbert-jax")   # -> .../demo-<corpus hash>/mlm128-v4096

Runs the real pipeline (train_tokenizer, build_mlm_shards) on data_prep/demo_corpus: 60 abstracts, ~8k words,
~12k tokens; at vocab_size 4096 the learned vocabulary is ~2.8k (the corpus is too small to fill it) and
seq_len 128 gives ~90 records. Builds in about 0.5 s.
Layout under cache_dir:

    demo-<sha256 of the corpus, 12 hex>/tokenizer-v<vocab_size>/   tokenizer.json, vocab.txt, ...
                                        mlm<seq_len>-v<vocab_size>/ manifest.json, train-*, validation-*

The corpus hash in the name means an edited corpus is rebuilt, not silently reused. Several processes (hosts, test
workers) may call this at once: the build runs under an exclusive lock, and each output directory appears by
rename only when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os

from data_prep import corpus_io
from data_prep.build_mlm_shards import build_mlm_shards
from data_prep.train_tokenizer import train_tokenizer
from physbert_jax import records

DEMO_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus")
VALIDATION_FRACTION = 0.1  # ~6 of 60 abstracts: enough for the eval loop to run, not to measure anything.
NUM_SHARDS = 2  # More than one, so multi-shard reading is exercised.


def corpus_fingerprint(corpus: str = DEMO_CORPUS) -> str:
  h = hashlib.sha256()
  for path, name in corpus_io.expand_paths([corpus]):
    with open(path, "rb") as f:
      h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
  return h.hexdigest()


def _file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def shards_complete(shard_dir: str, tokenizer_dir: str, seq_len: int) -> bool:
  """Does `shard_dir` hold a full build, at this seq_len, from the tokenizer now in `tokenizer_dir`?"""
  try:
    manifest = records.read_manifest(shard_dir)
    for split in manifest["splits"]:
      records.shard_paths(shard_dir, split)  # Raises if a listed shard is missing.
    tokenizer_sha = _file_sha256(os.path.join(tokenizer_dir, "tokenizer.json"))
  except (OSError, ValueError, KeyError):
    return False
  return manifest["seq_len"] == seq_len and manifest["tokenizer"]["sha256"] == tokenizer_sha


def shards_for(config) -> str:
  """The builder configs/mlm.py:tiny names (`config.data.shards = "data_prep.demo:shards_for"`)."""
  return ensure_demo_data(config.data.cache_dir, seq_len=config.data.seq_len, vocab_size=config.model.vocab_size)


def ensure_demo_data(cache_dir: str, seq_len: int = 128, vocab_size: int = 4096) -> str:
  """Build the demo tokenizer and shards under `cache_dir` unless already there; return the shard directory."""
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  root = os.path.join(cache_dir, f"demo-{corpus_fingerprint()[:12]}")
  tokenizer_dir = os.path.join(root, f"tokenizer-v{vocab_size}")
  shard_dir = os.path.join(root, f"mlm{seq_len}-v{vocab_size}")
  if shards_complete(shard_dir, tokenizer_dir, seq_len):
    return shard_dir  # Fast path: no lock, no writes.
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if this process dies.
    # Check again: another process may have built it while we waited.
    if not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
      train_tokenizer([DEMO_CORPUS], vocab_size, tokenizer_dir, min_frequency=2, verbose=False,
                      overwrite=True)   # the demo cache is this function's own
    if not shards_complete(shard_dir, tokenizer_dir, seq_len):
      manifest = build_mlm_shards([DEMO_CORPUS], tokenizer_dir, seq_len, shard_dir, num_shards=NUM_SHARDS,
                                  validation_fraction=VALIDATION_FRACTION, verbose=False, overwrite=True)
      split_sizes = ", ".join(f"{k} {v['records']} records" for k, v in manifest["splits"].items())
      print(f"demo data: built {shard_dir} ({split_sizes})")
  return shard_dir
