"""What every objective shares: the train state, its sharded constructors, and the Objective the loop runs.

An objective module (mlm.py, contrastive.py) holds its loss, its step, its input and its validation side by side,
and hands train.py an Objective; the loop, sharding, checkpoints and metrics are the same for all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from physbert_jax.convert import EncoderSettings


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer updates done
  params: Any
  opt_state: Any


def create_state(params, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


@dataclasses.dataclass
class Objective:
  """What differs between training objectives; everything else is train.py's."""
  batches: Callable              # start step -> iterator of this process's batches (dicts of numpy arrays)
  steps_per_epoch: int
  init_params: Callable          # rng -> boxed (logically partitioned) params
  make_step: Callable            # (tx, schedule) -> step(state, batch, rng) -> (state, metrics), pure, for jit
  evaluate: Callable | None      # (params, step) -> {name: float}
  best_metric: str | None        # the evaluate() key whose maximum marks the best checkpoint
  batch_cost: Callable           # this process's batch -> (tokens computed, padding included; training FLOPs)
  tokenizer_dir: str
  encoder: EncoderSettings       # written to workdir/encoder.json: how this run's checkpoints encode
  describe: str


def total_steps(config, steps_per_epoch: int) -> int:
  total = config.total_steps or config.num_epochs * steps_per_epoch
  if total <= 0:
    raise ValueError("nothing to train: set config.total_steps or config.num_epochs")
  return total


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
