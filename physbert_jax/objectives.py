"""Training objectives. The MLM loss here; the contrastive loss joins it in the contrastive stage."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
