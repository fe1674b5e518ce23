"""Config tests: every variant of every configs/ file parses, its model builds abstractly, its optimizer and mesh
are well formed."""

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mlm as mlm_config
from physbert_jax import optimizer, sharding
from physbert_jax.masking import max_predictions
from physbert_jax.model import Bert, BertConfig, count_params


VARIANTS = ([("mlm", v) for v in ("tiny", "base", "base512")] + [("contrastive", v) for v in ("base", "tiny", "minilm")]
            + [("subdomain", d + size) for d in ("cond-mat", "astro-ph", "hep") for size in ("", ":tiny")]
            + [("speedrun", "mlm"), ("speedrun", "contrastive")])


@pytest.mark.parametrize("module,variant", VARIANTS, ids=[f"{m}:{v}" for m, v in VARIANTS])
def test_every_variant_of_every_config_builds_abstractly(module, variant):
  c = importlib.import_module(f"configs.{module}").get_config(variant)
  cfg = BertConfig(**c.model)
  seq = c.data.get("seq_len") or c.data.max_length
  d = jnp.zeros((2, seq), jnp.int32)
  params = jax.eval_shape(lambda: nn.unbox(Bert(cfg).init(
      {"params": jax.random.key(0)}, d, d + 1, masked_positions=d[:, :max_predictions(seq, 0.15)])["params"]))
  n = count_params(params)
  if (module, variant) in (("mlm", "base"), ("mlm", "base512")):
    # BERT-base with tied MLM head: 109.5M encoder + 0.6M head transform/bias (HF BertForMaskedLM counts the same)
    assert 109e6 < n < 111e6
    assert c.model.vocab_size == 30523 and c.model.hidden_size == 768 and c.model.num_layers == 12
  assert c.data.global_batch_size % 8 == 0, "runs unchanged on 8 devices"
  tx, _ = optimizer.make_optimizer(c.optimizer, total_steps=1000)
  jax.eval_shape(tx.init, params)
  for axis, target in sharding.logical_rules(c.mesh):
    assert target is None or set(np.atleast_1d(target)) <= set(sharding.MESH_AXES)


def test_the_variant_list_covers_every_config_file():
  import os
  folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  files = {f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py"}
  assert {m for m, _ in VARIANTS} == files


def test_unknown_variant_fails():
  with pytest.raises(ValueError, match="unknown variant"):
    mlm_config.get_config("huge")


def test_weight_decay_mask_skips_bias_and_layernorm():
  cfg = BertConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                   max_position_embeddings=16)
  d = jnp.zeros((1, 8), jnp.int32)
  params = nn.unbox(Bert(cfg).init({"params": jax.random.key(0)}, d, d + 1, masked_positions=d[:, :2])["params"])
  mask = optimizer.decay_mask(params)
  flat = {"/".join(k.key for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat["encoder/layer_0/attention/self/query/kernel"] is True
  assert flat["embeddings/word_embeddings/embedding"] is True
  assert flat["encoder/layer_0/attention/self/query/bias"] is False
  assert flat["encoder/layer_0/output/LayerNorm/scale"] is False
  assert flat["cls/predictions/bias"] is False


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_schedule_warmup_then_decay(decay):
  c = mlm_config.get_config("tiny").optimizer
  c.warmup_steps, c.lr, c.decay, c.end_lr_factor = 10, 1e-3, decay, 0.0
  s = optimizer.learning_rate_schedule(c, total_steps=110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)],
                             [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)   # cosine is also lr/2 halfway


def test_adamw_update_matches_hand_computation():
  """One AdamW step by hand (clipping inactive): p - lr * (m/(sqrt(v)+eps) + wd * p), no decay on the bias."""
  c = mlm_config.get_config("tiny").optimizer
  c.warmup_steps, c.decay, c.lr, c.clip_norm = 0, "constant", 0.1, 100.0
  tx, _ = optimizer.make_optimizer(c, total_steps=10)
  params = {"dense": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([0.5])}}
  grads = {"dense": {"kernel": jnp.array([0.3, 0.1]), "bias": jnp.array([-0.2])}}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)

  def by_hand(p, g, wd):
    m, v = (1 - c.b1) * g, (1 - c.b2) * g ** 2
    m_hat, v_hat = m / (1 - c.b1), v / (1 - c.b2)
    return p - c.lr * (m_hat / (np.sqrt(v_hat) + c.eps) + wd * p)
  np.testing.assert_allclose(new["dense"]["kernel"], by_hand(np.array([1.0, -2.0]), np.array([0.3, 0.1]),
                                                             c.weight_decay), rtol=1e-6)
  np.testing.assert_allclose(new["dense"]["bias"], by_hand(np.array([0.5]), np.array([-0.2]), 0.0), rtol=1e-6)


def test_minilm_variant_matches_the_reference_model_and_init_mismatch_is_named(minilm, tmp_path):
  """configs/contrastive.py:minilm has all-MiniLM-L6-v2's architecture (its HF config.json is the reference);
  an init_from workdir of another architecture is refused naming each field and the override that fixes it."""
  import json
  import os
  from configs import contrastive as contrastive_config
  from physbert_jax import train
  with open(os.path.join(minilm, "config.json")) as f:
    hf = json.load(f)
  c = contrastive_config.get_config("minilm")
  assert (c.model.vocab_size, c.model.hidden_size, c.model.num_layers, c.model.num_heads,
          c.model.intermediate_size, c.model.max_position_embeddings) == (
      hf["vocab_size"], hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"],
      hf["intermediate_size"], hf["max_position_embeddings"])
  init = tmp_path / "init"
  init.mkdir()
  (init / "config.json").write_text(json.dumps({"model": {**c.model.to_dict(), "hidden_size": 768}}))
  c.init_from = str(init)
  with pytest.raises(ValueError, match=r"hidden_size: 768 there, 384 here.*--config.model.hidden_size=768"):
    train.check_init_architecture(c)
  (init / "config.json").write_text(json.dumps({"model": c.model.to_dict()}))
  train.check_init_architecture(c)            # the same architecture passes


PRINT_CONFIG = """
from absl import app
from ml_collections import config_flags
CONFIG = config_flags.DEFINE_config_file("config")
app.run(lambda argv: print("attention_impl=" + repr(CONFIG.value.model.attention_impl)))
"""


@pytest.mark.parametrize("override, expected", [([], "None"), (["--config.model.attention_impl=cudnn"], "'cudnn'")])
def test_attention_impl_is_overridable_from_the_command_line(override, expected):
  """--config.model.attention_impl=cudnn parses, as train.py's absl flags see it (a None-typed field cannot)."""
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run([sys.executable, "-c", PRINT_CONFIG, "--config", "configs/mlm.py:tiny", *override], cwd=repo,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0 and f"attention_impl={expected}" in p.stdout, p.stderr[-2000:]
