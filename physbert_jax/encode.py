"""Texts -> embeddings with our JAX BERT, from a workdir, an exported folder or any local BERT / sentence-transformers
folder (read through `convert.load`).

    python -m physbert_jax.encode --model runs/contrastive --input texts.txt --out emb.npy
    python -m physbert_jax.encode --model exported/physbert --input papers.jsonl --field abstract --out emb.npy

    enc = Encoder.load(path, pooling=None, dtype="float32", max_length=512, step=None)
    emb = enc.encode(texts, batch_size=64)        # (N, H) float32, in input order

Speed comes from not computing on padding: all texts are tokenised in one call (Rust, multi-threaded), sorted by
length (longest first, so an out-of-memory shows at once), cut into batches of at most `batch_size` texts (and, on
CPU, MAX_TOKENS tokens) and each batch padded only up to the next of a few bucket lengths. Each (rows, bucket) shape
is compiled once and reused for the encoder's lifetime; dispatch is asynchronous, so the host pads batch i+1 while
the device runs batch i. Embeddings do not depend on the batching (tests/test_encode.py).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging
from tqdm import tqdm

from physbert_jax import convert, hf_names, outputs, records
from physbert_jax.model import Bert, pool
from physbert_jax.pair_pipeline import bucket_for, bucket_lengths

# Padded lengths: steps of 16 tokens up to 256, 32 beyond. A batch of length-sorted texts wastes < 16 (32) tokens
# per text; a large set compiles at most 24 shapes, ~0.5 s each for MiniLM on CPU.
BUCKETS = tuple(range(16, 257, 16)) + tuple(range(288, 513, 32))
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
IN_FLIGHT = 2   # batches dispatched ahead of the one being copied back
# Tokens per forward pass, at most, by backend. On CPU, small passes keep the (rows, L, 4H) activations in cache:
# MiniLM on 400 abstracts ran ~1.3x faster at 1,024 tokens a pass than at 64 x 256 (docs/LOG.md). Accelerators
# want large passes: there batch_size alone decides.
MAX_TOKENS = {"cpu": 1024}


class Encoder:
  def __init__(self, weights: convert.Weights, *, name: str, pooling: str | None = None, dtype: str = "float32",
               max_length: int = 512):
    if dtype not in DTYPES:
      raise ValueError(f"dtype {dtype!r}: use float32 or bfloat16")
    self.name = name
    try:                           # the model's record, a pooling or a shorter length asked for (never longer)
      self.settings = dataclasses.replace(weights.encoder, pooling=pooling or weights.encoder.pooling,
                                          max_length=min(int(max_length), weights.encoder.max_length))
    except ValueError as e:        # an unknown pooling
      raise ValueError(f"{name}: {e}") from None
    self.pooling, self.max_length = self.settings.pooling, self.settings.max_length
    self.normalize, self.lowercase = self.settings.normalize, self.settings.lowercase
    self.dtype = DTYPES[dtype]
    self.dim = weights.cfg.hidden_size
    self._weights = weights
    self._tokenizer = _load_tokenizer(weights.tokenizer_dir, self.max_length)
    cfg = dataclasses.replace(weights.cfg, dtype=self.dtype, remat=False,
                              attention_impl="cpu" if jax.default_backend() == "cpu" else None)
    encoder_params = {k: v for k, v in weights.params.items() if k != "cls"}   # the MLM head is not used
    self._params = jax.device_put(encoder_params, jax.local_devices()[0])   # this process's own device
    self._embed = jax.jit(functools.partial(_embed, Bert(cfg), self.pooling, self.normalize))

  @classmethod
  def load(cls, path: str, pooling: str | None = None, dtype: str = "float32", max_length: int = 512,
           step: int | str | None = None) -> "Encoder":
    """path: our workdir (step None = latest, an int, or 'best'), an exported folder, or a local HF/ST BERT
    folder. pooling None = what the folder or run declares."""
    weights = convert.load(path, step=step)
    name = os.path.basename(os.path.abspath(path)) + (f"@{step}" if step is not None else "")
    return cls(weights, name=name, pooling=pooling, dtype=dtype, max_length=max_length)

  @functools.cached_property
  def fingerprint(self) -> str:
    """Changes with anything that changes an embedding: weights, tokenizer, pooling, length, normalisation, dtype."""
    h = hashlib.sha256()
    for path, array in sorted(hf_names.flatten(self._weights.params).items()):
      if path[0] == "cls":
        continue
      h.update("/".join(path).encode() + str(array.shape).encode())
      h.update(np.ascontiguousarray(array, np.float32).data)
    h.update(self._tokenizer.to_str().encode())   # vocabulary, normalisation, and our truncation
    h.update(json.dumps([self.pooling, self.max_length, self.normalize, self.lowercase, self.dtype]).encode())
    return h.hexdigest()[:24]

  def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
    """(N, H) float32 in input order."""
    if isinstance(texts, str):
      raise TypeError("encode takes a sequence of texts; wrap a single text in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise TypeError(f"text {i} is {type(t).__name__}, not str")
    out = np.empty((len(texts), self.dim), np.float32)
    if not texts:
      return out
    if self.lowercase:
      texts = [t.lower() for t in texts]
    encodings = self._tokenizer.encode_batch(texts)
    lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
    order = np.argsort(-lengths, kind="stable")
    buckets = bucket_lengths(self.max_length, BUCKETS)
    pending = collections.deque()

    def collect():
      idx, emb = pending.popleft()
      out[idx] = np.asarray(emb)[:len(idx)]
      bar.update(len(idx))

    with tqdm(total=len(texts), unit="text", desc=self.name, disable=not show_progress, dynamic_ncols=True) as bar:
      start = 0
      while start < len(texts):
        length = bucket_for(int(lengths[order[start]]), buckets)   # the longest left
        rows = max(1, min(batch_size, MAX_TOKENS.get(jax.default_backend(), 1 << 30) // length))
        idx = order[start:start + rows]
        start += len(idx)
        if len(idx) < rows:
          rows = 1 << (len(idx) - 1).bit_length()    # the tail: a power of two, so few extra shapes
        batch = _pad([encodings[i] for i in idx], rows, length, special=self.pooling == "mean_no_special")
        pending.append((idx, self._embed(self._params, *batch)))
        if len(pending) > IN_FLIGHT:
          collect()
      while pending:
        collect()
    return out


def _pad(encodings, rows: int, length: int, special: bool):
  ids = np.zeros((rows, length), np.int32)
  mask = np.zeros((rows, length), np.int32)
  mask[len(encodings):, 0] = 1                 # filler rows see one token: no row is fully masked (no NaN)
  special_mask = np.zeros((rows, length), np.int32) if special else None
  for r, e in enumerate(encodings):
    n = len(e.ids)
    ids[r, :n] = e.ids
    mask[r, :n] = 1
    if special:
      special_mask[r, :n] = e.special_tokens_mask    # what the post-processor added: [CLS], [SEP]
  return (ids, mask) if special_mask is None else (ids, mask, special_mask)


def _embed(model: nn.Module, pooling: str, normalize: bool, params, ids, mask, special_mask=None):
  hidden, _ = model.apply({"params": params}, ids, mask)                 # (B, L, H)
  emb = pool(hidden, mask, pooling, special_mask)                         # (B, H) fp32
  if normalize:   # as torch.nn.functional.normalize, which sentence-transformers' Normalize calls
    emb = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
  return emb


def _load_tokenizer(directory: str, max_length: int):
  """The folder's fast tokenizer, with our truncation and no padding (some tokenizer.json files carry a fixed
  padding: all-MiniLM-L6-v2's pads every text to 128)."""
  from tokenizers import Tokenizer
  path = os.path.join(directory, "tokenizer.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      text = f.read()
  elif os.path.exists(os.path.join(directory, "vocab.txt")):   # older BERT folders: let transformers build it
    from transformers import AutoTokenizer
    text = AutoTokenizer.from_pretrained(directory, local_files_only=True,
                                         trust_remote_code=False).backend_tokenizer.to_str()
  else:
    raise FileNotFoundError(f"{directory}: no tokenizer.json or vocab.txt")
  tok = Tokenizer.from_str(text)
  tok.no_padding()
  tok.enable_truncation(max_length)    # counts the [CLS]/[SEP] the post-processor adds, as transformers does
  return tok


# ---------------------------------------------------------------------------------------------------------------

def read_texts(path: str, field: str = "text") -> list[str]:
  """.txt: one text per line. .jsonl: one JSON string or object per line (`field` of it). Either may be .gz."""
  stem = path[:-3] if path.endswith(".gz") else path
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  if not stem.endswith((".txt", ".jsonl")):
    raise ValueError(f"{path}: use .txt (one text per line) or .jsonl")
  # Every line becomes one embedding row, so a bad line is an error naming it, not a silent skip: the output's
  # row i must stay text i of the input.
  texts = []
  for n, row in records.strict_lines(path, json_rows=not stem.endswith(".txt")):
    text = row if isinstance(row, str) else row.get(field) if isinstance(row, dict) else None
    if not isinstance(text, str):
      raise ValueError(f"{path}:{n}: no string field {field!r} (use --field)")
    texts.append(text)
  return texts


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m physbert_jax.encode", description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="workdir, exported folder, or local HF/ST BERT folder")
  parser.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl, optionally .gz")
  parser.add_argument("--out", required=True, help=".npy, (N, H) float32 in input order")
  parser.add_argument("--field", default="text", help="the text field of .jsonl rows")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--max-length", type=int, default=512, help="capped at what the model declares")
  parser.add_argument("--pooling", choices=("mean", "cls", "mean_no_special"), help="default: the model's")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--step", help="workdir checkpoint step, or 'best' (default: the latest)")
  args = parser.parse_args(argv)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  absl_logging.set_verbosity(absl_logging.ERROR)   # Orbax warns about every read-only checkpoint it opens
  try:
    step = None if args.step is None else args.step if args.step == "best" else int(args.step)
  except ValueError:
    sys.exit(f"encode: --step {args.step}: a checkpoint step number or 'best'")
  if not args.out.endswith(".npy"):
    sys.exit(f"encode: --out {args.out}: name a .npy file (numpy would write {args.out}.npy)")
  if os.path.isdir(args.out):
    sys.exit(f"encode: --out {args.out} is a folder; name a .npy file")
  if args.batch_size < 1 or args.max_length < 3:
    sys.exit(f"encode: --batch-size {args.batch_size} / --max-length {args.max_length}: need >= 1 and >= 3")
  try:
    texts = read_texts(args.input, args.field)
    enc = Encoder.load(args.model, pooling=args.pooling, dtype=args.dtype, max_length=args.max_length, step=step)
  except (OSError, ValueError, KeyError) as e:
    sys.exit(f"encode: {e}")
  start = time.time()
  emb = enc.encode(texts, batch_size=args.batch_size)
  seconds = time.time() - start
  try:
    with outputs.atomic_path(args.out) as tmp, open(tmp, "wb") as f:
      np.save(f, emb)
  except OSError as e:
    sys.exit(f"encode: cannot write --out {args.out}: {e.strerror or e}")
  print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]} ({enc.pooling} pooling, max length {enc.max_length}, "
        f"{enc.dtype}) in {seconds:.1f} s, {len(texts) / max(seconds, 1e-9):.1f} texts/s", file=sys.stderr)


if __name__ == "__main__":
  main()
