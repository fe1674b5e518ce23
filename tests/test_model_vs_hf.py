"""Reference test: our Flax BERT against transformers.BertForMaskedLM with the same (random) weights."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from physbert_jax import hf_names
from physbert_jax.model import Bert, pool


def _hf_model(seed=0):
  torch.manual_seed(seed)
  cfg = transformers.BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                intermediate_size=128, max_position_embeddings=64, hidden_act="gelu",
                                layer_norm_eps=1e-12)
  model = transformers.BertForMaskedLM(cfg).eval()
  # Random init has zero biases and unit LayerNorms; perturb them so the test sees every parameter.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "LayerNorm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model, cfg


def _batch():
  rng = np.random.default_rng(0)
  lengths = [23, 7, 16, 1 + 1]                          # mixed lengths, right-padded to 23
  ids = np.zeros((4, 23), np.int64)
  mask = np.zeros((4, 23), np.int64)
  for i, n in enumerate(lengths):
    ids[i, :n] = rng.integers(5, 512, n)
    mask[i, :n] = 1
  types = np.zeros_like(ids)
  types[0, 12:] = 1                                    # a sentence pair in row 0
  return ids, mask, types


@pytest.mark.parametrize("attention_impl", [None, "cpu"])
def test_hidden_states_and_mlm_logits_match_pytorch(attention_impl):
  hf, hf_cfg = _hf_model()
  cfg = hf_names.config_from_hf(hf_cfg.to_dict(), attention_impl=attention_impl)
  params = hf_names.from_hf_state_dict({k: v.numpy() for k, v in hf.state_dict().items()}, cfg)
  ids, mask, types = _batch()
  positions = np.array([[0, 5, 22], [1, 2, 6], [3, 4, 15], [0, 1, 1]], np.int32)

  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types),
             output_hidden_states=True)
  ref_hidden = out.hidden_states[-1].numpy()
  ref_logits = np.take_along_axis(out.logits.numpy(), positions[..., None], axis=1)

  hidden, logits = Bert(cfg).apply({"params": params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask),
                                   jnp.asarray(types, jnp.int32), masked_positions=jnp.asarray(positions))
  real = mask.astype(bool)                              # padded positions carry no meaning in either model
  np.testing.assert_allclose(np.asarray(hidden)[real], ref_hidden[real], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4, rtol=1e-4)

  # Mean pooling over real tokens equals the masked mean of HF's states.
  emb = pool(hidden, jnp.asarray(mask), "mean")
  ref = (ref_hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  np.testing.assert_allclose(np.asarray(emb), ref, atol=1e-4, rtol=1e-4)


def test_round_trip_names_are_exact():
  hf, hf_cfg = _hf_model(1)
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  cfg = hf_names.config_from_hf(hf_cfg.to_dict())
  back = hf_names.to_hf_state_dict(hf_names.from_hf_state_dict(state, cfg))
  for k, v in back.items():
    np.testing.assert_array_equal(v, state[k], err_msg=k)
  assert set(state) - set(back) <= {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}


def test_pooling_modes_by_hand():
  hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  special = jnp.array([[1, 0, 1, 0], [1, 0, 0, 1]])
  np.testing.assert_allclose(pool(hidden, mask, "cls"), hidden[:, 0])
  np.testing.assert_allclose(pool(hidden, mask, "mean")[0], hidden[0, :3].mean(0))
  np.testing.assert_allclose(pool(hidden, mask, "mean_no_special", special)[0], hidden[0, 1])
  np.testing.assert_allclose(pool(hidden, mask, "mean_no_special", special)[1], hidden[1, 1:3].mean(0))


def test_shape_mismatch_names_the_tensor():
  hf, hf_cfg = _hf_model()
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  cfg = hf_names.config_from_hf({**hf_cfg.to_dict(), "intermediate_size": 96})
  with pytest.raises(ValueError, match=r"encoder\.layer\.0\.intermediate\.dense\.(weight|bias)'.*\(128.*\(96"):
    hf_names.from_hf_state_dict(state, cfg)
