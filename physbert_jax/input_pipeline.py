"""Grain over ArrayRecord shards: the global batch of each step is a function of (seed, step) only.

    record order   grain.MapDataset.range(n).shuffle(seed).repeat(): one seeded permutation per epoch, the same on
                   every process
    global batch   step s holds records order[s*B : (s+1)*B]
    this process   reads its rows of that batch (`rows`: the rows its devices hold, sharding.process_rows), by
                   random access into the ArrayRecord shards

So a run's batches do not depend on how many processes read them: 2 processes x 4 devices train on the same batches
as 1 x 8, and a run resumed on another number of nodes continues the same data order. The data position is the
step itself: a resume starts the stream at the restored step, and no iterator state is checkpointed (Grain's is one
file per process, which a restart with another process count could not read).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import grain
from absl import flags
import numpy as np

from physbert_jax import records


def record_order(num_records: int, seed: int, shuffle: bool = True, repeat: bool = True) -> grain.MapDataset:
  """Record indices in the order every process agrees on; reshuffled each epoch (Grain reseeds per repetition)."""
  order = grain.MapDataset.range(num_records)
  if shuffle:
    order = order.shuffle(seed=seed)
  return order.repeat(None) if repeat else order


def step_rows(order: grain.MapDataset, global_batch_size: int, rows: slice, pad_last: bool = False
              ) -> grain.MapDataset:
  """Element s: the record indices of `rows` of global batch s. A final partial batch of a finite order is dropped,
  or with pad_last filled up with -1: rows without a record (no tokens, so no weight in an evaluation)."""
  def mine(idx):
    idx = np.asarray(idx)
    if len(idx) < global_batch_size:
      idx = np.pad(idx, [(0, global_batch_size - len(idx))] + [(0, 0)] * (idx.ndim - 1), constant_values=-1)
    return idx[rows]
  return order.batch(global_batch_size, drop_remainder=not pad_last).map(mine)


def stream(ds: grain.MapDataset, start: int = 0, worker_count: int = 0) -> Iterator:
  """Iterate `ds` from element `start`: a resume at step s reads batch s next. Worker processes read ahead in order."""
  it = ds.slice(slice(start, None)).to_iter_dataset()
  if worker_count:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()   # Grain's worker processes read absl flags; library callers may not have any
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it)


def all_rows(global_batch_size: int) -> slice:
  return slice(0, global_batch_size)


@dataclasses.dataclass
class ReadMLMBatch(grain.transforms.Map):
  """Record indices -> {'input_ids', 'attention_mask'} (rows, seq_len), padded as the collator pads."""
  paths: tuple[str, ...]
  dtype: str
  seq_len: int
  pad_id: int

  def __post_init__(self):
    self._source = None

  def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    if self._source is None:              # opened lazily: once per worker process
      self._source = grain.sources.ArrayRecordDataSource(list(self.paths))
    real = [int(i) for i in indices if i >= 0]         # -1: an empty row that fills up the last batch
    raw = self._source.__getitems__(real) if real else []
    input_ids = np.full((len(indices), self.seq_len), self.pad_id, np.int32)
    attention_mask = np.zeros((len(indices), self.seq_len), np.int32)
    for r, record in enumerate(raw):
      ids = records.decode(record, np.dtype(self.dtype))
      if ids.size > self.seq_len:
        raise ValueError(f"record of {ids.size} tokens is longer than seq_len {self.seq_len}: the shards were "
                         "built for a longer sequence length than the config asks for")
      input_ids[r, :ids.size], attention_mask[r, :ids.size] = ids, 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def mlm_batches(data_dir: str, *, split: str, seq_len: int, global_batch_size: int, seed: int,
                rows: slice | None = None, shuffle: bool = True, repeat: bool = True,
                ) -> tuple[grain.MapDataset, dict]:
  """(element s = this process's rows of global batch s, the shard manifest). rows defaults to the whole batch.

  repeat=False: one pass (in file order when shuffle=False: the validation split), the last batch filled up with
  empty rows."""
  manifest = records.read_manifest(data_dir)
  if manifest["seq_len"] > seq_len:
    raise ValueError(f"{data_dir} holds sequences of up to {manifest['seq_len']} tokens but config.data.seq_len is "
                     f"{seq_len}; build shards with --seq-len {seq_len} or raise seq_len")
  paths = tuple(records.shard_paths(data_dir, split))
  n = len(grain.sources.ArrayRecordDataSource(list(paths)))
  if n < global_batch_size and repeat:
    raise ValueError(f"{data_dir} split {split!r} has {n} records, fewer than one global batch "
                     f"({global_batch_size})")
  read = ReadMLMBatch(paths, manifest["dtype"], seq_len, manifest["special_ids"]["pad"])
  order = record_order(n, seed, shuffle=shuffle, repeat=repeat)
  batches = step_rows(order, global_batch_size, rows or all_rows(global_batch_size), pad_last=not repeat)
  return batches.map(read), manifest
