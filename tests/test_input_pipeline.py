"""Grain over the demo shards: padding, seeded shuffle, epochs, per-process rows, workers, resume by step."""

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


def _batches(shards, **kw):
  return input_pipeline.mlm_batches(shards, split="train", seq_len=64, **{"global_batch_size": 4, "seed": 0, **kw})


def test_one_epoch_covers_every_record_once_padded(shards):
  recs = _all_records(shards)
  ds, manifest = _batches(shards)
  epoch = len(recs) // 4
  batches = [ds[s] for s in range(epoch)]
  b = batches[0]
  assert b["input_ids"].shape == (4, 64) and b["attention_mask"].shape == (4, 64)
  pad = manifest["special_ids"]["pad"]
  for row, mask in zip(b["input_ids"], b["attention_mask"]):
    n = mask.sum()
    assert (mask[:n] == 1).all() and (mask[n:] == 0).all() and (row[n:] == pad).all()
  seen = _rows(batches)
  assert len(set(seen)) == len(seen) == epoch * 4
  assert set(seen) <= {tuple(r) for r in recs}
  # The next epoch is another permutation of the same records.
  n = len(recs)
  order = input_pipeline.record_order(n, seed=0)
  first, second = [order[i] for i in range(n)], [order[i] for i in range(n, 2 * n)]
  assert sorted(first) == sorted(second) == list(range(n)) and first != second


def test_shuffle_is_seeded(shards):
  def first_rows(seed):
    ds, _ = _batches(shards, seed=seed)
    return _rows([ds[s] for s in range(3)])
  assert first_rows(0) == first_rows(0)
  assert first_rows(0) != first_rows(1)


@pytest.mark.parametrize("processes", [2, 4])
def test_process_rows_put_together_are_the_global_batch(shards, processes):
  """Each process reads only its rows; side by side they are the one-process batch, whatever the process count."""
  whole, _ = _batches(shards, global_batch_size=8)
  size = 8 // processes
  parts = [_batches(shards, global_batch_size=8, rows=slice(p * size, (p + 1) * size))[0] for p in range(processes)]
  for s in (0, 1, 7, 40):                    # 40: a later epoch
    for key in ("input_ids", "attention_mask"):
      np.testing.assert_array_equal(np.concatenate([p[s][key] for p in parts]), whole[s][key])


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_from_a_step_continues_the_stream(shards, workers):
  """A resume at step 3 reads batches 4-6 again (with worker processes too: they read ahead in order)."""
  ds, _ = _batches(shards, seed=3)
  it = input_pipeline.stream(ds, 0, worker_count=workers)
  straight = [next(it) for _ in range(6)]
  resumed = input_pipeline.stream(ds, 3, worker_count=workers)
  assert _rows([next(resumed) for _ in range(3)]) == _rows(straight[3:])


def test_validation_is_one_pass_in_file_order(shards):
  ds, _ = input_pipeline.mlm_batches(shards, split="validation", seq_len=64, global_batch_size=2, seed=0,
                                     shuffle=False, repeat=False)
  manifest = records.read_manifest(shards)
  source = ArrayRecordDataSource(records.shard_paths(shards, "validation"))
  expected = [tuple(records.decode(source[i], np.dtype(manifest["dtype"]))) for i in range(len(source))]
  assert len(expected) % 2 == 1 and len(ds) == len(expected) // 2 + 1      # every record, the last batch filled up
  batches = [ds[i] for i in range(len(ds))]
  assert _rows(batches)[:len(expected)] == expected
  last = batches[-1]
  assert last["attention_mask"][1].sum() == 0 and (last["input_ids"][1] == manifest["special_ids"]["pad"]).all()


def test_records_longer_than_seq_len_fail_clearly(shards):
  with pytest.raises(ValueError, match="holds sequences of up to 64 tokens but config.data.seq_len is 32"):
    input_pipeline.mlm_batches(shards, split="train", seq_len=32, global_batch_size=4, seed=0)
