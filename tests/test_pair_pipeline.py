"""The pair input pipeline: length-bucketed padding against HF's tokenizer, source mixing, resumable state, the
multi-process length agreement, and a contrastive step that does not depend on how far a batch is padded."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_prep.pairs.writer import ShardWriter, manifest
from physbert_jax import contrastive, input_pipeline, optimizer, outputs, pair_pipeline, records, steps
from physbert_jax.model import Bert, BertConfig

DEMO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data_prep", "demo_corpus", "abstracts.jsonl")


def _demo_pairs(tag: str) -> list[dict]:
  """(first sentence, whole abstract) of the shipped demo abstracts: short anchors, long positives."""
  with open(DEMO, encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f]
  return [{"anchor": f"{tag} {t.split('. ')[0]}", "positive": t} for t in texts]


def _write(directory, pairs) -> str:
  w = ShardWriter(str(directory), num_shards=2)
  for p in pairs:
    w.write(p)
  split = w.close()
  outputs.write_json(os.path.join(str(directory), "manifest.json"),
                     manifest("test", split, seed=0, counts={}, sources={}), sort_keys=True)
  return str(directory)


def test_bucket_lengths():
  assert pair_pipeline.bucket_lengths(128, (32, 64, 128, 256)) == (32, 64, 128)
  assert pair_pipeline.bucket_lengths(100, (64, 32)) == (32, 64, 100)
  assert pair_pipeline.bucket_lengths(128) == (128,)
  assert [pair_pipeline.bucket_for(n, (32, 64, 100)) for n in (1, 32, 33, 64, 65, 100)] == [32, 32, 64, 64, 100, 100]
  with pytest.raises(ValueError, match="longer than the largest bucket"):
    pair_pipeline.bucket_for(101, (32, 64, 100))
  with pytest.raises(ValueError, match="positive lengths"):
    pair_pipeline.bucket_lengths(128, (0, 64))


def test_each_group_padded_to_its_bucket_and_equal_to_hf_tokenizer(minilm, tmp_path):
  from transformers import AutoTokenizer
  pairs = _demo_pairs("a")
  src = _write(tmp_path / "pairs", pairs)
  ds, counts = pair_pipeline.pair_batches([{"path": src, "weight": 1.0}], tokenizer_dir=minilm, max_length=128,
                                          global_batch_size=8, seed=0, length_buckets=(16, 32, 64))
  it = input_pipeline.stream(ds)
  assert counts == {src: len(pairs)}
  hf = AutoTokenizer.from_pretrained(minilm)
  by_hash = {pair_pipeline.text_hash(p["anchor"]): p for p in pairs}
  assert len(by_hash) == len(pairs)
  seen = set()
  for _ in range(len(pairs) // 8):
    b = next(it)
    for g in ("anchor", "positive"):
      ids, mask = b[f"{g}_ids"], b[f"{g}_mask"]
      assert ids.shape[1] == pair_pipeline.bucket_for(mask.sum(1).max(), (16, 32, 64, 128))   # smallest that fits
      assert (ids[mask == 0] == hf.pad_token_id).all() and (mask[:, :1] == 1).all()
    for i in range(8):
      pair = by_hash[int(b["anchor_hash"][i])]
      assert int(b["positive_hash"][i]) == pair_pipeline.text_hash(pair["positive"])
      for g in ("anchor", "positive"):
        ref = hf(pair[g], truncation=True, max_length=128)["input_ids"]
        np.testing.assert_array_equal(b[f"{g}_ids"][i][:b[f"{g}_mask"][i].sum()], ref)
      seen.add(pair["anchor"])
  assert len(seen) == len(pairs) // 8 * 8                  # one epoch: no pair twice
  shapes = {b["anchor_ids"].shape[1] for b in [next(it) for _ in range(4)]}
  assert max(shapes) < 128                                 # short anchors never padded to max_length


@pytest.mark.parametrize("one_source_per_batch", [True, False])
def test_sources_mixed_by_weight_and_state_resumes(minilm, tmp_path, one_source_per_batch):
  from tokenizers import Tokenizer
  a = _write(tmp_path / "a", _demo_pairs("alpha"))
  b = _write(tmp_path / "b", _demo_pairs("beta"))
  kw = dict(tokenizer_dir=minilm, max_length=64, global_batch_size=8, seed=3, length_buckets=(16, 32),
            one_source_per_batch=one_source_per_batch)
  srcs = [{"path": a, "weight": 3.0}, {"path": b, "weight": 1.0}]
  ds, _ = pair_pipeline.pair_batches(srcs, **kw)
  it = input_pipeline.stream(ds)
  alpha = Tokenizer.from_file(os.path.join(minilm, "tokenizer.json")).token_to_id("alpha")   # source a's anchors
  assert alpha is not None                                                                     # start with it
  first = [next(it) for _ in range(40)]
  from_a = np.array([[row[1] == alpha for row in x["anchor_ids"]] for x in first])           # (batches, rows)
  assert abs(from_a.mean() - 0.75) < 0.03, from_a.mean()
  one_source = (from_a.all(axis=1) | ~from_a.any(axis=1)).all()
  assert one_source == one_source_per_batch                  # whole batches from one set, or sets mixed in each
  expected = [next(it) for _ in range(3)]
  it2 = input_pipeline.stream(pair_pipeline.pair_batches(srcs, **kw)[0], 40)      # a resume at step 40
  for x, y in zip(expected, [next(it2) for _ in range(3)]):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  # Two processes' rows, each padded to its own bucket, then to the longest of the two (pad_to_common_length):
  # the one-process batch.
  halves = [pair_pipeline.pair_batches(srcs, rows=slice(p * 4, p * 4 + 4), **kw)[0] for p in range(2)]
  pad = records.special_ids(os.path.join(minilm, "tokenizer.json"))["pad"]
  for s in (0, 13, 41):
    parts = [h[s] for h in halves]
    lengths = np.array([[p[k].shape[1] for k in sorted(p) if k.endswith("_ids")] for p in parts])
    parts = [pair_pipeline.pad_to_common_length(p, gather=lambda _: lengths, pad_id=pad) for p in parts]
    whole = ds[s]
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_pad_to_common_length_pads_to_the_longest_process():
  rng = np.random.default_rng(0)
  local = {"anchor_ids": rng.integers(5, 99, (4, 32)).astype(np.int32), "anchor_mask": np.ones((4, 32), np.int32),
           "positive_ids": rng.integers(5, 99, (4, 128)).astype(np.int32),
           "positive_mask": np.ones((4, 128), np.int32), "anchor_hash": np.arange(4, dtype=np.int32)}
  other = np.array([64, 64], np.int32)                     # the other process drew a 64-token anchor bucket
  gathered = []

  def gather(x):
    gathered.append(x.copy())
    return np.stack([x, other])
  out = pair_pipeline.pad_to_common_length(local, gather=gather, pad_id=7)
  np.testing.assert_array_equal(gathered[0], [32, 128])   # sorted keys: anchor, positive
  assert out["anchor_ids"].shape == (4, 64) and out["anchor_mask"].shape == (4, 64)
  np.testing.assert_array_equal(out["anchor_ids"][:, :32], local["anchor_ids"])
  assert (out["anchor_ids"][:, 32:] == 7).all() and (out["anchor_mask"][:, 32:] == 0).all()
  assert out["positive_ids"] is local["positive_ids"]      # already the longest: untouched
  assert pair_pipeline.pad_to_common_length(local) is local  # one process: nothing to agree on


def test_step_does_not_depend_on_padding_length():
  """Bucketing is exact: the same pairs padded to 16 or to 64 tokens give the same loss and update."""
  cfg = BertConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
  model = Bert(cfg)
  opt = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, clip_norm=0.0,
                                       warmup_steps=0, decay="constant", end_lr_factor=0.0))
  tx, schedule = optimizer.make_optimizer(opt, 10)
  c = ml_collections.ConfigDict(dict(temperature=0.05, symmetric=False, hard_negatives=False, mask_duplicates=True,
                                     grad_cache_chunks=1))
  special = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
  rng = np.random.default_rng(1)
  rows = []
  for _ in range(8):
    row = {}
    for g, n in (("anchor", rng.integers(3, 17)), ("positive", rng.integers(3, 17))):
      ids = rng.integers(5, 128, n).astype(np.int32)
      ids[0], ids[-1] = 2, 3
      row[f"{g}_ids"], row[f"{g}_hash"] = ids, np.int32(rng.integers(0, 2**31 - 1))
    rows.append(row)
  short = pair_pipeline.PadToBucket((16,), 0)(rows)
  long = pair_pipeline.PadToBucket((64,), 0)(rows)
  assert short["anchor_ids"].shape == (8, 16) and long["anchor_ids"].shape == (8, 64)
  params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), jnp.int32))
  step = jax.jit(contrastive.make_contrastive_step(model, tx, schedule, cfg=c, pooling="mean", special_ids=special))
  with nn.logical_axis_rules(()):
    results = [step(steps.create_state(nn.unbox(params["params"]), tx), b, jax.random.key(1)) for b in (short, long)]
  (s1, m1), (s2, m2) = results
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), s1.params, s2.params)
