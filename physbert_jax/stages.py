"""The two training stages the train loop can run, chosen by `config.objective`:

  mlm          masked-language-model pre-training over MLM shards (paper Sec. 3.1)
  contrastive  in-batch-negative fine-tuning over text-pair shards, validated with the eval suite (Sec. 3.2)

A stage supplies what differs: the input iterator, the run length, the parameter initialiser, the step and the
validation. The loop, sharding, checkpoints and metrics in train.py are shared.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from physbert_jax import (contrastive, input_pipeline, metrics as metrics_lib, multihost, pair_pipeline, records,
                          sharding, steps)
from physbert_jax.masking import max_predictions
from physbert_jax.model import BertConfig


@dataclasses.dataclass
class Stage:
  batches: Callable               # start step -> iterator of this process's batches (dicts of numpy arrays)
  total_steps: int
  steps_per_epoch: int
  init_params: Callable          # rng -> boxed (logically partitioned) params
  make_step: Callable            # (tx, schedule) -> step(state, batch, rng) -> (state, metrics)
  evaluate: Callable | None      # (params, step) -> {name: float}
  best_metric: str | None        # the evaluate() key whose maximum marks the best checkpoint
  batch_cost: Callable            # this process's batch -> (tokens computed, padding included; training FLOPs)
  tokenizer_dir: str
  describe: str
  prepare_batch: Callable = lambda local: local   # this process's batch -> what goes into global_batch
  encoder_settings: dict | None = None  # workdir/encoder.json: how the validator encoded, so exports and eval agree


def _total_steps(config, steps_per_epoch: int) -> int:
  total = config.total_steps or config.num_epochs * steps_per_epoch
  if total <= 0:
    raise ValueError("nothing to train: set config.total_steps or config.num_epochs")
  return total


# ---- MLM ---------------------------------------------------------------------------------------------------

def mlm_stage(config: ml_collections.ConfigDict, model, mesh, workdir: str) -> Stage:
  data_dir = _resolve_shards(config)
  train, manifest = input_pipeline.mlm_batches(
      data_dir, split="train", seq_len=config.data.seq_len, global_batch_size=config.data.global_batch_size,
      seed=config.seed, rows=sharding.process_rows(mesh, config.data.global_batch_size))
  tokenizer_dir = run_tokenizer(workdir, manifest["tokenizer"]["path"], data_dir, manifest["tokenizer"]["sha256"])
  special, vocab = manifest["special_ids"], manifest["vocab_size"]
  if vocab > model.cfg.vocab_size:
    raise ValueError(f"tokenizer of {data_dir} has {vocab} tokens, config.model.vocab_size is {model.cfg.vocab_size}")
  records_n = manifest["splits"]["train"]["records"]
  steps_per_epoch = records_n // config.data.global_batch_size
  seq_len = config.data.seq_len
  k = min(max_predictions(seq_len, config.mlm.mask_rate), seq_len)

  def init_params(rng):
    d = jnp.zeros((1, seq_len), jnp.int32)
    return model.init({"params": rng}, d, d + 1, masked_positions=jnp.zeros((1, k), jnp.int32))["params"]

  def make_step(tx, schedule):
    return steps.make_mlm_step(model, tx, schedule, mlm=config.mlm, special_ids=special, vocab_size=vocab,
                               grad_accum_steps=config.optimizer.grad_accum_steps)

  has_val = manifest["splits"].get("validation", {}).get("records", 0) > 0
  return Stage(
      batches=functools.partial(input_pipeline.stream, train, worker_count=config.data.worker_count),
      total_steps=_total_steps(config, steps_per_epoch), steps_per_epoch=steps_per_epoch,
      init_params=init_params, make_step=make_step,
      evaluate=_mlm_evaluator(config, data_dir, manifest, model, mesh) if has_val else None, best_metric=None,
      batch_cost=_mlm_cost(metrics_lib.train_flops_per_token(model.cfg, seq_len, config.mlm.mask_rate)),
      tokenizer_dir=tokenizer_dir,
      describe=f"MLM on {data_dir}: {records_n} sequences of <= {seq_len} tokens, {steps_per_epoch} steps/epoch")


def run_tokenizer(workdir: str, data_tokenizer: str, shards: str, sha256: str) -> str:
  """The tokenizer the run uses: its own copy (workdir/tokenizer) once it has one, so a resume does not depend on
  the data folder; else the one the shards name. Either must be the tokenizer the shards were built with (the
  manifest's sha256): a retrained tokenizer gives other ids, and training on would silently mix the two."""
  own = os.path.join(workdir, "tokenizer")
  path = own if os.path.isfile(os.path.join(own, "tokenizer.json")) else data_tokenizer
  tokenizer_json = os.path.join(path, "tokenizer.json")
  if not os.path.isfile(tokenizer_json):
    raise FileNotFoundError(f"{tokenizer_json} not found: the shards in {shards} were built with it (sha256 "
                            f"{sha256[:12]}...); restore it, or rebuild the shards with data_prep.build_mlm_shards")
  with open(tokenizer_json, "rb") as f:
    found = hashlib.sha256(f.read()).hexdigest()
  if found != sha256:
    raise ValueError(f"{tokenizer_json} (sha256 {found[:12]}...) is not the tokenizer the shards in {shards} were "
                     f"built with (sha256 {sha256[:12]}..., {shards}/manifest.json): rebuild the shards with "
                     "data_prep.build_mlm_shards --overwrite, or restore that tokenizer")
  return path


def _mlm_cost(flops_per_token: float) -> Callable:
  def cost(local):
    tokens = local["input_ids"].size
    return tokens, tokens * flops_per_token
  return cost


def _resolve_shards(config) -> str:
  if config.data.shards == "demo":
    from data_prep import demo  # the demo corpus ships with the repo; built into shards on first use
    build = functools.partial(demo.ensure_demo_data, config.data.cache_dir, seq_len=config.data.seq_len,
                              vocab_size=config.model.vocab_size)
    multihost.once("demo data", build)           # process 0 builds; then every process finds it complete
    return build()
  return config.data.shards


def _mlm_evaluator(config, data_dir, manifest, model, mesh):
  """MLM loss/accuracy on the first eval_batches batches of the validation split, the same masks every time."""
  special = manifest["special_ids"]
  eval_step = jax.jit(steps.make_mlm_eval_step(model, mlm=config.mlm, special_ids=special,
                                               vocab_size=manifest["vocab_size"]))
  batch_size = min(config.data.global_batch_size, manifest["splits"]["validation"]["records"])
  batch_size += -batch_size % jax.device_count()      # a multiple of the devices; the last batch is filled up with
                                                      # empty rows, which carry no masked token
  rng = jax.random.key(config.seed + 1)
  validation, _ = input_pipeline.mlm_batches(
      data_dir, split="validation", seq_len=config.data.seq_len, global_batch_size=batch_size, seed=0,
      rows=sharding.process_rows(mesh, batch_size), shuffle=False, repeat=False)

  def evaluate(params, step):
    totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight_sum": 0.0}
    for i in range(min(config.eval_batches, len(validation))):
      local = validation[i]
      sums = jax.device_get(eval_step(params, sharding.global_batch(local, mesh), jax.random.fold_in(rng, i)))
      totals = {k: totals[k] + float(sums[k]) for k in totals}
    n = max(totals["weight_sum"], 1.0)
    return {"eval_loss": totals["loss_sum"] / n, "eval_mlm_accuracy": totals["correct_sum"] / n}

  return evaluate


# ---- Contrastive -------------------------------------------------------------------------------------------

def contrastive_stage(config: ml_collections.ConfigDict, model, mesh, workdir: str) -> Stage:
  tokenizer_dir = config.data.tokenizer or os.path.join(config.init_from, "tokenizer")
  if os.path.isfile(os.path.join(workdir, "tokenizer", "tokenizer.json")):
    tokenizer_dir = os.path.join(workdir, "tokenizer")      # a resume uses the run's own copy
  if not os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
    raise FileNotFoundError(f"{tokenizer_dir}/tokenizer.json not found: set config.data.tokenizer, or "
                            "config.init_from to a workdir that has a tokenizer/ folder")
  sources = [dict(s) for s in config.data.sources]
  train, counts = pair_pipeline.pair_batches(
      sources, tokenizer_dir=tokenizer_dir, max_length=config.data.max_length,
      global_batch_size=config.data.global_batch_size, seed=config.seed,
      rows=sharding.process_rows(mesh, config.data.global_batch_size), hard_negatives=config.contrastive.hard_negatives,
      length_buckets=config.data.get("length_buckets", ()),
      one_source_per_batch=config.data.get("one_source_per_batch", True))
  steps_per_epoch = max(sum(counts.values()) // config.data.global_batch_size, 1)
  special = records.special_ids(os.path.join(tokenizer_dir, "tokenizer.json"), optional=("mask",))
  length = config.data.max_length

  def init_params(rng):
    d = jnp.zeros((1, length), jnp.int32)
    return model.init({"params": rng}, d, d + 1)["params"]          # no MLM head

  def make_step(tx, schedule):
    return contrastive.make_contrastive_step(model, tx, schedule, cfg=config.contrastive, pooling=config.pooling,
                                             special_ids=special)

  # Forward+backward of every text, plus the GradCache re-embedding pass (one more forward); each text group at
  # the length it was padded to this step.
  recompute = 4 / 3 if config.contrastive.grad_cache_chunks > 1 else 1.0

  def batch_cost(local):
    shapes = [v.shape for k, v in local.items() if k.endswith("_ids")]
    tokens = sum(b * l for b, l in shapes)
    return tokens, sum(b * l * metrics_lib.train_flops_per_token(model.cfg, l, 0.0) * recompute for b, l in shapes)

  settings = encoder_settings(config)
  evaluate = (_contrastive_validator(config, model, mesh, tokenizer_dir, workdir, settings,
                                     pair_pipeline.trained_classes([s["path"] for s in sources]))
              if config.validation.sets else None)
  return Stage(
      batches=functools.partial(input_pipeline.stream, train, worker_count=config.data.worker_count),
      total_steps=_total_steps(config, steps_per_epoch), steps_per_epoch=steps_per_epoch,
      init_params=init_params, make_step=make_step, evaluate=evaluate,
      best_metric="val_mean" if evaluate else None,
      batch_cost=batch_cost, tokenizer_dir=tokenizer_dir,
      prepare_batch=functools.partial(pair_pipeline.pad_to_common_length, pad_id=special["pad"]),
      encoder_settings=settings,
      describe=f"contrastive on {', '.join(f'{k} ({v} pairs)' for k, v in counts.items())}: "
               f"{steps_per_epoch} steps/epoch")


def encoder_settings(config) -> dict:
  """How the contrastive run's embeddings are meant to be computed: at the length it trained on, normalised and
  lowercased as the model it started from declares (an imported sentence-transformers folder's encoder.json).
  The validator encodes with these and the trainer writes them to workdir/encoder.json, which Encoder.load,
  eval.run and `convert to-hf` read: the best checkpoint's numbers are reproducible outside the run."""
  init = {}
  path = os.path.join(config.init_from, "encoder.json") if config.init_from else ""
  if path and os.path.exists(path):
    with open(path) as f:
      init = json.load(f)
  return {"max_length": int(config.data.max_length), "normalize": bool(init.get("normalize", False)),
          "lowercase": bool(init.get("lowercase", False))}


def _contrastive_validator(config, model, mesh, tokenizer_dir: str, workdir: str, settings: dict, trained=None):
  """The eval suite's tasks (clustering V-measure, citation accuracy, retrieval nDCG@10) on config.validation.sets,
  through the same Encoder the benchmark uses; `val_mean` is their mean, the paper's checkpoint criterion.

  The clustering set holds classes the category pairs do not teach (eval.build_sets keeps every class the corpus
  supports), so a run that forgets them loses V-measure and its checkpoint is not chosen. Logged beside it:
  V-measure on the `trained` classes and on the `untrained` ones, and 10-NN class accuracy."""
  from eval import tasks as eval_tasks
  from physbert_jax import convert
  from physbert_jax.encode import Encoder

  task_names = list(config.validation.tasks)
  replicate = jax.jit(lambda p: p, out_shardings=sharding.replicated(mesh))

  def evaluate(params, step):
    # Parameters sharded over processes (FSDP) are gathered first; process 0 validates and tells the others, so
    # every process records the same metrics and keeps the same best checkpoint.
    params = replicate(params)
    result = None
    if jax.process_index() == 0:
      with jax.set_mesh(sharding.local_mesh()):   # this process alone: the model's sharding constraints must not
        result = validate(params, step)           # name the devices of the others while they wait
    return multihost.broadcast(result)

  def validate(params, step):
    weights = convert.Weights(
        cfg=model.cfg, params=jax.device_get(params), pooling=config.pooling, max_length=settings["max_length"],
        normalize=settings["normalize"], lowercase=settings["lowercase"], tokenizer_dir=tokenizer_dir,
        source=workdir, step=step)
    encoder = Encoder(weights, name=f"{os.path.basename(os.path.abspath(workdir))}@{step}", dtype="float32",
                      max_length=settings["max_length"])
    cache = tempfile.mkdtemp(prefix="physbert-val-")   # embeddings of one step are never reused
    try:
      ctx = eval_tasks.Context(sets_dir=config.validation.sets, cache_dir=cache, seed=config.seed,
                               batch_size=config.validation.batch_size, folds=config.validation.folds,
                               trained_classes=trained)
      out = {}
      for name in task_names:
        result = eval_tasks.run(ctx, encoder, name)
        out[f"val_{name}"] = float(result["main"])
        for key, short in (("v_measure_trained", "trained"), ("v_measure_untrained", "untrained"),
                           ("knn_accuracy", "knn")):
          if key in result:
            out[f"val_{name}_{short}"] = float(result[key])
    finally:
      shutil.rmtree(cache, ignore_errors=True)
    out["val_mean"] = float(np.mean([out[f"val_{n}"] for n in task_names]))
    return out

  return evaluate


def build(config, model, mesh, workdir: str) -> Stage:
  if config.objective == "mlm":
    return mlm_stage(config, model, mesh, workdir)
  if config.objective == "contrastive":
    return contrastive_stage(config, model, mesh, workdir)
  raise ValueError(f"config.objective={config.objective!r}: use mlm or contrastive")


def check_tokenizer_fits(model_cfg: BertConfig, tokenizer_dir: str) -> None:
  path = os.path.join(tokenizer_dir, "tokenizer.json")
  from tokenizers import Tokenizer
  size = Tokenizer.from_file(path).get_vocab_size()
  if size > model_cfg.vocab_size:
    raise ValueError(f"{path} has {size} tokens, config.model.vocab_size is {model_cfg.vocab_size}")

