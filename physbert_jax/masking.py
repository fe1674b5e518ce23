"""Dynamic MLM masking inside the jitted step (RoBERTa): a fresh mask for every sequence at every step.

Per sequence, exactly round(15% x eligible tokens) positions are chosen (at least one), never [CLS]/[SEP]/[PAD].
Of the chosen: 80% become [MASK], 10% a uniformly random token, 10% stay as they are (BERT, Sec. 3.1).

The number of chosen positions is bounded by K = ceil(mask_rate * L) + 1 for a sequence of length L, so the
chosen positions fit in a static (B, K) array and the model projects only those onto the vocabulary. Slots past a
sequence's count have weight 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp


class MaskedBatch(NamedTuple):
  input_ids: jax.Array   # (B, L) with [MASK] / random / kept tokens at the chosen positions
  positions: jax.Array   # (B, K) int32 chosen positions (0 in unused slots)
  labels: jax.Array      # (B, K) int32 original token ids at those positions
  weights: jax.Array     # (B, K) float32, 1 for a real prediction, 0 for an unused slot


def max_predictions(seq_len: int, mask_rate: float) -> int:
  return math.ceil(mask_rate * seq_len) + 1


def mask_tokens(rng: jax.Array, input_ids: jax.Array, attention_mask: jax.Array, *, mask_id: int,
                special_ids: Sequence[int], vocab_size: int, mask_rate: float = 0.15,
                mask_token_frac: float = 0.8, random_token_frac: float = 0.1) -> MaskedBatch:
  b, l = input_ids.shape
  k = min(max_predictions(l, mask_rate), l)
  select_rng, kind_rng, token_rng = jax.random.split(rng, 3)

  eligible = attention_mask.astype(bool)
  for sid in special_ids:
    eligible &= input_ids != sid                                        # (B, L)
  n_eligible = eligible.sum(-1)                                         # (B,)
  n_mask = jnp.clip(jnp.round(mask_rate * n_eligible), 1, k).astype(jnp.int32)
  n_mask = jnp.where(n_eligible > 0, n_mask, 0)

  # A uniformly random subset of size n_mask: the n_mask eligible positions with the smallest random scores.
  scores = jnp.where(eligible, jax.random.uniform(select_rng, (b, l)), 2.0)
  _, positions = jax.lax.top_k(-scores, k)                              # (B, K), smallest scores first
  slot_used = jnp.arange(k)[None, :] < n_mask[:, None]                  # (B, K)
  positions = jnp.where(slot_used, positions, 0).astype(jnp.int32)
  labels = jnp.take_along_axis(input_ids, positions, axis=1)

  u = jax.random.uniform(kind_rng, (b, k))
  random_tokens = jax.random.randint(token_rng, (b, k), 0, vocab_size, dtype=input_ids.dtype)
  replacement = jnp.where(u < mask_token_frac, jnp.asarray(mask_id, input_ids.dtype),
                          jnp.where(u < mask_token_frac + random_token_frac, random_tokens, labels))
  # Scatter only the used slots: unused slots point at position 0 ([CLS]) and must not touch it.
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, k))
  scatter_pos = jnp.where(slot_used, positions, l)                      # l is out of bounds -> dropped
  masked = input_ids.at[rows, scatter_pos].set(replacement, mode="drop")
  return MaskedBatch(masked, positions, labels.astype(jnp.int32), slot_used.astype(jnp.float32))
