"""Grain over text-pair shards (records.PAIRS_FORMAT) for the contrastive stage.

Each source (category / citation / synthetic-qa pair sets) is shuffled and repeated on its own, the sources are
mixed by the configured weights (the paper used 2M / 1M / 2M pairs: weights 0.4 / 0.2 / 0.4), each process takes
its slice, and texts are tokenized in the Grain workers, so one pair set serves any tokenizer and max length.

A batch: anchor_ids/anchor_mask, positive_ids/positive_mask (B, L_group) int32, and anchor_hash/positive_hash (B,)
int32 fingerprints of the raw texts, with which the loss masks a duplicate text in the batch out of the negatives;
label_hash (B,) fingerprints a pair's class (category pairs carry one; 0 = no label), with which the loss can mask
same-class negatives (config.contrastive.mask_same_label).

Padding: each text group of a batch is padded to the smallest length bucket (config.data.length_buckets, e.g.
32/64/128/256) that holds its longest text, as sentence-transformers pads to the longest text of the batch. Titles
and questions are short, abstracts long: padding every text to max_length spent most of the step on [PAD]
(docs/LOG.md). Buckets bound the number of shapes jit compiles (at most len(buckets) per group). With several
processes, `pad_to_common_length` pads every process's slice to the longest bucket any of them drew.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Callable, Sequence

import grain
import jax
import numpy as np

from physbert_jax import records


def text_hash(text: str) -> int:
  """A stable int32 fingerprint of a text (crc32; collisions only mask one negative, harmlessly)."""
  return int(np.uint32(zlib.crc32(text.strip().lower().encode("utf-8"))).view(np.int32))


def bucket_lengths(max_length: int, buckets: Sequence[int] = ()) -> tuple[int, ...]:
  """The padded lengths a group may take: the buckets below max_length, then max_length itself.

  No buckets means every text is padded to max_length (one shape: what a TPU or a fixed-shape profile wants).
  """
  if any(int(b) <= 0 for b in buckets):
    raise ValueError(f"config.data.length_buckets must be positive lengths, got {list(buckets)}")
  return tuple(sorted({int(b) for b in buckets if int(b) < max_length} | {max_length}))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length (buckets sorted ascending, the last one the max_length texts are cut to)."""
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f"a text of {length} tokens is longer than the largest bucket {buckets[-1]}")


@dataclasses.dataclass
class TokenizePair(grain.transforms.Map):
  """JSON pair record -> unpadded token ids per text, [CLS] ... [SEP] truncated to max_length.

  The tokenizer is loaded lazily, once per worker process; PadToBucket pads when the batch is formed.
  """
  tokenizer_path: str
  max_length: int
  hard_negatives: bool = False

  def __post_init__(self):
    self._tok = None

  def _tokenizer(self):
    if self._tok is None:
      from tokenizers import Tokenizer
      tok = Tokenizer.from_file(self.tokenizer_path)
      tok.enable_truncation(self.max_length)
      tok.no_padding()
      self._tok = tok
    return self._tok

  def map(self, record: bytes) -> dict[str, np.ndarray]:
    pair = records.decode_pair(record)
    out = {}
    keys = ("anchor", "positive", "negative") if self.hard_negatives else ("anchor", "positive")
    for key in keys:
      text = pair.get(key) or pair["positive"]          # a pair without a hard negative reuses its positive
      out[f"{key}_ids"] = np.asarray(self._tokenizer().encode(text).ids, np.int32)
      out[f"{key}_hash"] = np.int32(text_hash(text))
    out["label_hash"] = np.int32(text_hash(pair["label"]) if pair.get("label") else 0)   # crc32("") is 0 too
    return out


@dataclasses.dataclass
class PadToBucket:
  """Grain batch_fn: a list of TokenizePair outputs -> one batch, each text group padded to its own bucket."""
  buckets: tuple[int, ...]
  pad_id: int

  def __call__(self, examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for key in examples[0]:
      if key.endswith("_ids"):
        group = key[:-len("_ids")]
        rows = [e[key] for e in examples]
        length = bucket_for(max(len(r) for r in rows), self.buckets)
        ids = np.full((len(rows), length), self.pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, r in enumerate(rows):
          ids[i, :len(r)], mask[i, :len(r)] = r, 1
        out[key], out[f"{group}_mask"] = ids, mask
      else:
        out[key] = np.stack([e[key] for e in examples])
    return out


def pad_to_common_length(local: dict[str, np.ndarray], gather: Callable[[np.ndarray], np.ndarray] | None = None,
                         pad_id: int = 0) -> dict[str, np.ndarray]:
  """Pads each text group of this process's batch to the longest length any process has for it this step.

  jax.make_array_from_process_local_data needs equal shapes on every process; `gather` (default: one tiny
  multihost allgather of the lengths per step) returns the (processes, groups) lengths.
  """
  keys = sorted(k for k in local if k.endswith("_ids"))
  lengths = np.array([local[k].shape[1] for k in keys], np.int32)
  if gather is None:
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils
    gather = multihost_utils.process_allgather
  target = np.asarray(gather(lengths)).reshape(-1, len(keys)).max(axis=0)
  out = dict(local)
  for k, n, t in zip(keys, lengths, target):
    if t > n:
      mask_key = k[:-len("_ids")] + "_mask"
      out[k] = np.pad(local[k], ((0, 0), (0, t - n)), constant_values=pad_id)
      out[mask_key] = np.pad(local[mask_key], ((0, 0), (0, t - n)))
  return out


@dataclasses.dataclass
class ReadPairBatch(grain.transforms.Map):
  """(rows, 2) [source, record] indices -> one padded batch: read, tokenized (TokenizePair), PadToBucket."""
  paths: tuple[tuple[str, ...], ...]      # per source: its shard files
  tokenize: TokenizePair
  pad: PadToBucket

  def __post_init__(self):
    self._sources = None

  def map(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    if self._sources is None:             # opened lazily: once per worker process
      self._sources = [grain.sources.ArrayRecordDataSource(list(p)) for p in self.paths]
    raw: list = [None] * len(rows)
    for s in {int(s) for s, _ in rows}:                 # one batched read per source (ArrayRecord reads in parallel)
      mine = [r for r, (src, _) in enumerate(rows) if int(src) == s]
      for r, record in zip(mine, self._sources[s].__getitems__([int(rows[r][1]) for r in mine])):
        raw[r] = record
    return self.pad([self.tokenize.map(record) for record in raw])


def pair_batches(sources: list[dict], *, tokenizer_dir: str, max_length: int, global_batch_size: int, seed: int,
                 rows: slice | None = None, hard_negatives: bool = False, length_buckets: Sequence[int] = (),
                 one_source_per_batch: bool = True) -> tuple[grain.MapDataset, dict[str, int]]:
  """(element s = this process's `rows` of global pair batch s, the per-source pair counts).

  sources: [{"path": pair shard dir, "weight": float}, ...]. length_buckets: see bucket_lengths(). Each source is
  shuffled and repeated on its own (input_pipeline.record_order); like the MLM batches, batch s is a function of
  (seed, step) only, whatever the number of processes.
  one_source_per_batch: every batch is drawn from one source, sources chosen by weight, as sentence-transformers'
  default PROPORTIONAL multi-dataset sampler does: the in-batch negatives are of the same kind as the positive (a
  title is not told apart from abstracts by its length), and short-text batches get short buckets. The choice is
  a deterministic function of the step (grain.MapDataset.mix). False: pairs are mixed within each batch.
  """
  from physbert_jax import input_pipeline
  tokenizer_path = f"{tokenizer_dir}/tokenizer.json"
  rows = rows or input_pipeline.all_rows(global_batch_size)
  orders, weights, counts, paths = [], [], {}, []
  for i, src in enumerate(sources):
    shard_files = tuple(records.shard_paths(src["path"], "train", fmt=records.PAIRS_FORMAT))
    n = len(grain.sources.ArrayRecordDataSource(list(shard_files)))
    if n == 0:
      raise ValueError(f"{src['path']}: no pairs")
    counts[src["path"]] = n
    paths.append(shard_files)
    orders.append(input_pipeline.record_order(n, seed + i).map(functools.partial(_tag, i)))
    weights.append(float(src["weight"]))
  pad_id = records.special_ids(tokenizer_path, optional=("unk", "cls", "sep", "mask"))["pad"]
  read = ReadPairBatch(tuple(paths), TokenizePair(tokenizer_path, max_length, hard_negatives),
                       PadToBucket(bucket_lengths(max_length, length_buckets), pad_id))
  mix = lambda parts: grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
  if one_source_per_batch:
    ds = mix([input_pipeline.step_rows(o, global_batch_size, rows) for o in orders])
  else:
    ds = input_pipeline.step_rows(mix(orders), global_batch_size, rows)
  return ds.map(read), counts


def _tag(source: int, index) -> np.ndarray:
  return np.array([source, index], np.int64)


def trained_classes(paths: Sequence[str]) -> frozenset | None:
  """The classes that labelled pair sets among `paths` teach (a category set's manifest counts.pairs_per_class);
  None when no set is labelled. The validator reports clustering on these and on the other classes apart."""
  import json
  import os
  found = None
  for path in paths:
    with open(os.path.join(path, records.MANIFEST)) as f:
      per_class = json.load(f).get("counts", {}).get("pairs_per_class")
    if per_class:
      found = (found or frozenset()) | frozenset(per_class)
  return found
