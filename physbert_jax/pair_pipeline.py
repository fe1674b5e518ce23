"""Grain over text-pair shards (records.PAIRS_FORMAT) for the contrastive stage.

Each source (category / citation / synthetic-qa pair sets) is shuffled and repeated on its own, the sources are
mixed by the configured weights (the paper used 2M / 1M / 2M pairs: weights 0.4 / 0.2 / 0.4), each process takes
its slice, and texts are tokenized in the Grain workers, so one pair set serves any tokenizer and max length.

A batch: anchor_ids/anchor_mask, positive_ids/positive_mask (B, L) int32, and anchor_hash/positive_hash (B,) int32
fingerprints of the raw texts, with which the loss masks a duplicate text in the batch out of the negatives.
"""

from __future__ import annotations

import dataclasses
import zlib

import grain
import jax
import numpy as np
from absl import flags

from physbert_jax import records


def text_hash(text: str) -> int:
  """A stable int32 fingerprint of a text (crc32; collisions only mask one negative, harmlessly)."""
  return int(np.uint32(zlib.crc32(text.strip().lower().encode("utf-8"))).view(np.int32))


@dataclasses.dataclass
class TokenizePair(grain.transforms.Map):
  """JSON pair record -> padded token arrays. The tokenizer is loaded lazily, once per worker process."""
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
      self._tok, self._pad = tok, tok.token_to_id("[PAD]") or 0
    return self._tok

  def _encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    ids = self._tokenizer().encode(text).ids            # [CLS] ... [SEP], truncated to max_length
    out = np.full((self.max_length,), self._pad, np.int32)
    out[:len(ids)] = ids
    mask = np.zeros((self.max_length,), np.int32)
    mask[:len(ids)] = 1
    return out, mask

  def map(self, record: bytes) -> dict[str, np.ndarray]:
    pair = records.decode_pair(record)
    out = {}
    keys = ("anchor", "positive", "negative") if self.hard_negatives else ("anchor", "positive")
    for key in keys:
      text = pair.get(key) or pair["positive"]          # a pair without a hard negative reuses its positive
      out[f"{key}_ids"], out[f"{key}_mask"] = self._encode(text)
      out[f"{key}_hash"] = np.int32(text_hash(text))
    return out


def make_pair_loader(sources: list[dict], *, tokenizer_dir: str, max_length: int, global_batch_size: int,
                     seed: int, worker_count: int = 0, hard_negatives: bool = False,
                     process_index: int | None = None, process_count: int | None = None):
  """An infinite, checkpointable iterator of per-process pair batches, and the per-source record counts.

  sources: [{"path": pair shard dir, "weight": float}, ...].
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} does not divide over {process_count} processes")
  tokenizer_path = f"{tokenizer_dir}/tokenizer.json"
  datasets, weights, counts = [], [], {}
  for i, src in enumerate(sources):
    paths = records.shard_paths(src["path"], "train", fmt=records.PAIRS_FORMAT)
    source = grain.sources.ArrayRecordDataSource(paths)
    if len(source) < process_count:
      raise ValueError(f"{src['path']}: {len(source)} pairs, fewer than the {process_count} processes")
    counts[src["path"]] = len(source)
    ds = (grain.MapDataset.source(source)
          .slice(slice(process_index, None, process_count))    # this process's pairs
          .shuffle(seed=seed + i)
          .repeat(None))                                        # reshuffled every epoch
    datasets.append(ds)
    weights.append(float(src["weight"]))
  mixed = grain.MapDataset.mix(datasets, weights) if len(datasets) > 1 else datasets[0]
  mixed = mixed.map(TokenizePair(tokenizer_path, max_length, hard_negatives))
  ds = mixed.batch(global_batch_size // process_count, drop_remainder=True).to_iter_dataset()
  if worker_count:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds), counts
