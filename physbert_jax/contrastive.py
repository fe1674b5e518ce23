"""The contrastive objective (paper Sec. 3.2): SimCSE-supervised / MultipleNegativesRankingLoss with in-batch
negatives and GradCache; its loss, its step, its input (pair shards) and its validation (the eval suite's tasks).

    objective(config, model, mesh, workdir) -> steps.Objective   (train.py runs it)

For anchor i the positive is positive i; every other positive in the *global* batch (and every hard negative, if
given) is a negative. Cosine similarities are divided by the temperature (0.05, i.e. sentence-transformers' scale
20) and fed to a softmax cross-entropy whose label sits on the diagonal. Under jit the batch is one global array
sharded over the data axes; the candidate embeddings are constrained to be replicated, which is the all-gather
that gives each device the global batch as negatives.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from physbert_jax import input_pipeline, metrics as metrics_lib, multihost, pair_pipeline, records, sharding
from physbert_jax.convert import EncoderSettings, Weights
from physbert_jax.model import pool
from physbert_jax.steps import Objective, TrainState

TEXT_GROUPS = ("anchor", "positive", "negative")


def contrastive_loss(anchors: jax.Array, positives: jax.Array, negatives: jax.Array | None = None, *,
                     temperature: float = 0.05, symmetric: bool = False, anchor_hash: jax.Array | None = None,
                     positive_hash: jax.Array | None = None, negative_hash: jax.Array | None = None,
                     label_hash: jax.Array | None = None):
  """anchors, positives (B, H), negatives (B, H) or None -> (mean loss, metrics).

  The hashes (B,) fingerprint the raw texts: when positive j (j != i) has the same text as positive i or comes
  with the same anchor as i, it is a second correct answer for anchor i, not a negative, and is masked out;
  likewise a hard negative whose text is anchor i's positive. label_hash (B,), 0 for none: positive j of the same
  class as pair i is masked too. For category pairs such a positive is as right an answer as positive i; left
  in, the loss pushes same-class abstracts apart (~1 of 31 negatives with 30 classes, ~4 with 8).
  """
  normalize = lambda x: x.astype(jnp.float32) / jnp.maximum(jnp.linalg.norm(x.astype(jnp.float32), axis=-1,
                                                                            keepdims=True), 1e-12)
  a, p = normalize(anchors), normalize(positives)
  b = a.shape[0]
  candidates = p if negatives is None else jnp.concatenate([p, normalize(negatives)], axis=0)   # (C, H)
  candidates = nn.with_logical_constraint(candidates, (None, None))   # replicated: the global all-gather
  scores = a @ candidates.T / temperature                             # (B, C), fp32
  labels = jnp.arange(b)
  eye = jnp.eye(b, dtype=bool)
  if positive_hash is not None:
    dup = ((positive_hash[:, None] == positive_hash[None, :]) | (anchor_hash[:, None] == anchor_hash[None, :])) & ~eye
    if negatives is not None:
      dup = jnp.concatenate([dup, negative_hash[None, :] == positive_hash[:, None]], axis=1)
    scores = jnp.where(dup, -jnp.inf, scores)
  if label_hash is not None:
    same = (label_hash[:, None] == label_hash[None, :]) & (label_hash[:, None] != 0) & ~eye     # (B, B)
    if negatives is not None:
      same = jnp.concatenate([same, jnp.zeros_like(same)], axis=1)
    scores = jnp.where(same, -jnp.inf, scores)
  loss = optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()
  accuracy = (jnp.argmax(scores, axis=-1) == labels).mean()
  if symmetric:
    # positive -> anchor direction (sentence-transformers' MultipleNegativesSymmetricRankingLoss): over anchors only.
    back = p @ nn.with_logical_constraint(a, (None, None)).T / temperature
    if positive_hash is not None:
      back = jnp.where(dup[:, :b].T, -jnp.inf, back)
    if label_hash is not None:
      back = jnp.where(same[:, :b].T, -jnp.inf, back)
    loss = (loss + optax.softmax_cross_entropy_with_integer_labels(back, labels).mean()) / 2
  return loss, {"accuracy": accuracy, "positive_cosine": jnp.mean(jnp.sum(a * p, axis=-1))}


def make_embed_fn(model, pooling: str, special_ids: dict[str, int]) -> Callable:
  """embed(params, ids, mask, rng or None) -> (B, H) fp32 pooled embeddings; rng None means dropout off."""
  def embed(params, ids, mask, rng):
    hidden, _ = model.apply({"params": params}, ids, mask, deterministic=rng is None,
                            rngs=None if rng is None else {"dropout": rng})
    special = (ids == special_ids["cls"]) | (ids == special_ids["sep"])
    return pool(hidden, mask, pooling, special)
  return embed


def _chunked(x: jax.Array, n: int) -> jax.Array:
  """(B, ...) -> (n, B/n, ...), chunk j = examples j, j+n, ...: every chunk spans every device's shard."""
  return x.reshape(-1, n, *x.shape[1:]).swapaxes(0, 1)


def _unchunked(x: jax.Array) -> jax.Array:
  return x.swapaxes(0, 1).reshape(-1, *x.shape[2:])


def make_contrastive_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                          cfg: ml_collections.ConfigDict, pooling: str, special_ids: dict[str, int]) -> Callable:
  """step(state, batch, rng) -> (state, metrics).

  cfg.grad_cache_chunks = n > 1 turns on GradCache (Gao et al. 2021): (1) embed the batch in n chunks without
  gradients, (2) take the loss and its gradient w.r.t. the embeddings on the full batch, (3) re-embed chunk by chunk
  with the same dropout keys and back-propagate those embedding gradients into the parameters. Memory is that of
  one chunk; the gradient is that of the full batch.
  """
  embed = make_embed_fn(model, pooling, special_ids)
  groups = TEXT_GROUPS if cfg.hard_negatives else TEXT_GROUPS[:2]
  loss_kw = dict(temperature=cfg.temperature, symmetric=cfg.symmetric)

  def loss_from_embeddings(embs, batch):
    hashes = {f"{g}_hash": batch.get(f"{g}_hash") for g in TEXT_GROUPS} if cfg.mask_duplicates else {}
    if cfg.get("mask_same_label", False):
      hashes["label_hash"] = batch.get("label_hash")
    return contrastive_loss(embs["anchor"], embs["positive"], embs.get("negative"), **loss_kw, **hashes)

  def full_loss(params, batch, rng):
    embs = {g: embed(params, batch[f"{g}_ids"], batch[f"{g}_mask"], jax.random.fold_in(rng, k))
            for k, g in enumerate(groups)}
    return loss_from_embeddings(embs, batch)

  def grad_cache(params, batch, rng):
    n = cfg.grad_cache_chunks
    keys = {g: jax.random.split(jax.random.fold_in(rng, k), n) for k, g in enumerate(groups)}

    def embed_chunks(p, g):       # (n, B/n, L) -> (B, H)
      ids, mask = _chunked(batch[f"{g}_ids"], n), _chunked(batch[f"{g}_mask"], n)
      return _unchunked(jax.lax.map(lambda x: embed(p, x[0], x[1], x[2]), (ids, mask, keys[g])))

    embs = {g: jax.lax.stop_gradient(embed_chunks(params, g)) for g in groups}            # (1) no activations kept
    (loss, metrics), emb_grads = jax.value_and_grad(loss_from_embeddings, has_aux=True)(embs, batch)   # (2)

    def chunk_grads(carry, x):                                                               # (3)
      g_params = carry
      for g in groups:
        ids, mask, key, cot = x[g]
        _, vjp = jax.vjp(lambda p: embed(p, ids, mask, key), params)
        g_params = jax.tree.map(jnp.add, g_params, vjp(cot)[0])
      return g_params, None

    xs = {g: (_chunked(batch[f"{g}_ids"], n), _chunked(batch[f"{g}_mask"], n), keys[g], _chunked(emb_grads[g], n))
          for g in groups}
    grads, _ = jax.lax.scan(chunk_grads, jax.tree.map(jnp.zeros_like, params), xs)
    return (loss, metrics), grads

  def step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    if cfg.grad_cache_chunks > 1:
      (loss, metrics), grads = grad_cache(state.params, batch, rng)
    else:
      (loss, metrics), grads = jax.value_and_grad(full_loss, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def objective(config: ml_collections.ConfigDict, model, mesh, workdir: str) -> Objective:
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
  settings = encoder_settings(config)      # the step pools as the validator, encode and eval will

  def init_params(rng):
    d = jnp.zeros((1, length), jnp.int32)
    return model.init({"params": rng}, d, d + 1)["params"]          # no MLM head

  def make_step(tx, schedule):
    return make_contrastive_step(model, tx, schedule, cfg=config.contrastive, pooling=settings.pooling,
                                 special_ids=special)

  # Forward+backward of every text, plus the GradCache re-embedding pass (one more forward); each text group at
  # the length it was padded to this step.
  recompute = 4 / 3 if config.contrastive.grad_cache_chunks > 1 else 1.0

  def batch_cost(local):
    shapes = [v.shape for k, v in local.items() if k.endswith("_ids")]
    tokens = sum(b * l for b, l in shapes)
    return tokens, sum(b * l * metrics_lib.train_flops_per_token(model.cfg, l, 0.0) * recompute for b, l in shapes)

  evaluate = (_validator(config, model, mesh, tokenizer_dir, workdir, settings,
                         pair_pipeline.trained_classes([s["path"] for s in sources]))
              if config.validation.sets else None)
  pad = functools.partial(pair_pipeline.pad_to_common_length, pad_id=special["pad"])
  return Objective(
      batches=lambda start: map(pad, input_pipeline.stream(train, start, worker_count=config.data.worker_count)),
      steps_per_epoch=steps_per_epoch, init_params=init_params, make_step=make_step, evaluate=evaluate,
      best_metric="val_mean" if evaluate else None, batch_cost=batch_cost, tokenizer_dir=tokenizer_dir,
      encoder=settings,
      describe=f"contrastive on {', '.join(f'{k} ({v} pairs)' for k, v in counts.items())}: "
               f"{steps_per_epoch} steps/epoch")


def encoder_settings(config) -> EncoderSettings:
  """How the run's embeddings are meant to be computed: with the pooling it trains, at the length it trains on,
  normalised and lowercased as the model it started from declares (an imported sentence-transformers folder's
  encoder.json). The validator encodes with these; train.py writes them to workdir/encoder.json."""
  init = (EncoderSettings.read(config.init_from) if config.init_from else None) or EncoderSettings()
  return EncoderSettings(pooling=config.pooling, max_length=int(config.data.max_length), normalize=init.normalize,
                         lowercase=init.lowercase)


def _validator(config, model, mesh, tokenizer_dir: str, workdir: str, settings: EncoderSettings, trained=None):
  """The eval suite's tasks (clustering V-measure, citation accuracy, retrieval nDCG@10) on config.validation.sets,
  through the same Encoder the benchmark uses; `val_mean` is their mean, the paper's checkpoint criterion.

  The clustering set holds classes the category pairs do not teach (eval.build_sets keeps every class the corpus
  supports), so a run that forgets them loses V-measure and its checkpoint is not chosen. Logged beside it:
  V-measure on the `trained` classes and on the `untrained` ones, and 10-NN class accuracy."""
  from physbert_jax.encode import Encoder                    # with sklearn (the tasks' scores): loaded only
  from physbert_jax.evaluation import tasks as eval_tasks   # by a run that validates

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
    weights = Weights(cfg=model.cfg, params=jax.device_get(params), encoder=settings, tokenizer_dir=tokenizer_dir,
                      source=workdir, step=step)
    encoder = Encoder(weights, name=f"{os.path.basename(os.path.abspath(workdir))}@{step}", dtype="float32",
                      max_length=settings.max_length)
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
