"""Grain over ArrayRecord shards: per-process sharding, seeded shuffle, epochs, optional worker processes, padding.

Each process reads only its slice of the records (ShardByJaxProcess) and yields its slice of the global batch;
`sharding.global_batch` assembles the global jax.Array. The iterator's position is part of every checkpoint, so a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses

import grain
from absl import flags
import numpy as np

from physbert_jax import records


@dataclasses.dataclass(frozen=True)
class Decode(grain.transforms.Map):
  """ArrayRecord bytes -> {'input_ids', 'attention_mask'} padded to seq_len (the collator's padding)."""
  dtype: str
  seq_len: int
  pad_id: int

  def map(self, record: bytes) -> dict[str, np.ndarray]:
    ids = records.decode(record, np.dtype(self.dtype))
    if ids.size > self.seq_len:
      raise ValueError(f"record of {ids.size} tokens is longer than seq_len {self.seq_len}: the shards were "
                       "built for a longer sequence length than the config asks for")
    input_ids = np.full((self.seq_len,), self.pad_id, np.int32)
    input_ids[:ids.size] = ids
    attention_mask = np.zeros((self.seq_len,), np.int32)
    attention_mask[:ids.size] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def make_mlm_loader(data_dir: str, *, split: str, seq_len: int, global_batch_size: int, seed: int,
                    shuffle: bool = True, num_epochs: int | None = None,
                    worker_count: int = 0, shard_options: grain.sharding.ShardOptions | None = None,
                    ) -> tuple[grain.DataLoader, dict]:
  """A grain.DataLoader over `data_dir`'s shards and the shard manifest.

  num_epochs=None repeats forever (the train loop counts steps); each epoch is a fresh seeded permutation.
  shard_options defaults to this JAX process's slice (ShardByJaxProcess); the batch is the per-process batch.
  """
  shard_options = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  manifest = records.read_manifest(data_dir)
  if manifest["seq_len"] > seq_len:
    raise ValueError(f"{data_dir} holds sequences of up to {manifest['seq_len']} tokens but config.data.seq_len is "
                     f"{seq_len}; build shards with --seq-len {seq_len} or raise seq_len")
  source = grain.sources.ArrayRecordDataSource(records.shard_paths(data_dir, split))
  if global_batch_size % shard_options.shard_count:
    raise ValueError(f"global batch {global_batch_size} does not divide over {shard_options.shard_count} processes")
  batch = global_batch_size // shard_options.shard_count
  if len(source) < global_batch_size:
    raise ValueError(f"{data_dir} split {split!r} has {len(source)} records, fewer than one global batch "
                     f"({global_batch_size})")
  if worker_count and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()   # Grain's worker processes read absl flags; library callers may not have any
  sampler = grain.samplers.IndexSampler(
      num_records=len(source),
      shard_options=shard_options,
      shuffle=shuffle, num_epochs=num_epochs, seed=seed)
  loader = grain.DataLoader(
      data_source=source, sampler=sampler, worker_count=worker_count,
      operations=[Decode(manifest["dtype"], seq_len, manifest["special_ids"]["pad"]), grain.transforms.Batch(batch, drop_remainder=True)])
  return loader, manifest
