"""The train state and the jitted MLM step: a pure function (state, batch, rng) -> (state, metrics)."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from physbert_jax import masking, objectives


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer updates done
  params: Any
  opt_state: Any


def create_state(params, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


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
    sums = objectives.mlm_loss_sums(logits, micro["labels"], micro["weights"])
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
    return objectives.mlm_loss_sums(logits, m.labels, m.weights)

  return eval_step


def sharded_state_fns(init_params: Callable, tx: optax.GradientTransformation, mesh, rules):
  """Shardings of the train state from the model's logical axes, and jitted constructors that honour them.

  init_params(rng) returns boxed (nn.Partitioned) params. Returns (state_sharding, abstract_state,
  init_state(rng), state_from_params(params)); abstract_state carries shardings, for Orbax restores.
  """
  import flax.linen as nn
  from physbert_jax import sharding

  boxed = jax.eval_shape(lambda r: create_state(init_params(r), tx), jax.random.key(0))
  state_sharding = sharding.tree_shardings(boxed, mesh, rules)
  plain = jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed,
                       is_leaf=lambda x: isinstance(x, nn.Partitioned))
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                plain, state_sharding)
  init_state = jax.jit(lambda r: create_state(nn.unbox(init_params(r)), tx), out_shardings=state_sharding)
  from_params = jax.jit(lambda p: create_state(p, tx), in_shardings=(state_sharding.params,),
                        out_shardings=state_sharding)
  return state_sharding, abstract_state, init_state, from_params
