"""Tokenize the corpus and pack it into fixed-length MLM sequences in ArrayRecord shards.

    python -m data_prep.build_mlm_shards --corpus data/arxiv_abstracts.jsonl.gz --tokenizer data/tokenizer \
        --seq-len 128 --out data/mlm128 --num-shards 64 --validation-fraction 0.005

Packing, as BERT pre-training: documents are tokenized without special tokens and joined into one stream with
[SEP] between documents; the stream is cut into chunks of seq_len - 2 tokens, and each record is
[CLS] chunk [SEP]. No token is dropped and none is padding; only the last record of a split is shorter
(the collator pads it). Record k of a split goes to shard k % num_shards (round robin: shards fill while streaming,
and their sizes differ by at most one record). The validation split, if any, is one shard: it is small and read
whole. Which split a document goes to is decided by a sha256 of its id, so it does not change when documents are
added, removed or reordered.

The output format is records.py's. Everything is built in a staging directory and renamed to --out at the end, so a
directory with a manifest.json is always complete; the same inputs give byte-identical files, and rerunning a
complete build with the same settings is skipped.

Slurm array mode (--shard-index K, or $SLURM_ARRAY_TASK_ID): task K of N tokenizes corpus files K, K+N, K+2N, ...
(build_corpus writes N files, so each task reads one) into train-KKKKK-of-NNNNN.array_record and
validation-KKKKK-of-NNNNN.array_record, each renamed into --out when complete, and report-KKKKK-of-NNNNN.json last.
Rerun tasks skip finished parts; `--merge` checks that all N are there and writes manifest.json (empty shards are
left out of it). Both modes pack with one function (`_pack`); they differ only in where the shards go and how their
completion is marked. Full arXiv: ~41 GB of text -> ~7.8G tokens at 0.19 tokens/byte (measured on the sample) ->
~16 GB of uint16.

    sbatch --array=0-255 launch/slurm/data_prep.sbatch build_mlm_shards --corpus data/corpus \
        --tokenizer data/tokenizer --seq-len 128 --out data/mlm128 --validation-fraction 0.005
    python -m data_prep.build_mlm_shards --corpus data/corpus --tokenizer data/tokenizer --seq-len 128 \
        --out data/mlm128 --num-shards 256 --merge
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import time
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from data_prep import corpus_io, stage
from physbert_jax import outputs, records

BATCH_DOCS = 512  # Documents per encode_batch call: enough to keep the Rust thread pool busy.


def validation_score(doc_id: str) -> float:
  """A stable uniform number in [0, 1) per document id (sha256, not Python's salted hash)."""
  return stage.hash64(doc_id) / 2.0**64


class _SplitWriter:
  """Packs one split's document stream into records and deals them round robin over the shard files `names`."""

  def __init__(self, directory: str, names: list[str], seq_len: int, cls: int, sep: int, dtype: np.dtype):
    self.chunk = seq_len - 2  # Room left by the [CLS] ... [SEP] framing.
    self.cls, self.sep, self.dtype = cls, sep, dtype
    self.shards = records.ShardWriter(directory, names)
    self.buffer = np.zeros(0, np.int64)  # Stream tokens not yet in a record.
    self.documents = 0

  def add(self, ids: list[int]) -> None:
    parts = [self.buffer, [self.sep], ids] if self.documents else [self.buffer, ids]
    self.buffer = np.concatenate(parts).astype(np.int64)
    self.documents += 1
    n_full = len(self.buffer) // self.chunk
    for i in range(n_full):
      self._write(self.buffer[i * self.chunk:(i + 1) * self.chunk])
    self.buffer = self.buffer[n_full * self.chunk:]

  def _write(self, chunk: np.ndarray) -> None:
    record = np.concatenate([[self.cls], chunk, [self.sep]])
    self.shards.write(records.encode(record, self.dtype), len(record))

  def close(self) -> dict:
    if len(self.buffer):
      self._write(self.buffer)  # The short tail record.
    return _split(self.shards.close())


def _split(shards: list[dict]) -> dict:
  """A manifest split: its shard files, and their records and tokens summed."""
  return {"records": sum(s["records"] for s in shards), "tokens": sum(s["tokens"] for s in shards), "shards": shards}


def _batches(docs: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
  while batch := list(itertools.islice(docs, size)):
    yield batch


STAGE = "build_mlm_shards"   # the output marker (physbert_jax.outputs)


def _load_tokenizer(tokenizer_dir: str) -> tuple[Tokenizer, dict]:
  """The tokenizer, and the manifest fields that describe it."""
  tokenizer_json = os.path.join(tokenizer_dir, "tokenizer.json")
  if not os.path.isfile(tokenizer_json):
    raise FileNotFoundError(f"--tokenizer {tokenizer_dir}: no tokenizer.json there; build one with "
                            f"`python -m data_prep.train_tokenizer --corpus ... --out {tokenizer_dir}`")
  with open(tokenizer_json, "rb") as f:
    tokenizer_bytes = f.read()
  try:
    tok = Tokenizer.from_str(tokenizer_bytes.decode("utf-8"))
  except Exception as e:   # the Rust parser raises a bare Exception for any damage
    raise ValueError(f"{tokenizer_json}: not a tokenizers JSON file ({e}); rebuild it with data_prep.train_tokenizer")
  vocab_size = tok.get_vocab_size(with_added_tokens=True)
  return tok, {
      "dtype": records.token_dtype(vocab_size).str,
      "vocab_size": vocab_size,
      "special_ids": records.special_ids(tokenizer_json, tok),
      "tokenizer": {"path": os.path.abspath(tokenizer_dir), "sha256": hashlib.sha256(tokenizer_bytes).hexdigest()},
  }


def _check_args(seq_len: int, num_shards: int, validation_fraction: float) -> None:
  if seq_len < 3:
    raise ValueError(f"seq_len {seq_len}: a record needs [CLS], at least one token and [SEP]")
  if num_shards < 1 or not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"need num_shards >= 1 and 0 <= validation_fraction < 1, got {num_shards}, "
                     f"{validation_fraction}")


def _pack(paths: list[str], tok: Tokenizer, described: dict, seq_len: int, directory: str, names: dict[str, list[str]],
          validation_fraction: float, verbose: bool, desc: str = "tokenize") -> tuple[dict, dict, corpus_io.Skipped]:
  """The packer of both modes: the documents under `paths`, tokenized in batches (the Rust encoder uses every core),
  into the shard files `names[split]` in `directory`. Returns the counts by split, the manifest splits, and what
  was skipped."""
  ids, dtype = described["special_ids"], np.dtype(described["dtype"])
  splits = {s: _SplitWriter(directory, n, seq_len, ids["cls"], ids["sep"], dtype) for s, n in names.items()}
  skipped = corpus_io.Skipped()
  progress = tqdm(unit="doc", desc=desc, disable=not verbose or None, mininterval=2.0)
  for batch in _batches(corpus_io.iter_documents(paths, skipped), BATCH_DOCS):
    encodings = tok.encode_batch([text for _, text in batch], add_special_tokens=False)
    for (doc_id, _), enc in zip(batch, encodings):
      if not enc.ids:
        skipped.add(doc_id, None, "no tokens")  # e.g. only control characters; would leave [SEP] [SEP] behind.
        continue
      split = "validation" if validation_score(doc_id) < validation_fraction else "train"
      splits[split].add(enc.ids)
    progress.update(len(batch))
  progress.close()
  documents = {s: w.documents for s, w in splits.items()}
  splits = {s: w.close() for s, w in splits.items()}
  counts = {"documents": documents, **{k: {s: c[k] for s, c in splits.items()} for k in ("records", "tokens")}}
  return counts, splits, skipped


def _write_manifest(directory: str, seq_len: int, described: dict, splits: dict) -> dict:
  """manifest.json, written last: its presence means the directory is complete."""
  manifest = {"format": records.FORMAT, "seq_len": seq_len, **described, "splits": splits}
  outputs.write_json(os.path.join(directory, records.MANIFEST), manifest, sort_keys=True)
  return manifest


def _print_splits(documents: dict, splits: dict, skipped: str) -> None:
  for name, s in splits.items():
    print(f"{name}: {documents[name]:,} docs -> {s['records']:,} records, {s['tokens']:,} tokens in "
          f"{len(s['shards'])} shard(s)")
  print(skipped)


def build_mlm_shards(paths: Iterable[str], tokenizer_dir: str, seq_len: int, out_dir: str, num_shards: int = 4,
                     validation_fraction: float = 0.0, verbose: bool = True, overwrite: bool = False) -> dict:
  """Build the shard directory `out_dir` in one process; return its manifest. The summary also goes to
  `out_dir`/report.json."""
  start = time.time()
  paths = list(paths)
  _check_args(seq_len, num_shards, validation_fraction)
  tok, described = _load_tokenizer(tokenizer_dir)
  corpus_io.expand_paths(paths)   # a wrong --corpus fails before anything is written
  names = {"train": [records.shard_name("train", i, num_shards) for i in range(num_shards)]}
  if validation_fraction > 0:
    names["validation"] = [records.shard_name("validation", 0, 1)]
  with outputs.staged(out_dir, STAGE, overwrite) as tmp:
    counts, splits, skipped = _pack(paths, tok, described, seq_len, tmp, names, validation_fraction, verbose)
    if not sum(counts["documents"].values()):
      raise ValueError(f"no documents found in {paths}; {skipped.summary()}")
    # Deterministic contents only (no timings; corpus paths as given), so that a rebuild is byte-identical.
    report = {"corpus": paths, "settings": _settings(paths, described, seq_len, num_shards, validation_fraction),
              "skipped": skipped.to_json(), **counts}
    outputs.write_json(os.path.join(tmp, "report.json"), report, sort_keys=True)
    manifest = _write_manifest(tmp, seq_len, described, splits)
  if verbose:
    _print_splits(counts["documents"], splits, skipped.summary())
    print(f"seq_len {seq_len}, vocab {described['vocab_size']} ({np.dtype(described['dtype']).name}); "
          f"{time.time() - start:.1f}s -> {out_dir}")
  return manifest


def _settings(paths: list[str], described: dict, seq_len: int, num_shards: int, validation_fraction: float) -> dict:
  return {"corpus": [os.path.abspath(p) for p in paths], "tokenizer_sha256": described["tokenizer"]["sha256"],
          "seq_len": seq_len, "num_shards": num_shards, "validation_fraction": validation_fraction}


def local_build_is_current(out_dir: str, settings: dict) -> bool:
  """Is `out_dir` a complete one-process build with these settings (so a rerun can skip it)?"""
  try:
    records.read_manifest(out_dir)
    with open(os.path.join(out_dir, "report.json")) as f:
      return json.load(f).get("settings") == settings
  except (OSError, ValueError):
    return False


# --- Slurm array mode: part K of N packs corpus files K, K+N, ... into train and validation shard K -------------


def build_part(paths: list[str], tokenizer_dir: str, seq_len: int, out_dir: str, index: int, count: int,
               validation_fraction: float = 0.0, verbose: bool = True) -> dict:
  """One array task's shards, each renamed into `out_dir` when complete; returns stage.run_parts' part dict."""
  _check_args(seq_len, count, validation_fraction)
  tok, described = _load_tokenizer(tokenizer_dir)
  files = corpus_io.expand_paths(paths)
  if len(files) < count:
    print(f"warning: {len(files)} corpus files for {count} parts: parts {len(files)}..{count - 1} get no input")
  own = [path for path, _ in files[index::count]]   # by file: an id-less document is named after its file name
  os.makedirs(out_dir, exist_ok=True)
  names = {s: [records.shard_name(s, index, count)] for s in ("train", "validation")}
  counts, splits, skipped = _pack(own, tok, described, seq_len, out_dir, names, validation_fraction, verbose,
                                  desc=f"tokenize {index}/{count}")
  return {"counts": {"corpus_files": len(own), **counts}, "skipped": skipped, "outputs": [n[0] for n in names.values()],
          "extra": {"shards": {s: c["shards"] for s, c in splits.items()}, "described": described}}


def merge_parts(out_dir: str, count: int, seq_len: int) -> dict:
  """Check every part is there, then write manifest.json (last: its presence means the directory is usable)."""
  report = stage.merge_reports(out_dir, count, "build_mlm_shards")
  parts = [stage.read_json(stage.report_path(out_dir, i, count)) for i in range(count)]
  described = parts[0]["extra"]["described"]
  if any(p["extra"]["described"] != described for p in parts):
    raise ValueError(f"{out_dir}: parts were built with different tokenizers; rerun them with --force")
  shards = {s: [sh for p in parts for sh in p["extra"]["shards"][s] if sh["records"]] for s in ("train", "validation")}
  splits = {s: _split(sh) for s, sh in shards.items() if sh}
  if "train" not in splits:
    raise ValueError(f"{out_dir}: no training records in any part; {stage.skipped_summary(report['skipped'])}")
  manifest = _write_manifest(out_dir, seq_len, described, splits)
  print(stage.summary_line("build_mlm_shards", report))
  _print_splits(report["counts"]["documents"], splits, stage.skipped_summary(report["skipped"]))
  return manifest


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--corpus", nargs="+", required=True, help=".txt/.jsonl/.jsonl.gz files or directories")
  p.add_argument("--tokenizer", required=True, help="directory written by data_prep.train_tokenizer")
  p.add_argument("--seq-len", type=int, default=128, help="record length incl. [CLS]/[SEP]; PhysBERT: 128, 512")
  p.add_argument("--out", required=True, help="output shard directory: new or empty, or an earlier shard build "
                                              "(replaced with --overwrite or --force)")
  p.add_argument("--overwrite", action="store_true", help="replace an earlier shard build in --out")
  p.add_argument("--num-shards", type=int, default=None,
                 help="train shards, more than hosts x workers reading (default 4; in an array: the task count)")
  p.add_argument("--shard-index", type=int, default=None,
                 help="array mode: build part K only (default: $SLURM_ARRAY_TASK_ID if set)")
  p.add_argument("--merge", action="store_true", help="array mode: check all parts and write the manifest")
  p.add_argument("--force", action="store_true", help="rebuild even if the output is complete")
  p.add_argument("--validation-fraction", type=float, default=0.0, help="share of documents held out, by id hash")
  args = p.parse_args(argv)
  try:
    _main(args)
  except (ValueError, OSError) as e:   # OutputError, DiskFullError, missing inputs: the message is the fix
    raise SystemExit(f"error: {e}") from None


def _main(args) -> None:
  array_mode = args.shard_index is not None or args.merge or "SLURM_ARRAY_TASK_ID" in os.environ
  count, indices = (stage.resolve_shards(args.num_shards, args.shard_index) if array_mode else
                    (4 if args.num_shards is None else args.num_shards, []))
  if not args.merge:
    settings = _settings(args.corpus, _load_tokenizer(args.tokenizer)[1], args.seq_len, count, args.validation_fraction)
  if not array_mode:
    if args.force or not local_build_is_current(args.out, settings):
      build_mlm_shards(args.corpus, args.tokenizer, args.seq_len, args.out, num_shards=count,
                       validation_fraction=args.validation_fraction, overwrite=args.overwrite or args.force)
    else:
      print(f"{args.out} is complete and built with these settings; skipping (--force rebuilds)")
    return
  if not args.merge:
    stage.run_parts("build_mlm_shards", args.out, settings, count, indices,
                    lambda k, n: build_part(args.corpus, args.tokenizer, args.seq_len, args.out, k, n,
                                            args.validation_fraction),
                    force=args.force)
  if args.merge or len(indices) == count:
    merge_parts(args.out, count, args.seq_len)


if __name__ == "__main__":
  main()
