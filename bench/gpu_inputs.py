"""bench/gpu.py's inputs, shared by both sides: real text, a tokenizer trained on it, model folders both load."""

import functools
import gzip
import json
import os
import shutil

import numpy as np

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_prep", "arxiv_sample",
                      "metadata.jsonl.gz")
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}     # train_tokenizer's fixed ids


@functools.lru_cache(maxsize=None)
def abstracts(n: int) -> list[tuple[str, str]]:
  """The first n (title, abstract) pairs of the shipped sample."""
  out = []
  with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
    for line in f:
      r = json.loads(line)
      out.append((" ".join(r["title"].split()), " ".join(r["abstract"].split())))
      if len(out) == n:
        break
  return out


def make_tokenizer(vocab: int, out: str) -> str:
  from data_prep import train_tokenizer
  texts = os.path.join(out, "texts.txt")
  with open(texts, "w", encoding="utf-8") as f:
    f.writelines(f"{t}\n{a}\n" for t, a in abstracts(19_000 if vocab > 8192 else 2_000))
  train_tokenizer.train_tokenizer([texts], vocab, os.path.join(out, "tokenizer"), verbose=False)
  return os.path.join(out, "tokenizer")


def model_folder(arch: dict, vocab: int, tokenizer_dir: str, out: str, max_length: int = 512) -> str:
  """Random BERT weights (seed 0) as transformers writes them, the tokenizer, and sentence-transformers' mean
  pooling: a folder that our convert.load, BertForMaskedLM and SentenceTransformer all read."""
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=arch["hidden_size"],
                                num_hidden_layers=arch["num_layers"], num_attention_heads=arch["num_heads"],
                                intermediate_size=arch["intermediate_size"], max_position_embeddings=max_length)
  transformers.BertForMaskedLM(cfg).save_pretrained(out)
  for name in os.listdir(tokenizer_dir):
    shutil.copy(os.path.join(tokenizer_dir, name), out)
  os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
  json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
            open(os.path.join(out, "modules.json"), "w"))
  json.dump({"max_seq_length": max_length, "do_lower_case": False},
            open(os.path.join(out, "sentence_bert_config.json"), "w"))
  json.dump({"word_embedding_dimension": arch["hidden_size"], "pooling_mode_mean_tokens": True},
            open(os.path.join(out, "1_Pooling", "config.json"), "w"))
  return out


def packed_rows(tokenizer_dir: str, seq_len: int, rows: int) -> np.ndarray:
  """Real abstracts, tokenized and packed into full [CLS] ... [SEP] rows (as build_mlm_shards packs them)."""
  need = rows * (seq_len - 1)
  flat = token_stream(tokenizer_dir, need)
  flat = np.resize(flat, need).reshape(rows, seq_len - 1)   # wraps around when the sample is shorter
  return np.concatenate([np.full((rows, 1), SPECIAL["cls"], np.int32), flat], axis=1)


@functools.lru_cache(maxsize=None)
def token_stream(tokenizer_dir: str, need: int) -> np.ndarray:
  """At least `need` tokens of abstracts, each ended by [SEP] (or all of the sample's)."""
  from tokenizers import Tokenizer
  tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
  texts, flat = [a for _, a in abstracts(19_000)], []
  for start in range(0, len(texts), 1000):
    for enc in tok.encode_batch(texts[start:start + 1000], add_special_tokens=False):
      flat.extend(enc.ids + [SPECIAL["sep"]])
    if len(flat) >= need:
      break
  return np.array(flat, np.int32)
