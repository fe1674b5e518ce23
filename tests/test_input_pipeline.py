"""Grain over the demo shards: padding, seeded shuffle, epochs, per-process slices, workers, checkpointed position."""

import grain
import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from data_prep import demo
from physbert_jax import input_pipeline, records


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  return demo.ensure_demo_data(str(tmp_path_factory.mktemp("demo")), seq_len=64, vocab_size=1024)


def _all_records(shards):
  manifest = records.read_manifest(shards)
  source = ArrayRecordDataSource(records.shard_paths(shards, "train"))
  return [records.decode(source[i], np.dtype(manifest["dtype"])) for i in range(len(source))]


def _rows(batches):
  return [tuple(row[:mask.sum()]) for b in batches for row, mask in zip(b["input_ids"], b["attention_mask"])]


def test_one_epoch_covers_every_record_once_padded(shards):
  recs = _all_records(shards)
  loader, manifest = input_pipeline.make_mlm_loader(shards, split="train", seq_len=64, global_batch_size=4, seed=0,
                                                    num_epochs=1)
  batches = list(loader)
  assert len(batches) == len(recs) // 4
  b = batches[0]
  assert b["input_ids"].shape == (4, 64) and b["attention_mask"].shape == (4, 64)
  pad = manifest["special_ids"]["pad"]
  for row, mask in zip(b["input_ids"], b["attention_mask"]):
    n = mask.sum()
    assert (mask[:n] == 1).all() and (mask[n:] == 0).all() and (row[n:] == pad).all()
  seen = _rows(batches)
  assert len(set(seen)) == len(seen)
  assert set(seen) <= {tuple(r) for r in recs}
  assert len(seen) == len(recs) - len(recs) % 4          # drop_remainder


def test_shuffle_is_seeded(shards):
  def first_rows(seed):
    loader, _ = input_pipeline.make_mlm_loader(shards, split="train", seq_len=64, global_batch_size=4, seed=seed)
    it = iter(loader)
    return _rows([next(it) for _ in range(3)])
  assert first_rows(0) == first_rows(0)
  assert first_rows(0) != first_rows(1)


def test_processes_get_disjoint_slices(shards):
  """Two processes (ShardOptions 0/2 and 1/2) each read half the records and half the global batch."""
  halves = []
  for index in range(2):
    loader, _ = input_pipeline.make_mlm_loader(
        shards, split="train", seq_len=64, global_batch_size=4, seed=0, num_epochs=1,
        shard_options=grain.sharding.ShardOptions(shard_index=index, shard_count=2, drop_remainder=True))
    batches = list(loader)
    assert batches[0]["input_ids"].shape[0] == 2
    halves.append(set(_rows(batches)))
  assert halves[0] and halves[1] and not halves[0] & halves[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_state_continues_the_stream(shards, workers):
  """The position saved after 3 batches, restored into a fresh loader, gives batches 4-6 again (with worker
  processes too: each worker reads its own slice of the permutation, and their state is saved together)."""
  def loader():
    return input_pipeline.make_mlm_loader(shards, split="train", seq_len=64, global_batch_size=4, seed=3,
                                          worker_count=workers)[0]
  it = iter(loader())
  straight = [next(it) for _ in range(6)]
  it = iter(loader())
  for _ in range(3):
    next(it)
  state = it.get_state()
  fresh = iter(loader())
  fresh.set_state(state)
  assert _rows([next(fresh) for _ in range(3)]) == _rows(straight[3:])


def test_records_longer_than_seq_len_fail_clearly(shards):
  with pytest.raises(ValueError, match="holds sequences of up to 64 tokens but config.data.seq_len is 32"):
    input_pipeline.make_mlm_loader(shards, split="train", seq_len=32, global_batch_size=4, seed=0)
