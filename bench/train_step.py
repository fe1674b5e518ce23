"""Tokens/s of our MLM train step vs transformers.BertForMaskedLM + torch.optim.AdamW, same model and batch.

  python bench/train_step.py --config configs/mlm.py:tiny
  python bench/train_step.py --config configs/mlm.py:base --batch-size 8 --steps 5     # BERT-base on a CPU
  python bench/train_step.py --config configs/mlm.py:base --batch-size 256 --skip-reference   # a GPU: MFU

Both sides: random token sequences of full length, 15% masking (ours inside the jitted step, the reference with
the same 80/10/10 rule in torch), forward + backward + AdamW update, timed after warm-up steps. Ends with one JSON
line: {"ours_tokens_per_s", "reference_tokens_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from physbert_jax import metrics as metrics_lib
from physbert_jax.model import BertConfig
from gpu_inputs import SPECIAL
from gpu_torch import seconds


def load_config(spec: str):
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def random_batch(batch_size: int, seq_len: int, vocab: int, seed: int = 0) -> np.ndarray:
  ids = np.random.default_rng(seed).integers(5, vocab, (batch_size, seq_len)).astype(np.int32)
  ids[:, 0], ids[:, -1] = SPECIAL["cls"], SPECIAL["sep"]
  return ids


def bench_ours(c, ids: np.ndarray, n_steps: int, warmup: int) -> float:
  from gpu import mlm_step, timed_steps
  step, init, put, _ = mlm_step(BertConfig(**c.model), ids.shape[0], ids.shape[1], opt=c.optimizer, mlm_cfg=c.mlm,
                                mesh_cfg=c.mesh)
  seconds, _ = timed_steps(step, init(), [put(ids)], jax.random.key(1), n_steps, warmup)
  return ids.size * n_steps / seconds


def bench_reference(c, ids: np.ndarray, n_steps: int, warmup: int) -> float:
  import torch
  import transformers
  m = c.model
  hf_cfg = transformers.BertConfig(
      vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
      num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings, hidden_dropout_prob=m.hidden_dropout,
      attention_probs_dropout_prob=m.attention_dropout, layer_norm_eps=m.layer_norm_eps)
  model = transformers.BertForMaskedLM(hf_cfg).train()
  dtype = torch.bfloat16 if m.dtype == "bfloat16" and torch.cuda.is_available() else None
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model.to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=c.optimizer.lr, betas=(c.optimizer.b1, c.optimizer.b2),
                          eps=c.optimizer.eps, weight_decay=c.optimizer.weight_decay)
  inputs = torch.tensor(ids, dtype=torch.long, device=device)
  gen = torch.Generator(device="cpu").manual_seed(0)

  def one_step(_):
    # DataCollatorForLanguageModeling's rule: 15% chosen, 80% [MASK], 10% random, 10% kept; labels -100 elsewhere.
    labels = inputs.clone()
    prob = torch.full(labels.shape, 0.15)
    prob[:, 0] = prob[:, -1] = 0.0
    chosen = torch.bernoulli(prob, generator=gen).bool().to(device)
    labels[~chosen] = -100
    x = inputs.clone()
    replace = torch.bernoulli(torch.full(labels.shape, 0.8), generator=gen).bool().to(device) & chosen
    x[replace] = SPECIAL["mask"]
    rand = torch.bernoulli(torch.full(labels.shape, 0.5), generator=gen).bool().to(device) & chosen & ~replace
    x[rand] = torch.randint(m.vocab_size, labels.shape, generator=gen).to(device)[rand]
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
      loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), c.optimizer.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)

  return ids.size * n_steps / seconds(one_step, n_steps, warmup)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/mlm.py:tiny")
  p.add_argument("--batch-size", type=int, default=0, help="default: the config's global batch")
  p.add_argument("--seq-len", type=int, default=0, help="default: the config's")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--skip-reference", action="store_true")
  args = p.parse_args()

  c = load_config(args.config)
  b = args.batch_size or c.data.global_batch_size
  seq = args.seq_len or c.data.seq_len
  c.data.global_batch_size = b
  if jax.default_backend() == "cpu":
    c.model.dtype = "float32"     # bf16 matmuls are emulated (slow) on most CPUs; the reference runs fp32 too
  ids = random_batch(b, seq, c.model.vocab_size)
  ours = bench_ours(c, ids, args.steps, args.warmup)
  print(f"ours: {ours:,.0f} tokens/s", file=sys.stderr)
  result = {"config": args.config, "batch_size": b, "seq_len": seq, "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(), "dtype": c.model.dtype,
            "ours_tokens_per_s": round(ours, 1)}
  peak = metrics_lib.peak_flops(jax.devices()[0], c.peak_flops_per_device)
  if peak:
    flops = metrics_lib.train_flops_per_token(BertConfig(**c.model), seq, c.mlm.mask_rate)
    result["mfu"] = round(flops * ours / (peak * jax.device_count()), 4)
  if not args.skip_reference:
    ref = bench_reference(c, ids, args.steps, args.warmup)
    print(f"reference (transformers + torch AdamW): {ref:,.0f} tokens/s", file=sys.stderr)
    result.update(reference_tokens_per_s=round(ref, 1), ratio=round(ours / ref, 3))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
