"""A train step on 8 fake CPU devices, data-parallel or FSDP, equals the same step on one device (1e-5)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import mlm as mlm_config
from physbert_jax import mlm, optimizer, sharding, steps
from physbert_jax.masking import max_predictions
from physbert_jax.model import Bert, BertConfig

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def _config(data, fsdp, accum=1):
  c = mlm_config.get_config("tiny")
  c.mesh.data, c.mesh.fsdp = data, fsdp
  c.optimizer.grad_accum_steps = accum
  c.model.update(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                 max_position_embeddings=32, attention_dropout=0.1)   # exercise both dropouts
  return c


def _batch(b=16, l=32):
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 256, (b, l)).astype(np.int32)
  mask = np.ones((b, l), np.int32)
  for i, n in enumerate(rng.integers(8, l + 1, b)):
    ids[i, 0], ids[i, n - 1] = 2, 3
    ids[i, n:], mask[i, n:] = 0, 0
  return {"input_ids": ids, "attention_mask": mask}


def _run(c, devices, num_steps=2):
  mesh = sharding.make_mesh(c.mesh, devices)
  rules = sharding.logical_rules(c.mesh)
  model = Bert(BertConfig(**c.model))
  tx, schedule = optimizer.make_optimizer(c.optimizer, total_steps=10)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    def init_params(rng):
      d = jnp.zeros((1, 32), jnp.int32)
      return model.init({"params": rng}, d, d + 1, masked_positions=jnp.zeros((1, max_predictions(32, 0.15)),
                                                                              jnp.int32))["params"]
    state_sh, _, init_state, _ = steps.sharded_state_fns(init_params, tx, mesh, rules)
    step = jax.jit(mlm.make_mlm_step(model, tx, schedule, mlm=c.mlm, special_ids=SPECIAL, vocab_size=256,
                                       grad_accum_steps=c.optimizer.grad_accum_steps),
                   in_shardings=(state_sh, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
    state = init_state(jax.random.key(0))
    losses = []
    for _ in range(num_steps):
      state, m = step(state, sharding.global_batch(_batch(), mesh), jax.random.key(1))
      losses.append(float(m["loss"]))
    leaf = state.params["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]
    return jax.device_get(state.params), losses, leaf.sharding


@pytest.fixture(scope="module")
def single():
  return _run(_config(1, 1), jax.devices()[:1])


@pytest.mark.parametrize("data,fsdp", [(8, 1), (1, 8), (2, 4)])
def test_sharded_step_equals_single_device(single, data, fsdp):
  assert jax.device_count() == 8, "conftest sets XLA_FLAGS for 8 CPU devices"
  params, losses, leaf_sharding = _run(_config(data, fsdp), jax.devices())
  ref_params, ref_losses, _ = single
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)
  # The (H, F) kernel is split along H over the fsdp axis (a no-op when fsdp=1): FSDP really shards parameters.
  assert tuple(leaf_sharding.spec)[:1] == ("fsdp",)
  assert len({str(index) for index in leaf_sharding.devices_indices_map((64, 128)).values()}) == fsdp


def test_gradient_accumulation_equals_one_shot():
  """Without dropout, 4 micro-batches give the one-shot update: losses summed over all predictions, then divided."""
  def config(accum):
    c = _config(1, 1, accum)
    c.model.update(hidden_dropout=0.0, attention_dropout=0.0)
    return c
  ref_params, ref_losses, _ = _run(config(1), jax.devices()[:1])
  params, losses, _ = _run(config(4), jax.devices()[:1])
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)


def test_batch_not_divisible_fails_clearly():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 8, "fsdp": 1}), jax.devices())
  with pytest.raises(ValueError, match="global_batch_size=12 must be divisible by the 8 batch shards"):
    sharding.check_batch_divides(12, mesh)
