"""The contrastive loss against sentence-transformers, on 8 devices vs 1, and GradCache vs full-batch gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from physbert_jax import contrastive, optimizer, sharding, steps
from physbert_jax.model import Bert, BertConfig

SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def _embeddings(b=16, h=24, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(b, h)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("hard_negatives", [False, True])
def test_loss_equals_sentence_transformers_mnrl(hard_negatives):
  torch = pytest.importorskip("torch")
  from sentence_transformers.sentence_transformer import losses
  a, p, n = _embeddings()
  ref_loss = losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
  embs = [torch.tensor(a), torch.tensor(p)] + ([torch.tensor(n)] if hard_negatives else [])
  ref = ref_loss.compute_loss_from_embeddings(embs, None).item()
  ours, _ = contrastive.contrastive_loss(jnp.asarray(a), jnp.asarray(p), jnp.asarray(n) if hard_negatives else None,
                                         temperature=0.05)
  np.testing.assert_allclose(float(ours), ref, rtol=1e-5)


def test_symmetric_loss_equals_sentence_transformers():
  torch = pytest.importorskip("torch")
  from sentence_transformers.sentence_transformer import losses
  a, p, _ = _embeddings(seed=1)
  import warnings
  warnings.filterwarnings("ignore", message=".*MultipleNegativesSymmetricRankingLoss is deprecated.*")
  ref = losses.MultipleNegativesSymmetricRankingLoss(model=None, scale=20.0).compute_loss_from_embeddings(
      [torch.tensor(a), torch.tensor(p)], None).item()
  ours, _ = contrastive.contrastive_loss(jnp.asarray(a), jnp.asarray(p), temperature=0.05, symmetric=True)
  np.testing.assert_allclose(float(ours), ref, rtol=1e-5)


def test_duplicate_texts_are_not_negatives():
  """Rows 0 and 1 share a positive text: masking equals dropping column 1 from row 0 (and 0 from row 1) by hand."""
  a, p, _ = _embeddings(b=4, seed=2)
  p[1] = p[0] * 2.0                                       # same text -> same direction
  hashes = dict(anchor_hash=jnp.arange(4), positive_hash=jnp.array([7, 7, 8, 9]))
  ours, _ = contrastive.contrastive_loss(jnp.asarray(a), jnp.asarray(p), temperature=0.05, **hashes)
  an = a / np.linalg.norm(a, axis=1, keepdims=True)
  pn = p / np.linalg.norm(p, axis=1, keepdims=True)
  s = an @ pn.T / 0.05
  s[0, 1] = s[1, 0] = -np.inf
  ref = np.mean([np.log(np.exp(s[i] - s[i].max()).sum()) + s[i].max() - s[i, i] for i in range(4)])
  np.testing.assert_allclose(float(ours), ref, rtol=1e-5)


def test_same_label_positives_are_not_negatives():
  """label_hash masks every positive of the anchor's class (a label of 0 is none): by hand, anchor i's softmax runs
  over its own positive and the positives of other classes only."""
  a, p, _ = _embeddings(b=6, seed=3)
  labels = np.array([5, 5, 9, 9, 9, 0])                   # two classes and one unlabelled pair
  ours, _ = contrastive.contrastive_loss(jnp.asarray(a), jnp.asarray(p), temperature=0.05,
                                         label_hash=jnp.asarray(labels))
  an = a / np.linalg.norm(a, axis=1, keepdims=True)
  pn = p / np.linalg.norm(p, axis=1, keepdims=True)
  s = (an @ pn.T / 0.05).astype(np.float64)
  ref = []
  for i in range(6):
    keep = [j for j in range(6) if j == i or labels[i] == 0 or labels[j] != labels[i]]
    ref.append(np.log(np.exp(s[i, keep]).sum()) - s[i, i])
  np.testing.assert_allclose(float(ours), np.mean(ref), rtol=1e-5)
  plain, _ = contrastive.contrastive_loss(jnp.asarray(a), jnp.asarray(p), temperature=0.05)
  assert float(plain) > float(ours)                       # masking removes negatives: the loss can only drop


def _setup(mesh_shape, chunks=1, dropout=0.0):
  cfg = BertConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   max_position_embeddings=16, hidden_dropout=dropout, attention_dropout=0.0)
  c = ml_collections.ConfigDict(dict(temperature=0.05, symmetric=True, hard_negatives=True, mask_duplicates=True,
                                     grad_cache_chunks=chunks))
  mesh_cfg = ml_collections.ConfigDict(dict(data=mesh_shape[0], fsdp=mesh_shape[1], rules=[
      ("batch", ("data", "fsdp")), ("embed", "fsdp"), ("act_embed", None), ("length", None), ("vocab", None),
      ("mlp", None), ("heads", None)]))
  devices = jax.devices()[:mesh_shape[0] * mesh_shape[1]]
  mesh = sharding.make_mesh(mesh_cfg, devices)
  rules = sharding.logical_rules(mesh_cfg)
  model = Bert(cfg)
  opt = ml_collections.ConfigDict(dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, clip_norm=0.0,
                                       warmup_steps=0, decay="constant", end_lr_factor=0.0))
  tx, schedule = optimizer.make_optimizer(opt, 10)
  return model, tx, schedule, c, mesh, rules


def _batch(b=16, l=16):
  rng = np.random.default_rng(0)
  out = {}
  for g in contrastive.TEXT_GROUPS:
    ids = rng.integers(5, 128, (b, l)).astype(np.int32)
    mask = np.ones((b, l), np.int32)
    for i, n in enumerate(rng.integers(4, l + 1, b)):
      ids[i, 0], ids[i, n - 1], ids[i, n:], mask[i, n:] = 2, 3, 0, 0
    out[f"{g}_ids"], out[f"{g}_mask"] = ids, mask
    out[f"{g}_hash"] = rng.integers(0, 2**31 - 1, b).astype(np.int32)
  out["positive_hash"][5] = out["positive_hash"][3]      # one duplicate positive in the batch
  return out


def _grads_and_step(mesh_shape, chunks=1, dropout=0.0):
  model, tx, schedule, c, mesh, rules = _setup(mesh_shape, chunks, dropout)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    def init_params(rng):
      d = jnp.zeros((1, 16), jnp.int32)
      return model.init({"params": rng}, d, d + 1)["params"]
    state_sh, _, init_state, _ = steps.sharded_state_fns(init_params, tx, mesh, rules)
    step = jax.jit(contrastive.make_contrastive_step(model, tx, schedule, cfg=c, pooling="mean",
                                                     special_ids=SPECIAL),
                   in_shardings=(state_sh, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)))
    state = init_state(jax.random.key(0))
    new_state, metrics = step(state, sharding.global_batch(_batch(), mesh), jax.random.key(1))
    return jax.device_get(new_state.params), jax.device_get(metrics)


@pytest.fixture(scope="module")
def single_device():
  return _grads_and_step((1, 1))


@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4)])
def test_global_batch_loss_and_update_equal_single_device(single_device, mesh_shape):
  params, metrics = _grads_and_step(mesh_shape)
  ref_params, ref_metrics = single_device
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)


@pytest.mark.parametrize("mesh_shape", [(1, 1), (8, 1)])
def test_grad_cache_equals_full_batch(single_device, mesh_shape):
  params, metrics = _grads_and_step(mesh_shape, chunks=4)
  ref_params, ref_metrics = single_device
  np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)


def test_grad_cache_with_dropout_equals_gradient_through_the_same_masks():
  """Dropout on: GradCache's update equals the plain gradient of the loss whose chunk embeddings use the same
  dropout keys (derived here independently: fold_in(step key, group), split into chunks)."""
  import optax
  params, metrics = _grads_and_step((1, 1), chunks=4, dropout=0.1)
  model, tx, _, c, mesh, rules = _setup((1, 1), 4, 0.1)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    d = jnp.zeros((1, 16), jnp.int32)
    p0 = nn.unbox(model.init({"params": jax.random.key(0)}, d, d + 1)["params"])
    embed = contrastive.make_embed_fn(model, "mean", SPECIAL)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    step_key = jax.random.fold_in(jax.random.key(1), 0)

    def loss(p):
      embs = {}
      for k, g in enumerate(contrastive.TEXT_GROUPS):
        keys = jax.random.split(jax.random.fold_in(step_key, k), 4)
        # chunk j = examples j, j+4, ... (strided, so every chunk spans every device)
        ids = jnp.stack([batch[f"{g}_ids"][j::4] for j in range(4)])
        mask = jnp.stack([batch[f"{g}_mask"][j::4] for j in range(4)])
        chunks = jnp.stack([embed(p, ids[j], mask[j], keys[j]) for j in range(4)])   # (4, 4, H)
        embs[g] = chunks.swapaxes(0, 1).reshape(16, -1)
      return contrastive.contrastive_loss(embs["anchor"], embs["positive"], embs["negative"], temperature=0.05,
                                          symmetric=True, **{f"{g}_hash": batch[f"{g}_hash"]
                                                             for g in contrastive.TEXT_GROUPS})[0]
    ref_loss, grads = jax.value_and_grad(loss)(p0)
    updates, _ = tx.update(grads, tx.init(p0), p0)
    ref_params = optax.apply_updates(p0, updates)
  np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), params, ref_params)
