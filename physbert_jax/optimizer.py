"""Optax AdamW with warmup + decay, a weight-decay mask and global-norm clipping, all from `config.optimizer`."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to cfg.lr, then linear or cosine decay to cfg.end_lr_factor * lr at total_steps."""
  warmup = int(cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  end = cfg.lr * cfg.end_lr_factor
  if cfg.decay == "linear":
    decay = optax.linear_schedule(cfg.lr, end, decay_steps)
  elif cfg.decay == "cosine":
    decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_factor)
  elif cfg.decay == "constant":
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"config.optimizer.decay={cfg.decay!r}: use linear, cosine or constant")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def decay_mask(params) -> dict:
  """True where weight decay applies: matrices and embeddings; not biases or LayerNorm (BERT, RoBERTa)."""
  def wants_decay(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]   # skips a Partitioned box's .value
    return not (names[-1] == "bias" or "LayerNorm" in names)
  return jax.tree_util.tree_map_with_path(wants_decay, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                               optax.Schedule]:
  checks = {"lr": cfg.lr >= 0, "b1": 0 <= cfg.b1 < 1, "b2": 0 <= cfg.b2 < 1, "eps": cfg.eps > 0,
            "weight_decay": cfg.weight_decay >= 0, "clip_norm": cfg.clip_norm >= 0,
            "warmup_steps": cfg.warmup_steps >= 0}
  bad = [f"config.optimizer.{k}={cfg[k]}" for k, ok in checks.items() if not ok]
  if bad:   # a negative lr trains uphill without a word; refuse it instead
    raise ValueError(f"{', '.join(bad)}: out of range (eps > 0; 0 <= b1, b2 < 1; lr, weight_decay, clip_norm, "
                     "warmup_steps >= 0)")
  schedule = learning_rate_schedule(cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask),
  )
  return tx, schedule
