"""The GPU check: correctness first, then MLM, contrastive and encoding throughput against the PyTorch path.

  python bench/gpu.py                  # one GPU; sized for about 8 minutes on an H200 (not yet timed there)
  python bench/gpu.py --smoke          # CPU, tiny shapes, about a minute: tests/test_bench_gpu.py runs it in CI
  python bench/gpu.py --only mlm_step,encode --out my.jsonl

Every measurement prints one JSON line {"check": ..., ...} and appends it to --out (default
bench/results/gpu-<device>.jsonl). The checks, in order:

  attention        cuDNN flash attention vs XLA's on a padded bf16 batch (on CPU: our "cpu" path vs XLA's):
                   relative error of the last hidden states over real tokens; bf16 keeps 8 mantissa bits, so the
                   tolerance is 2e-2 (1e-4 in fp32)
  mlm_loss         20 MLM steps of the model on real abstracts: loss finite and falling (last 5 < first 5)
  contrastive_loss one contrastive step: loss finite
  mlm_step         tokens/s and MFU of our MLM step, seq 128 and 512, attention cudnn and xla
  mlm_torch        transformers.BertForMaskedLM + torch.optim.AdamW, bf16 autocast, SDPA: tokens/s, our ratio
  contrastive      our contrastive step (global batch 256, max length 256, length buckets) vs sentence-transformers'
                   MultipleNegativesRankingLoss on the same pairs: pairs/s, MFU, ratio
  encode           our encoder vs SentenceTransformer.encode on the same texts, bf16: texts/s, ratio, agreement
  max_batch        the largest MLM batch that fits at seq 128 and 512 (from XLA's memory analysis at two batch
                   sizes, then one step at the predicted size on the GPU)

Models: BERT-base (and all-MiniLM-L6-v2's architecture for encoding) with random weights written once by
`transformers` into a folder both sides load, so "same model" holds exactly; throughput does not depend on the
weights' values. The tokenizer is a WordPiece trained on the shipped sample (data_prep/arxiv_sample), the texts its
abstracts. MFU counts matmul FLOPs as physbert_jax.metrics.train_flops_per_token documents (the MLM head on the
masked positions only, what our step computes); peak bf16 FLOPs from metrics.PEAK_BF16_FLOPS. Peak memory: XLA's
memory analysis of each compiled step (arguments + outputs + temporaries - aliased), torch's max_memory_allocated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from physbert_jax import contrastive, convert, metrics, mlm, optimizer, pair_pipeline, sharding, steps  # noqa: E402
from physbert_jax.masking import max_predictions  # noqa: E402
from physbert_jax.model import Bert, BertConfig  # noqa: E402

import gpu_torch  # noqa: E402
from gpu_inputs import SPECIAL, abstracts, make_tokenizer, model_folder, packed_rows  # noqa: E402

CHECKS = ("attention", "mlm_loss", "contrastive_loss", "mlm_step", "mlm_torch", "contrastive", "encode", "max_batch")
BERT_BASE = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
MINILM = dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


@dataclasses.dataclass
class Plan:
  """Shapes and counts: the GPU's, or --smoke's tiny ones."""
  arch: dict
  vocab: int
  mlm: tuple                  # ((seq_len, global batch), ...)
  steps: int                  # timed steps per measurement
  warmup: int
  loss_steps: int
  pair_batch: int
  pair_max_length: int
  buckets: tuple
  encode_texts: int
  encode_archs: tuple          # (name, arch)
  impls: tuple                 # attention implementations to time


def plan(smoke: bool, gpu: bool) -> Plan:
  if smoke:
    return Plan(TINY, 2048, ((32, 8), (64, 4)), 2, 1, 20, 16, 64, (16, 32), 64, (("tiny", TINY),),
                ("cudnn", "xla") if gpu else ("cpu", "xla"))
  return Plan(BERT_BASE, 30522, ((128, 1024), (512, 256)), 10, 3, 20, 256, 256, (32, 64, 128), 10_000,
              (("minilm", MINILM), ("bert-base", BERT_BASE)), ("cudnn", "xla"))


class Report:
  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.base = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
                 # the settings launch/slurm/train.sbatch should export are the ones a measurement ran with
                 "env": {k: v for k, v in sorted(os.environ.items())
                         if k.startswith(("XLA_", "NCCL_", "JAX_", "TF_GPU", "CUDA_"))}}

  def __call__(self, check: str, **fields) -> dict:
    line = {"check": check, **fields, **self.base, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps(line), flush=True)
    with open(self.path, "a") as f:     # appended line by line: a run cut short keeps what it measured
      f.write(json.dumps(line) + "\n")
    return line


# ---- our steps (inputs: gpu_inputs.py; the PyTorch reference: gpu_torch.py) ----

def opt_config(lr: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01, clip_norm=1.0,
                                        warmup_steps=0, decay="constant", end_lr_factor=0.0, grad_accum_steps=1))


def bert_config(arch: dict, vocab: int, dtype: str, impl: str | None, max_length: int = 512) -> BertConfig:
  return BertConfig(vocab_size=vocab, max_position_embeddings=max_length, dtype=dtype, hidden_dropout=0.1,
                    attention_dropout=0.0, attention_impl=impl, **arch)


def memory_bytes(compiled) -> int | None:
  m = compiled.memory_analysis()
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


MLM = ml_collections.ConfigDict(dict(mask_rate=0.15, mask_token_frac=0.8, random_token_frac=0.1))
DATA_PARALLEL = ml_collections.ConfigDict(dict(data=-1, fsdp=1, rules=[("batch", ("data", "fsdp"))]))
CONTRASTIVE = ml_collections.ConfigDict(dict(temperature=0.05, symmetric=False, hard_negatives=False,  # MNRL's scale 20
                                             mask_duplicates=False, grad_cache_chunks=1))


def mlm_step(cfg: BertConfig, batch: int, seq: int, lr: float = 1e-4, opt=None, mlm_cfg=MLM, mesh_cfg=DATA_PARALLEL):
  """(compiled step, initial state, device batch maker, mesh) for one MLM shape on all local devices; the optimizer
  is AdamW at a constant `lr` unless `opt` (a config's optimizer block) is given."""
  mesh, rules = sharding.make_mesh(mesh_cfg), sharding.logical_rules(mesh_cfg)
  model = Bert(cfg)
  tx, schedule = optimizer.make_optimizer(opt or opt_config(lr), total_steps=10_000)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    def init_params(rng):
      d = jnp.zeros((1, seq), jnp.int32)
      return model.init({"params": rng}, d, d + 1,
                        masked_positions=jnp.zeros((1, max_predictions(seq, 0.15)), jnp.int32))["params"]
    state_sh, abstract, init_state, _ = steps.sharded_state_fns(init_params, tx, mesh, rules)
    fn = jax.jit(mlm.make_mlm_step(model, tx, schedule, mlm=mlm_cfg, special_ids=SPECIAL,
                                   vocab_size=cfg.vocab_size,
                                   grad_accum_steps=opt.get("grad_accum_steps", 1) if opt else 1),
                 in_shardings=(state_sh, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
    spec = {k: jax.ShapeDtypeStruct((batch, seq), jnp.int32) for k in ("input_ids", "attention_mask")}
    compiled = fn.lower(abstract, spec, jax.random.key(0)).compile()
  put = lambda ids: sharding.global_batch({"input_ids": ids, "attention_mask": np.ones_like(ids)}, mesh)
  return compiled, (lambda: init_state(jax.random.key(0))), put, mesh


def timed_steps(step, state, batches, rng, n: int, warmup: int):
  for i in range(warmup):
    state, m = step(state, batches[i % len(batches)], rng)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for i in range(n):
    state, m = step(state, batches[i % len(batches)], jax.random.fold_in(rng, i))
  jax.block_until_ready(m)
  return time.perf_counter() - t, state


# ---- the checks ----

def check_attention(p: Plan, report, tol: float):
  candidate, reference = p.impls
  rng = np.random.default_rng(0)
  b, seq = 8, 128
  ids = rng.integers(5, p.vocab, (b, seq)).astype(np.int32)
  lengths = rng.integers(seq // 4, seq + 1, b)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask, ids, 0)
  dtype = "bfloat16" if tol > 1e-3 else "float32"
  params = Bert(bert_config(p.arch, p.vocab, dtype, reference)).init(
      jax.random.key(0), ids[:1], mask[:1], deterministic=True)
  out = {}
  for impl in (candidate, reference):
    model = Bert(bert_config(p.arch, p.vocab, dtype, impl))
    hidden, _ = jax.jit(lambda pr, i, m: model.apply(pr, i, m, deterministic=True))(params, ids, mask)
    out[impl] = np.asarray(hidden, np.float32)[mask.astype(bool)]
  err = float(np.linalg.norm(out[candidate] - out[reference]) / np.linalg.norm(out[reference]))
  return report("attention", candidate=candidate, reference=reference, dtype=dtype, rel_error=err, tolerance=tol,
                ok=bool(err <= tol), lengths=lengths.tolist())


def check_mlm_loss(p: Plan, report, tokenizer_dir: str, dtype: str):
  seq, batch = p.mlm[0]
  cfg = bert_config(p.arch, p.vocab, dtype, None)
  step, init, put, _ = mlm_step(cfg, batch, seq, lr=1e-4 if p.arch is BERT_BASE else 1e-3)
  rows = packed_rows(tokenizer_dir, seq, batch * p.loss_steps)
  state, losses = init(), []
  for i in range(p.loss_steps):
    state, m = step(state, put(rows[i * batch:(i + 1) * batch]), jax.random.key(i))
    losses.append(float(m["loss"]))
  first, last = np.mean(losses[:5]), np.mean(losses[-5:])
  return report("mlm_loss", seq_len=seq, batch=batch, losses=[round(x, 4) for x in losses],
                ok=bool(np.isfinite(losses).all() and last < first))


def check_mlm_step(p: Plan, report, tokenizer_dir: str, dtype: str) -> dict:
  peak = metrics.peak_flops(jax.devices()[0])
  best = {}
  for seq, batch in p.mlm:
    rows = packed_rows(tokenizer_dir, seq, batch * 2)
    for impl in p.impls:
      cfg = bert_config(p.arch, p.vocab, dtype, impl)
      step, init, put, _ = mlm_step(cfg, batch, seq)
      batches = [put(rows[:batch]), put(rows[batch:])]
      seconds, _ = timed_steps(step, init(), batches, jax.random.key(1), p.steps, p.warmup)
      tps = batch * seq * p.steps / seconds
      flops = metrics.train_flops_per_token(cfg, seq, 0.15)
      line = report("mlm_step", seq_len=seq, batch=batch, attention=impl, dtype=dtype, tokens_per_s=round(tps, 1),
                    mfu=round(flops * tps / (peak * jax.device_count()), 4) if peak else None,
                    memory_bytes=memory_bytes(step))
      best[seq] = max(best.get(seq, 0.0), line["tokens_per_s"])
  return best


def check_mlm_torch(p: Plan, report, folder: str, tokenizer_dir: str, ours: dict):
  for seq, batch, tps, bf16, memory in gpu_torch.bert_mlm(folder, tokenizer_dir, p.mlm, p.steps, p.warmup):
    report("mlm_torch", seq_len=seq, batch=batch, attention="sdpa", autocast_bf16=bf16,
           tokens_per_s=round(tps, 1), ratio=round(ours[seq] / tps, 3), memory_bytes=memory)


def check_contrastive(p: Plan, report, folder: str, dtype: str, loss_only: bool):
  """Ours: the training step on title -> abstract pairs padded per length bucket; reference: sentence-transformers
  MNRL (scale 20 = temperature 0.05) on the same pairs, padded to each batch's longest text."""
  from tokenizers import Tokenizer
  weights = convert.load(folder)
  cfg = dataclasses.replace(weights.cfg, dtype=dtype, attention_dropout=0.0,
                            attention_impl="cpu" if jax.default_backend() == "cpu" else None)
  tok = Tokenizer.from_file(os.path.join(weights.tokenizer_dir, "tokenizer.json"))
  tok.enable_truncation(p.pair_max_length)
  tok.no_padding()
  n_batches = 1 if loss_only else p.warmup + p.steps
  pairs = abstracts(p.pair_batch * n_batches)
  buckets = pair_pipeline.bucket_lengths(p.pair_max_length, p.buckets)
  pad = pair_pipeline.PadToBucket(buckets, SPECIAL["pad"])
  tx, schedule = optimizer.make_optimizer(opt_config(2e-5), 1000)
  mesh = sharding.make_mesh(DATA_PARALLEL)

  def batch(i):
    chunk = pairs[i * p.pair_batch:(i + 1) * p.pair_batch]
    enc = [tok.encode_batch([a for a, _ in chunk]), tok.encode_batch([b for _, b in chunk])]
    rows = [{"anchor_ids": np.array(a.ids, np.int32), "positive_ids": np.array(b.ids, np.int32)}
            for a, b in zip(*enc)]
    return sharding.global_batch(pad(rows), mesh)

  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.logical_rules(DATA_PARALLEL)):
    # Explicit shardings, as the trainer's step has: the state goes in and comes out replicated, so each batch shape
    # compiles once (left to propagation, the first call's placement differed from the output's: a second compile
    # inside the timed loop, 3.4 instead of 237 pairs/s on the smoke run).
    replicated = sharding.replicated(mesh)
    state = jax.device_put(steps.create_state(weights.params, tx), replicated)
    step = jax.jit(contrastive.make_contrastive_step(Bert(cfg), tx, schedule, cfg=CONTRASTIVE, pooling="mean",
                                                     special_ids=SPECIAL),
                   in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=(0,))
    batches = [batch(i) for i in range(n_batches)]
    if loss_only:
      _, m = step(state, batches[0], jax.random.key(0))
      loss = float(m["loss"])
      return report("contrastive_loss", batch=p.pair_batch, loss=round(loss, 4), ok=bool(np.isfinite(loss)))
    shapes = {}
    for x in batches:                                     # every bucket shape compiles before timing
      shapes.setdefault(tuple(v.shape for v in x.values()), x)
    for x in shapes.values():
      state, m = step(state, x, jax.random.key(0))
    jax.block_until_ready(m)
    t = time.perf_counter()
    for i in range(p.warmup, n_batches):
      state, m = step(state, batches[i], jax.random.key(i))
    jax.block_until_ready(m)
    seconds = time.perf_counter() - t
  ours = p.pair_batch * p.steps / seconds
  flops = sum(x[k].shape[0] * x[k].shape[1] * metrics.train_flops_per_token(cfg, x[k].shape[1], 0.0)
              for x in batches[p.warmup:] for k in ("anchor_ids", "positive_ids"))
  peak = metrics.peak_flops(jax.devices()[0])
  ref, ref_memory = gpu_torch.st_pairs_per_s(folder, pairs, p.pair_batch, p.pair_max_length, p.steps, p.warmup)
  report("contrastive", batch=p.pair_batch, max_length=p.pair_max_length, buckets=list(buckets), dtype=dtype,
         pairs_per_s=round(ours, 2), mfu=round(flops / seconds / (peak * jax.device_count()), 4) if peak else None,
         reference_pairs_per_s=round(ref, 2), ratio=round(ours / ref, 3), reference_memory_bytes=ref_memory)


def check_encode(p: Plan, report, name: str, folder: str, dtype: str):
  from physbert_jax.encode import Encoder
  texts = [a for _, a in abstracts(p.encode_texts)]
  batch = 256 if jax.default_backend() != "cpu" else 32
  ours = Encoder(convert.load(folder), name=name, dtype=dtype, max_length=256)
  ours.encode(texts, batch_size=batch, show_progress=False)          # compiles every bucket shape
  t = time.perf_counter()
  emb = ours.encode(texts, batch_size=batch, show_progress=False)
  ours_s = time.perf_counter() - t
  ref, ref_s = gpu_torch.st_encode(folder, texts, batch, dtype, max_length=256)
  cosine = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
  report("encode", model=name, texts=len(texts), batch=batch, dtype=dtype, texts_per_s=round(len(texts) / ours_s, 1),
         reference_texts_per_s=round(len(texts) / ref_s, 1), ratio=round(ref_s / ours_s, 3),
         min_cosine=round(float(cosine.min()), 5))


def check_max_batch(p: Plan, report, dtype: str, limit: int | None):
  """Memory is affine in the batch: two compiles give the slope; the prediction is checked by one real step."""
  for seq, batch in p.mlm:
    cfg = bert_config(p.arch, p.vocab, dtype, p.impls[0])
    small, large = batch // 2, batch
    m_small, m_large = (memory_bytes(mlm_step(cfg, b, seq)[0]) for b in (small, large))
    if m_small is None or m_large is None or limit is None:
      report("max_batch", seq_len=seq, batch=None, reason="no memory analysis or device memory limit here")
      continue
    per_row = (m_large - m_small) / (large - small)
    fixed = m_large - per_row * large
    fits = int((0.95 * limit - fixed) // per_row) // jax.device_count() * jax.device_count()
    verified = None
    if jax.default_backend() == "gpu":
      try:
        step, init, put, _ = mlm_step(cfg, fits, seq)
        _, m = step(init(), put(np.full((fits, seq), 5, np.int32)), jax.random.key(0))
        jax.block_until_ready(m)
        verified = True
      except Exception as e:   # XlaRuntimeError RESOURCE_EXHAUSTED: the prediction was too large
        verified = f"{type(e).__name__}: {str(e)[:200]}"
    report("max_batch", seq_len=seq, batch=fits, bytes_per_row=int(per_row), fixed_bytes=int(fixed),
           limit_bytes=limit, verified=verified)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--smoke", action="store_true", help="tiny shapes, any backend (the CI test)")
  ap.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
  ap.add_argument("--out", default=None, help="JSON lines appended here (default bench/results/gpu-<device>.jsonl)")
  args = ap.parse_args(argv)
  only = [c for c in args.only.split(",") if c]
  unknown = sorted(set(only) - set(CHECKS))
  if unknown:
    ap.error(f"--only {','.join(unknown)}: not a check; use {','.join(CHECKS)}")
  gpu = jax.default_backend() == "gpu"
  if not gpu and not args.smoke:
    ap.error("no GPU here (jax backend %r): run with --smoke for the tiny CPU version" % jax.default_backend())
  p = plan(args.smoke, gpu)
  dtype = "bfloat16" if gpu else "float32"        # bf16 matmuls are emulated (slow) on CPUs
  kind = jax.devices()[0].device_kind.lower().replace(" ", "-")
  report = Report(args.out or os.path.join(ROOT, "bench", "results", f"gpu-{kind}.jsonl"))
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer_dir = make_tokenizer(p.vocab, tmp)
    folders = {name: model_folder(arch, p.vocab, tokenizer_dir, os.path.join(tmp, name))
               for name, arch in (("main", p.arch), *p.encode_archs)}
    if "attention" in only:
      check_attention(p, report, tol=2e-2 if gpu else 1e-4)
    if "mlm_loss" in only:
      check_mlm_loss(p, report, tokenizer_dir, dtype)
    if "contrastive_loss" in only:
      check_contrastive(p, report, folders["main"], dtype, loss_only=True)
    ours = check_mlm_step(p, report, tokenizer_dir, dtype) if {"mlm_step", "mlm_torch"} & set(only) else {}
    if "mlm_torch" in only:
      check_mlm_torch(p, report, folders["main"], tokenizer_dir, ours)
    if "contrastive" in only:
      check_contrastive(p, report, folders["main"], dtype, loss_only=False)
    if "encode" in only:
      for name, _ in p.encode_archs:
        check_encode(p, report, name, folders[name], dtype)
    if "max_batch" in only:
      stats = jax.local_devices()[0].memory_stats() or {}
      check_max_batch(p, report, dtype, stats.get("bytes_limit") or (2 << 30 if args.smoke else None))
  report("done", seconds=round(time.perf_counter() - start, 1), checks=only)


if __name__ == "__main__":
  main()
