"""BERT encoder in Flax (Linen), as in the PhysBERT paper and Hugging Face's `BertForMaskedLM`.

Parameter names mirror Hugging Face so conversion is a rename (see `convert.py`):

    HF  encoder.layer.3.attention.self.query.weight  (out, in)
    ours encoder/layer_3/attention/self/query/kernel  (in, out)   # transposed, as every Dense

Every parameter carries logical axis names ("embed", "mlp", "heads", "vocab"); `sharding.py` maps them onto the mesh
from the config, so switching data parallel to FSDP is a config change, not a model change.

Parameters are fp32; activations run in `config.dtype` (bf16 on GPU). Softmax, LayerNorm statistics and the MLM
loss stay in fp32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Pooling = Literal["mean", "cls", "mean_no_special"]


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Defaults are BERT-base, which is what PhysBERT trains (paper, Sec. 3)."""
  vocab_size: int = 30523          # the paper's WordPiece vocabulary (= bert-base-uncased's size)
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12    # BERT's; not 1e-5/1e-6 as most Flax models
  hidden_dropout: float = 0.1
  # Dropout on attention probabilities. jax.nn.dot_product_attention (and cuDNN flash attention) has none, so a
  # non-zero value uses an explicit softmax path that materialises (B, N, L, L) during training.
  attention_dropout: float = 0.1
  initializer_range: float = 0.02
  pad_token_id: int = 0
  dtype: str = "float32"           # compute dtype of activations; "bfloat16" on GPU
  attention_impl: str | None = None  # None: XLA picks; "cudnn": flash attention on GPU; "xla"; "cpu": fast on CPU
  remat: bool = False              # recompute each layer's activations in the backward pass (saves memory)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


def _dense(cfg: BertConfig, features: int, axes: tuple[str | None, str | None], name: str) -> nn.Dense:
  return nn.Dense(
      features,
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)),
      name=name)


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps,
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name=name)


def _embed(cfg: BertConfig, num: int, axes: tuple[str | None, str], name: str) -> nn.Embed:
  return nn.Embed(
      num, cfg.hidden_size,
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.float32,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes),
      name=name)


class BertEmbeddings(nn.Module):
  cfg: BertConfig

  def setup(self):
    cfg = self.cfg
    self.word_embeddings = _embed(cfg, cfg.vocab_size, ("vocab", "embed"), "word_embeddings")
    self.position_embeddings = _embed(cfg, cfg.max_position_embeddings, (None, "embed"), "position_embeddings")
    self.token_type_embeddings = _embed(cfg, cfg.type_vocab_size, (None, "embed"), "token_type_embeddings")
    self.LayerNorm = _layer_norm(cfg, "LayerNorm")
    self.dropout = nn.Dropout(cfg.hidden_dropout)

  def __call__(self, input_ids, token_type_ids, deterministic: bool):
    length = input_ids.shape[1]
    if length > self.cfg.max_position_embeddings:
      raise ValueError(f"sequence length {length} > max_position_embeddings {self.cfg.max_position_embeddings}")
    x = (self.word_embeddings(input_ids)
         + self.position_embeddings(jnp.arange(length)[None, :])
         + self.token_type_embeddings(token_type_ids))               # (B, L, H)
    return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class BertSelfAttention(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    cfg = self.cfg
    b, l, _ = x.shape
    split = lambda t: t.reshape(b, l, cfg.num_heads, cfg.head_dim)  # (B, L, N, D)
    q = split(_dense(cfg, cfg.hidden_size, ("embed", "heads"), "query")(x))
    k = split(_dense(cfg, cfg.hidden_size, ("embed", "heads"), "key")(x))
    v = split(_dense(cfg, cfg.hidden_size, ("embed", "heads"), "value")(x))
    keep = attention_mask.astype(bool)                                 # (B, L): True on real tokens

    if cfg.attention_dropout > 0.0 and not deterministic:
      # Explicit path, only for attention-probability dropout: fp32 softmax over keys, padded keys masked.
      logits = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) / jnp.sqrt(cfg.head_dim).astype(jnp.float32)
      logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(logits, axis=-1)
      probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=False).astype(v.dtype)
      out = jnp.einsum("bnqk,bknd->bqnd", probs, v)
    elif cfg.attention_impl == "cpu":
      # XLA:CPU runs jax.nn.dot_product_attention's (B, L, N, D) einsums ~3x slower than this (bench/encode.py):
      # heads-major layout, fp32 logits, and the softmax normalised after the PV product.
      qt, kt, vt = (t.transpose(0, 2, 1, 3) for t in (q, k, v))                            # (B, N, L, D)
      logits = jnp.matmul(qt, kt.swapaxes(-1, -2), preferred_element_type=jnp.float32)
      logits = logits / jnp.sqrt(cfg.head_dim).astype(jnp.float32)
      logits = jnp.where(keep[:, None, None, :], logits, jnp.finfo(jnp.float32).min)        # (B, N, L, L)
      weights = jnp.exp(logits - logits.max(-1, keepdims=True))
      out = jnp.matmul(weights.astype(v.dtype), vt) / weights.sum(-1, keepdims=True).astype(v.dtype)
      out = out.transpose(0, 2, 1, 3)                                                         # (B, L, N, D)
    elif cfg.attention_impl == "cudnn":
      # Flash attention: padding given as lengths (sequences are right-padded), no (L, L) mask built.
      lengths = keep.sum(-1).astype(jnp.int32)
      out = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                         implementation="cudnn")
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=keep[:, None, None, :], implementation=cfg.attention_impl)
    return out.reshape(b, l, cfg.hidden_size)                          # (B, L, H)


class BertAttention(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    cfg = self.cfg
    h = BertSelfAttention(cfg, name="self")(x, attention_mask, deterministic)   # (B, L, H)
    return BertSelfOutput(cfg, name="output")(h, x, deterministic)


class BertSelfOutput(nn.Module):
  """Projection + dropout + residual + LayerNorm (post-LN, as BERT)."""
  cfg: BertConfig
  in_axis: str = "heads"

  @nn.compact
  def __call__(self, h, residual, deterministic: bool):
    cfg = self.cfg
    h = _dense(cfg, cfg.hidden_size, (self.in_axis, "embed"), "dense")(h)
    h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
    return _layer_norm(cfg, "LayerNorm")(h + residual)


class BertLayer(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    cfg = self.cfg
    x = BertAttention(cfg, name="attention")(x, attention_mask, deterministic)       # (B, L, H)
    inter = BertIntermediate(cfg, name="intermediate")(x)                           # (B, L, F)
    x = BertSelfOutput(cfg, in_axis="mlp", name="output")(inter, x, deterministic)  # (B, L, H)
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class BertIntermediate(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x):
    h = _dense(self.cfg, self.cfg.intermediate_size, ("embed", "mlp"), "dense")(x)
    return nn.gelu(h, approximate=False)   # exact erf GELU, as BERT ("gelu" in HF config)


class BertEncoder(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if self.cfg.remat else BertLayer
    for i in range(self.cfg.num_layers):
      x = layer_cls(self.cfg, name=f"layer_{i}")(x, attention_mask, deterministic)
    return x


class Bert(nn.Module):
  """BERT encoder + optional MLM head.

  __call__(input_ids, attention_mask, token_type_ids=None, masked_positions=None) returns the last hidden states
  (B, L, H) and, when `masked_positions` (B, K) is given, MLM logits (B, K, V) at those positions only: the
  vocabulary projection is the most expensive matmul of the model, and only ~15% of positions need it.
  """
  cfg: BertConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, token_type_ids=None, masked_positions=None, deterministic=True):
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    embeddings = BertEmbeddings(self.cfg, name="embeddings")
    x = embeddings(input_ids, token_type_ids, deterministic)                       # (B, L, H)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    hidden = BertEncoder(self.cfg, name="encoder")(x, attention_mask, deterministic)  # (B, L, H)
    if masked_positions is None:
      return hidden, None
    gathered = jnp.take_along_axis(hidden, masked_positions[..., None], axis=1)    # (B, K, H)
    table = embeddings.variables["params"]["word_embeddings"]["embedding"]
    table = table.value if isinstance(table, nn.Partitioned) else table
    logits = _Predictions(self.cfg, name="cls")(gathered, table)                   # (B, K, V) fp32
    return hidden, logits


class _Predictions(nn.Module):
  """Namespace so the head's parameters land at cls/predictions/... as in HF."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, h, word_embeddings):
    return _PredictionHead(self.cfg, name="predictions")(h, word_embeddings)


class _PredictionHead(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, h, word_embeddings):
    cfg = self.cfg
    t = _Transform(cfg, name="transform")(h)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                      (cfg.vocab_size,), jnp.float32)
    logits = jnp.einsum("...h,vh->...v", t, word_embeddings.astype(t.dtype), preferred_element_type=jnp.float32)
    return logits + bias


class _Transform(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, h):
    cfg = self.cfg
    h = _dense(cfg, cfg.hidden_size, ("embed", "act_embed"), "dense")(h)
    return _layer_norm(cfg, "LayerNorm")(nn.gelu(h, approximate=False))


# ---------------------------------------------------------------------------------------------------------------
# Pooling: token states -> one embedding per text.

def pool(hidden: jax.Array, attention_mask: jax.Array, mode: Pooling = "mean",
         special_mask: jax.Array | None = None) -> jax.Array:
  """(B, L, H), (B, L) -> (B, H) in fp32.

  mean: average over real tokens (sentence-transformers' default); cls: the [CLS] state;
  mean_no_special: average over real tokens except [CLS]/[SEP], as the released PhysBERT model card does
  (`special_mask` (B, L) is True on those tokens).
  """
  hidden = hidden.astype(jnp.float32)
  if mode == "cls":
    return hidden[:, 0]
  weights = attention_mask.astype(jnp.float32)
  if mode == "mean_no_special":
    if special_mask is None:
      raise ValueError("pooling 'mean_no_special' needs special_mask (True on [CLS]/[SEP])")
    weights = weights * (1.0 - special_mask.astype(jnp.float32))
  elif mode != "mean":
    raise ValueError(f"unknown pooling {mode!r}; use mean, cls or mean_no_special")
  summed = jnp.einsum("blh,bl->bh", hidden, weights)
  return summed / jnp.maximum(weights.sum(-1, keepdims=True), 1e-9)   # 1e-9 clamp as sentence-transformers


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
