"""The MLM objective (paper Sec. 3.1, RoBERTa's recipe): its loss, its step, its input and its validation.

    objective(config, model, mesh, workdir) -> steps.Objective   (train.py runs it)

Dynamic masking: masks are drawn inside the jitted step from (rng, step), so every epoch sees new masks and a
resumed run replays the same ones. The validation is the loss and accuracy on the shards' validation split.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from physbert_jax import input_pipeline, masking, metrics as metrics_lib, multihost, sharding
from physbert_jax.convert import EncoderSettings
from physbert_jax.steps import Objective, TrainState


def mlm_loss_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """Cross-entropy over the masked positions only.

  logits (B, K, V), labels (B, K), weights (B, K) -> sums, not means: with gradient accumulation the step divides
  the summed loss of all micro-batches by their total number of predictions, so the gradient equals that of the
  whole batch at once whatever the split.
  """
  logits = logits.astype(jnp.float32)                                   # fp32 log-softmax over the vocabulary
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]   # (B, K)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return {
      "loss_sum": jnp.sum(nll * weights),
      "correct_sum": jnp.sum(correct * weights),
      "weight_sum": jnp.sum(weights),
  }


def make_mlm_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                  mlm: ml_collections.ConfigDict, special_ids: dict[str, int], vocab_size: int,
                  grad_accum_steps: int = 1) -> Callable:
  """Build step(state, batch, rng) for `jax.jit`.

  The step's randomness is fold_in(rng, state.step): masks and dropout are fresh every step (RoBERTa's dynamic
  masking) and identical when a resumed run replays a step. With grad_accum_steps = A the masked batch is split
  into A micro-batches scanned in sequence; summed losses are divided by the total number of predictions, so
  without dropout the update equals the one-shot update exactly.
  """
  never_mask = (special_ids["cls"], special_ids["sep"], special_ids["pad"])

  def micro_loss(params, micro, dropout_rng):
    _, logits = model.apply({"params": params}, micro["input_ids"], micro["attention_mask"],
                            masked_positions=micro["positions"], deterministic=False, rngs={"dropout": dropout_rng})
    sums = mlm_loss_sums(logits, micro["labels"], micro["weights"])
    return sums["loss_sum"], sums

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    mask_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step))
    # Masks for the whole batch at once: the accumulation split changes nothing but memory.
    m = masking.mask_tokens(mask_rng, batch["input_ids"], batch["attention_mask"], mask_id=special_ids["mask"],
                            special_ids=never_mask, vocab_size=vocab_size, mask_rate=mlm.mask_rate,
                            mask_token_frac=mlm.mask_token_frac, random_token_frac=mlm.random_token_frac)
    inputs = {"input_ids": m.input_ids, "attention_mask": batch["attention_mask"], "positions": m.positions,
              "labels": m.labels, "weights": m.weights}
    if grad_accum_steps == 1:
      (_, sums), grads = grad_fn(state.params, inputs, dropout_rng)
    else:
      # Micro-batch i = examples i, i + A, ...: every micro-batch spans every device's shard of the batch.
      micro_batches = jax.tree.map(lambda x: x.reshape(-1, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1), inputs)

      def body(carry, xs):
        i, micro = xs
        (_, sums), grads = grad_fn(state.params, micro, jax.random.fold_in(dropout_rng, i))
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      zeros = (jax.tree.map(jnp.zeros_like, state.params),
               {k: jnp.zeros((), jnp.float32) for k in ("loss_sum", "correct_sum", "weight_sum")})
      (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro_batches))
    n = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree.map(lambda g: g / n, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": sums["loss_sum"] / n,
        "mlm_accuracy": sums["correct_sum"] / n,
        "grad_norm": optax.tree.norm(grads),
        "lr": schedule(state.step),
        "masked_tokens": sums["weight_sum"],
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def make_mlm_eval_step(model, *, mlm: ml_collections.ConfigDict, special_ids: dict[str, int],
                       vocab_size: int) -> Callable:
  """eval(params, batch, rng) -> summed loss/accuracy with dropout off; a fixed rng gives comparable evals."""
  never_mask = (special_ids["cls"], special_ids["sep"], special_ids["pad"])

  def eval_step(params, batch, rng):
    m = masking.mask_tokens(rng, batch["input_ids"], batch["attention_mask"], mask_id=special_ids["mask"],
                            special_ids=never_mask, vocab_size=vocab_size, mask_rate=mlm.mask_rate,
                            mask_token_frac=mlm.mask_token_frac, random_token_frac=mlm.random_token_frac)
    _, logits = model.apply({"params": params}, m.input_ids, batch["attention_mask"],
                            masked_positions=m.positions, deterministic=True)
    return mlm_loss_sums(logits, m.labels, m.weights)

  return eval_step


def objective(config: ml_collections.ConfigDict, model, mesh, workdir: str) -> Objective:
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
  k = min(masking.max_predictions(seq_len, config.mlm.mask_rate), seq_len)

  def init_params(rng):
    d = jnp.zeros((1, seq_len), jnp.int32)
    return model.init({"params": rng}, d, d + 1, masked_positions=jnp.zeros((1, k), jnp.int32))["params"]

  def make_step(tx, schedule):
    return make_mlm_step(model, tx, schedule, mlm=config.mlm, special_ids=special, vocab_size=vocab,
                         grad_accum_steps=config.optimizer.grad_accum_steps)

  has_val = manifest["splits"].get("validation", {}).get("records", 0) > 0
  flops_per_token = metrics_lib.train_flops_per_token(model.cfg, seq_len, config.mlm.mask_rate)
  return Objective(
      batches=functools.partial(input_pipeline.stream, train, worker_count=config.data.worker_count),
      steps_per_epoch=steps_per_epoch, init_params=init_params, make_step=make_step,
      evaluate=_mlm_evaluator(config, data_dir, manifest, model, mesh) if has_val else None, best_metric=None,
      batch_cost=lambda local: (local["input_ids"].size, local["input_ids"].size * flops_per_token),
      tokenizer_dir=tokenizer_dir,
      # An MLM checkpoint encodes at the model's full length (what eval and convert read from encoder.json).
      encoder=EncoderSettings(pooling=config.pooling, max_length=model.cfg.max_position_embeddings),
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


def _resolve_shards(config) -> str:
  """config.data.shards: a build_mlm_shards folder, or `module:function` naming a builder, function(config) ->
  folder, that makes the shards on first use (configs/mlm.py:tiny names data_prep.demo's: no data step before
  the quickstart). Process 0 builds; then every process finds them complete and gets the same folder."""
  spec = config.data.shards
  module, sep, name = spec.partition(":")
  if not sep or os.path.exists(spec):
    return spec
  try:
    build = functools.partial(getattr(importlib.import_module(module), name), config)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"config.data.shards={spec!r}: no builder {name} in {module} ({e}); give a shard folder, or "
                     "module:function") from None
  multihost.once(f"shards {spec}", build)
  return build()


def _mlm_evaluator(config, data_dir, manifest, model, mesh):
  """MLM loss/accuracy on the first eval_batches batches of the validation split, the same masks every time."""
  special = manifest["special_ids"]
  eval_step = jax.jit(make_mlm_eval_step(model, mlm=config.mlm, special_ids=special,
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


