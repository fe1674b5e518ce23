"""Train a BERT-uncased WordPiece tokenizer from scratch on the corpus.

    python -m data_prep.train_tokenizer --corpus data/corpus --vocab-size 30523 --out data/tokenizer \
        --validation-fraction 0.005

One process (the Rust trainer uses every core); on the shared sample's 116,738 abstracts (~110 MB) it takes ~1 min
on 2 cores. For the full 41 GB corpus, --limit-docs bounds memory and time: a WordPiece vocabulary of 30k
converges long before 1M papers.

PhysBERT trains its own 30,523-token uncased vocabulary (the size of bert-base-uncased's) on arXiv text, so physics
words ("superconductivity", "lagrangian") are single tokens instead of five sub-words. The normalization and
pre-tokenization are BERT uncased's: clean control characters, split CJK characters, lowercase, strip accents
("Néel" -> "neel"), split on whitespace and punctuation; "##" marks word continuations.

The output directory loads with `transformers.AutoTokenizer.from_pretrained(out)` and holds:

    tokenizer.json         the fast tokenizer (what build_mlm_shards and the trainer read; hashed in manifests)
    vocab.txt              one token per line, line number = id (the slow BertTokenizer and other BERT tools)
    tokenizer_config.json  BertTokenizer, uncased, model_max_length 512
    special_tokens_map.json

Special tokens have fixed ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import string
import time
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data_prep import corpus_io
from physbert_jax import outputs
from data_prep.build_mlm_shards import validation_score

# Order = id. The model, the collator and the manifest rely on these ids.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MODEL_MAX_LENGTH = 512  # BERT's position-embedding table.
# Every printable ASCII character gets a token even if the corpus lacks it, so ";" or "~" in a query is not [UNK].
ALPHABET = sorted(set(string.printable.lower()) - set(string.whitespace))
# Continuation pieces of letters and digits ("##a", "##7"), seeded before training. The trainer otherwise creates them
# in hash-map order, and ids feed its tie-breaking, so two runs on the same corpus gave different vocabularies
# (huggingface/tokenizers#1794). Seeded, training is reproducible on ASCII text (the demo corpus; accents are
# stripped first). Word-internal non-ASCII characters can still break ties differently from run to run; that is
# why manifests record the sha256 of tokenizer.json. Punctuation needs none: the pre-tokenizer always splits it off.
SEEDED_PIECES = tuple("##" + c for c in string.ascii_lowercase + string.digits)
BATCH_DOCS = 1000  # Documents per batch handed to the Rust trainer; amortizes the Python -> Rust crossing.


def new_tokenizer() -> Tokenizer:
  """An untrained WordPiece tokenizer with BERT uncased's pipeline."""
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  return tok


def _add_post_processor(tok: Tokenizer) -> None:
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  # [CLS] A [SEP] (B [SEP]): what BERT was trained on; type ids 0 for A, 1 for B.
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


def _hf_files(tok: Tokenizer) -> dict[str, dict]:
  # Written by hand, as transformers' BertTokenizerFast.save_pretrained would, so that data_prep (and the demo data
  # behind the `tiny` config) needs only `tokenizers`, not transformers; tests load the result with AutoTokenizer.
  names = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS))
  config = {
      "tokenizer_class": "BertTokenizer",
      "do_lower_case": True,
      "strip_accents": None,  # None = follow do_lower_case, as bert-base-uncased: accents are stripped.
      "tokenize_chinese_chars": True,
      "model_max_length": MODEL_MAX_LENGTH,
      "clean_up_tokenization_spaces": True,
      **names,
  }
  return {"tokenizer_config.json": config, "special_tokens_map.json": names}


STAGE = "train_tokenizer"   # the output marker (physbert_jax.outputs)
# The special tokens, the alphabet and the seeded ## pieces: a smaller --vocab-size still yields this many (an
# earlier version wrote a 109-token tokenizer for --vocab-size 0 and exited 0).
MIN_VOCAB = len(SPECIAL_TOKENS) + len(ALPHABET) + len(SEEDED_PIECES)


def save_tokenizer(tok: Tokenizer, out_dir: str, overwrite: bool = False) -> None:
  """Write the four tokenizer files into `out_dir` via a staging directory, then rename."""
  with outputs.staged(out_dir, STAGE, overwrite) as tmp:
    tok.save(os.path.join(tmp, "tokenizer.json"))
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab))), "vocabulary ids are not contiguous"
    with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
      f.writelines(t + "\n" for t, _ in vocab)
    for name, obj in _hf_files(tok).items():
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def train_tokenizer(paths: Iterable[str], vocab_size: int, out_dir: str, min_frequency: int = 2,
                    limit_docs: int | None = None, skipped: corpus_io.Skipped | None = None,
                    verbose: bool = True, validation_fraction: float = 0.0, overwrite: bool = False) -> str:
  """Train on the documents under `paths`, save to `out_dir`, return `out_dir`.

  Documents that build_mlm_shards holds out for validation (the same id hash, `validation_fraction`) are left out
  here too, so held-out text measures the vocabulary honestly (data_prep.tokenizer_stats).
  """
  start = time.time()
  paths = list(paths)
  if vocab_size < MIN_VOCAB:
    raise ValueError(f"--vocab-size {vocab_size}: too small to hold the special tokens and the alphabet; use at "
                     f"least {MIN_VOCAB} (PhysBERT: 30523)")
  if not 0 <= validation_fraction < 1:
    raise ValueError(f"--validation-fraction {validation_fraction}: must be in [0, 1)")
  outputs.check_out(out_dir, STAGE, overwrite)     # before the hours of training, not after
  corpus_io.expand_paths(paths)                    # a wrong --corpus fails now
  skipped = corpus_io.Skipped() if skipped is None else skipped
  docs = corpus_io.iter_documents(paths, skipped)
  if validation_fraction > 0:
    docs = ((i, t) for i, t in docs if validation_score(i) >= validation_fraction)
  docs = itertools.islice(docs, limit_docs)
  num_docs = 0

  def batches():
    nonlocal num_docs
    while batch := [text for _, text in itertools.islice(docs, BATCH_DOCS)]:
      num_docs += len(batch)
      yield batch

  trained = new_tokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS + SEEDED_PIECES),
      initial_alphabet=ALPHABET, continuing_subword_prefix="##", show_progress=verbose)
  trained.train_from_iterator(batches(), trainer=trainer)
  if num_docs == 0:
    raise ValueError(f"no documents found in {paths}; {skipped.summary()}")
  # The trainer made the seeded pieces special (never split, dropped when decoding). Rebuild the model from the
  # learned vocabulary so that only the five real special tokens are special; ids are unchanged.
  vocab = trained.get_vocab(with_added_tokens=True)
  tok = new_tokenizer()
  tok.model = models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                               max_input_chars_per_word=100)
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  for i, t in enumerate(SPECIAL_TOKENS):
    assert tok.token_to_id(t) == i, f"{t} has id {tok.token_to_id(t)}, expected {i}"
  _add_post_processor(tok)
  save_tokenizer(tok, out_dir, overwrite)
  if verbose:
    print(f"tokenizer: {num_docs} docs -> vocab {tok.get_vocab_size()} (asked {vocab_size}) in "
          f"{time.time() - start:.1f}s -> {out_dir}")
    print(skipped.summary())
  return out_dir


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--corpus", nargs="+", required=True, help=".txt/.jsonl/.jsonl.gz files or directories")
  p.add_argument("--vocab-size", type=int, default=30523, help="30523 = bert-base-uncased's, as PhysBERT")
  p.add_argument("--out", required=True, help="output directory (new or empty, or an earlier tokenizer with "
                                              "--overwrite)")
  p.add_argument("--overwrite", action="store_true", help="replace an earlier tokenizer in --out")
  p.add_argument("--min-frequency", type=int, default=2, help="pairs seen fewer times are not merged")
  p.add_argument("--limit-docs", type=int, default=None, help="train on the first N documents only")
  p.add_argument("--validation-fraction", type=float, default=0.0,
                 help="leave out the documents build_mlm_shards holds out (same id hash); use the same value")
  args = p.parse_args(argv)
  try:
    train_tokenizer(args.corpus, args.vocab_size, args.out, min_frequency=args.min_frequency,
                    limit_docs=args.limit_docs, validation_fraction=args.validation_fraction,
                    overwrite=args.overwrite)
  except (ValueError, OSError) as e:   # OutputError, DiskFullError, a missing corpus: the message is the fix
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
