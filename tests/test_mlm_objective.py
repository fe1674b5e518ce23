"""Dynamic masking statistics and the MLM loss against independent NumPy / PyTorch computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physbert_jax import masking, mlm

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 1000


def _batch(rng, b=64, l=64):
  ids = rng.integers(5, VOCAB, (b, l))
  mask = np.ones((b, l), np.int32)
  lengths = rng.integers(10, l + 1, b)
  for i, n in enumerate(lengths):
    ids[i, 0] = CLS
    ids[i, n - 1] = SEP
    ids[i, rng.integers(1, n - 1)] = SEP          # a document boundary inside the sequence
    ids[i, n:] = PAD
    mask[i, n:] = 0
  return jnp.asarray(ids, jnp.int32), jnp.asarray(mask)


def test_masking_statistics_over_many_draws():
  ids, mask = _batch(np.random.default_rng(0))
  fn = jax.jit(lambda r: masking.mask_tokens(r, ids, mask, mask_id=MASK, special_ids=(CLS, SEP, PAD),
                                             vocab_size=VOCAB))
  eligible = np.asarray(mask.astype(bool) & (ids != CLS) & (ids != SEP))
  chosen_total = eligible_total = 0
  kinds = np.zeros(3)
  chosen_count = np.zeros(ids.shape)
  for seed in range(200):
    m = jax.device_get(fn(jax.random.key(seed)))
    w = m.weights.astype(bool)
    rows = np.nonzero(w)[0]
    pos = m.positions[w]
    chosen = np.zeros(ids.shape, bool)
    chosen[rows, pos] = True
    assert not (chosen & ~eligible).any(), "a special or padding token was chosen"
    assert len(set(zip(rows, pos))) == len(pos), "a position was chosen twice"
    np.testing.assert_array_equal(m.labels[w], np.asarray(ids)[rows, pos])
    # Unchosen tokens are untouched.
    np.testing.assert_array_equal(m.input_ids[~chosen], np.asarray(ids)[~chosen])
    new = m.input_ids[rows, pos]
    kinds += [(new == MASK).sum(), ((new != MASK) & (new != m.labels[w])).sum(), (new == m.labels[w]).sum()]
    chosen_total += w.sum()
    eligible_total += eligible.sum()
    chosen_count += chosen
    # Per sequence: exactly round(15% of eligible), at least one.
    np.testing.assert_array_equal(w.sum(1), np.maximum(np.round(0.15 * eligible.sum(1)), 1))
  assert abs(chosen_total / eligible_total - 0.15) < 0.005
  frac = kinds / kinds.sum()
  # 80 / 10 / 10; "random" that happens to redraw the original token counts as "kept" (prob 1/VOCAB).
  np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.01)
  # Fresh masks: every eligible position is chosen sometimes, at about the same rate.
  rate = chosen_count[eligible] / 200
  assert rate.min() > 0 and abs(rate.mean() - 0.15) < 0.01


def test_different_keys_give_different_masks():
  ids, mask = _batch(np.random.default_rng(1))
  a = masking.mask_tokens(jax.random.key(0), ids, mask, mask_id=MASK, special_ids=(CLS, SEP, PAD), vocab_size=VOCAB)
  b = masking.mask_tokens(jax.random.key(1), ids, mask, mask_id=MASK, special_ids=(CLS, SEP, PAD), vocab_size=VOCAB)
  assert not np.array_equal(a.positions, b.positions)


def test_mlm_loss_equals_pytorch_cross_entropy():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 7, 50)).astype(np.float32) * 3
  labels = rng.integers(0, 50, (4, 7))
  weights = (rng.random((4, 7)) < 0.7).astype(np.float32)
  sums = mlm.mlm_loss_sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  # Reference: PyTorch's cross entropy with ignore_index on the unused slots, as HF BertForMaskedLM computes it.
  t_labels = torch.tensor(np.where(weights > 0, labels, -100))
  ref = torch.nn.functional.cross_entropy(torch.tensor(logits).view(-1, 50), t_labels.view(-1), ignore_index=-100)
  np.testing.assert_allclose(float(sums["loss_sum"] / sums["weight_sum"]), ref.item(), rtol=1e-6)
  acc = ((logits.argmax(-1) == labels) * weights).sum() / weights.sum()
  np.testing.assert_allclose(float(sums["correct_sum"] / sums["weight_sum"]), acc, rtol=1e-6)
