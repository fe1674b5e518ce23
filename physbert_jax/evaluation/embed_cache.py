"""Embeddings on disk, keyed by (model fingerprint, set file sha256, field): each text set is encoded once per model.

Texts are streamed in chunks into a .npy memmap, so encoding a 21k-abstract set holds one chunk of texts and the
(N, H) float32 result (on disk), never the token states of the whole set. A finished file is renamed into place
only when complete, so an interrupted run re-encodes rather than reading a half-written array.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from typing import Iterable

import numpy as np
from tqdm import tqdm

CHUNK = 2048  # texts handed to Encoder.encode per call: bounded memory, still large batches inside


def cache_key(fingerprint: str, set_sha256: str, field: str) -> str:
  return hashlib.sha256(f"{fingerprint}\n{set_sha256}\n{field}".encode()).hexdigest()[:24]


def embed(encoder, texts: Iterable[str], n: int, cache_dir: str, set_sha256: str, field: str,
          batch_size: int = 64, desc: str = "") -> np.ndarray:
  """(n, H) float32 embeddings of `texts` (an iterable of exactly n strings), from the cache when present."""
  key = cache_key(encoder.fingerprint, set_sha256, field)
  path = os.path.join(cache_dir, f"{key}.npy")
  if os.path.exists(path):
    arr = np.load(path, mmap_mode="r")
    if arr.shape[0] == n:
      return arr
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + ".tmp.npy"
  out = None
  done = 0
  it = iter(texts)
  with tqdm(total=n, desc=desc or field, unit="text", dynamic_ncols=True) as bar:
    while chunk := list(itertools.islice(it, CHUNK)):
      emb = np.asarray(encoder.encode(chunk, batch_size=batch_size, show_progress=False), dtype=np.float32)
      if emb.ndim != 2 or emb.shape[0] != len(chunk):
        raise ValueError(f"{encoder.name}: encode returned shape {emb.shape} for {len(chunk)} texts")
      if out is None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, emb.shape[1]))
      out[done:done + len(chunk)] = emb
      done += len(chunk)
      bar.update(len(chunk))
  if done != n:
    raise ValueError(f"{desc or field}: expected {n} texts, got {done}")
  out.flush()
  del out
  os.replace(tmp, path)
  with open(os.path.join(cache_dir, f"{key}.json"), "w") as f:
    json.dump({"model": encoder.name, "fingerprint": encoder.fingerprint, "set_sha256": set_sha256,
               "field": field, "n": n}, f, indent=1)
  return np.load(path, mmap_mode="r")
