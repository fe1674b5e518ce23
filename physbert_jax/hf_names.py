"""Parameter names and configs between physbert-jax and Hugging Face BERT: a rename plus a transpose of kernels.

    ours: encoder/layer_3/attention/self/query/kernel (in, out)   HF: encoder.layer.3.attention.self.query.weight
    ours: embeddings/LayerNorm/scale                               HF: embeddings.LayerNorm.weight
    ours: cls/predictions/bias                                     HF: cls.predictions.bias (decoder tied)

HF checkpoints prefix the encoder with `bert.` in BertForMaskedLM/BertForPreTraining and not in BertModel; both are
read. The pooler (`pooler.dense`, NSP-trained) and NSP head are not part of our model and are ignored on import.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from physbert_jax.model import BertConfig

_IGNORED = re.compile(r"^(pooler\.|cls\.seq_relationship\.|cls\.predictions\.decoder\.|embeddings\.position_ids$)")


def _hf_leaf(path: tuple[str, ...]) -> tuple[str, bool]:
  """Our parameter path -> (HF name without the `bert.` prefix, transpose?)."""
  *mods, leaf = path
  mods = [m.replace("layer_", "layer.") if re.fullmatch(r"layer_\d+", m) else m for m in mods]
  if leaf == "kernel":
    return ".".join(mods + ["weight"]), True
  if leaf in ("embedding", "scale"):
    return ".".join(mods + ["weight"]), False
  return ".".join(mods + [leaf]), False


def flatten(params: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in params.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def to_hf_state_dict(params: Mapping[str, Any], prefix: str = "bert.") -> dict[str, np.ndarray]:
  """Our params -> HF state dict (numpy, fp32). Encoder names get `prefix` ('bert.' for BertForMaskedLM, '' for
  BertModel); the MLM head, when present, keeps `cls.` and its tied decoder weight is written explicitly."""
  out = {}
  for path, value in flatten(params).items():
    name, transpose = _hf_leaf(path)
    array = np.asarray(value, dtype=np.float32)
    out[name if path[0] == "cls" else prefix + name] = np.ascontiguousarray(array.T if transpose else array)
  if "cls" in params:
    out["cls.predictions.decoder.weight"] = out[prefix + "embeddings.word_embeddings.weight"]
    out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
  return out


def from_hf_state_dict(state: Mapping[str, Any], cfg: BertConfig, *, source: str = "checkpoint") -> dict:
  """HF state dict (any of BertModel / BertForMaskedLM / sentence-transformers) -> our params (numpy fp32).

  Checks every expected tensor's presence and shape against `cfg`, naming the tensor and both shapes.
  """
  from physbert_jax.model import Bert  # local: avoids building the model just to import names
  import jax
  import jax.numpy as jnp
  import flax.linen as nn

  has_head = any(k.startswith("cls.predictions.transform") for k in state)
  dummy = jnp.zeros((1, 4), jnp.int32)
  abstract = jax.eval_shape(lambda: nn.unbox(Bert(cfg).init(
      {"params": jax.random.key(0)}, dummy, dummy + 1,
      masked_positions=jnp.zeros((1, 1), jnp.int32) if has_head else None)["params"]))
  stripped = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in state.items()}
  flat = {}
  for path, spec in flatten(abstract).items():
    name, transpose = _hf_leaf(path)
    if name not in stripped:
      raise KeyError(f"{source}: tensor {name!r} is missing (needed for our {'/'.join(path)})")
    array = np.asarray(stripped[name], dtype=np.float32)
    array = array.T if transpose else array
    if array.shape != tuple(spec.shape):
      raise ValueError(f"{source}: tensor {name!r} has shape {tuple(array.shape)[::-1] if transpose else array.shape}"
                       f", the config needs {tuple(spec.shape)[::-1] if transpose else tuple(spec.shape)}")
    flat[path] = np.ascontiguousarray(array)
  known = {_hf_leaf(p)[0] for p in flat}
  unused = sorted(k for k in stripped if k not in known and not _IGNORED.match(k))
  if unused:
    raise ValueError(f"{source}: tensors not part of a BERT encoder: {unused[:8]}; is this a BERT checkpoint?")
  return unflatten(flat)


def config_from_hf(hf: Mapping[str, Any], **overrides) -> BertConfig:
  """HF `config.json` dict -> BertConfig. Refuses architectures that are not BERT."""
  model_type = hf.get("model_type")
  if model_type != "bert":
    raise ValueError(f"model_type {model_type!r} is not 'bert': only BERT-family checkpoints convert "
                     "(BERT, SciBERT, MiniLM, bge, e5, PhysBERT)")
  act = hf.get("hidden_act", "gelu")
  if act != "gelu":
    raise ValueError(f"hidden_act {act!r}: our model implements BERT's exact-erf 'gelu' only")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type {hf['position_embedding_type']!r}: only 'absolute' is supported")
  kw = dict(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
      max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
      layer_norm_eps=hf.get("layer_norm_eps", 1e-12), hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
      attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
      initializer_range=hf.get("initializer_range", 0.02), pad_token_id=hf.get("pad_token_id", 0) or 0)
  kw.update(overrides)
  return BertConfig(**kw)


def pooling_to_st(pooling: str, dim: int) -> dict:
  """Our pooling -> sentence-transformers `1_Pooling/config.json`, in the pre-5.4 boolean-key format that ST 5.x
  reads and 6.x still converts. 'mean_no_special' has no ST equivalent: it is written as plain mean (which
  includes [CLS]/[SEP]); the exporter says so in the model card and a warning."""
  if pooling not in ("mean", "cls", "mean_no_special"):
    raise ValueError(f"unknown pooling {pooling!r}; use mean, cls or mean_no_special")
  return {
      "word_embedding_dimension": dim,
      "pooling_mode_cls_token": pooling == "cls",
      "pooling_mode_mean_tokens": pooling != "cls",
      "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False,
      "pooling_mode_weightedmean_tokens": False,
      "pooling_mode_lasttoken": False,
      "include_prompt": True,
  }


_ST_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                    "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


def pooling_from_st(st: Mapping[str, Any], *, source: str = "1_Pooling/config.json") -> str:
  """sentence-transformers Pooling config (pre-5.4 booleans or 5.4+ `pooling_mode`) -> 'mean' or 'cls'."""
  mode = st.get("pooling_mode")
  if mode is None:
    modes = [m for k, m in _ST_LEGACY_MODES.items() if st.get(k)]
    mode = modes[0] if len(modes) == 1 else (tuple(modes) if modes else "mean")   # ST's default is mean
  if isinstance(mode, list):
    mode = mode[0] if len(mode) == 1 else tuple(mode)
  if mode not in ("mean", "cls"):
    raise ValueError(f"{source}: pooling {mode!r} is not supported; physbert-jax pools by mean or [CLS]")
  return mode


def config_to_hf(cfg: BertConfig, architecture: str = "BertForMaskedLM") -> dict:
  return {
      "architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "intermediate_size": cfg.intermediate_size, "hidden_act": "gelu",
      "hidden_dropout_prob": cfg.hidden_dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
      "max_position_embeddings": cfg.max_position_embeddings, "type_vocab_size": cfg.type_vocab_size,
      "initializer_range": cfg.initializer_range, "layer_norm_eps": cfg.layer_norm_eps,
      "pad_token_id": cfg.pad_token_id, "position_embedding_type": "absolute", "torch_dtype": "float32",
  }
