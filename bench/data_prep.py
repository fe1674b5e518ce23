"""Throughput of tokenize + MLM shard writing on real arXiv text, per core, projected to PhysBERT's 41 GB.

    python bench/data_prep.py [--docs 20000] [--seq-len 128]

Text: the first --docs physics abstracts of the shared metadata sample (title + abstract, as build_corpus writes
them; ~1 KB each) plus the 49 unarXive full-text papers (~2.9 MB), written as a corpus file. A 30,523-token
vocabulary is trained on it first (not timed). Then build_mlm_shards runs twice in fresh processes: with one
tokenizer thread (RAYON_NUM_THREADS=1: MB/s per core) and with every core. MB = UTF-8 bytes of document text.
Ends with one JSON line. Array tasks do not share anything, so N cores in N tasks give ~N x the per-core rate.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DATA = os.environ.get("PHYSBERT_DATA", "/work/shared/data")
FULL_CORPUS_GB = 41.0  # PhysBERT's arXiv text after Nougat.


def write_corpus(path: str, docs: int) -> int:
  from data_prep import build_corpus, taxonomy, unarxive
  from data_prep.corpus_io import Skipped
  size = 0
  with gzip.open(path, "wt", encoding="utf-8") as out:
    n = 0
    with gzip.open(os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz"), "rt", encoding="utf-8") as f:
      for line in f:
        paper = json.loads(line)
        if not taxonomy.is_physics(taxonomy.primary(paper["categories"])):
          continue
        text = build_corpus.clean_abstract(paper["title"], paper["abstract"])
        out.write(json.dumps({"id": paper["id"], "text": text}) + "\n")
        size += len(text.encode())
        n += 1
        if n >= docs:
          break
    for _, _, paper in unarxive._records(os.path.join(DATA, "arxiv", "fulltext", "unarXive_data_sample.tar.gz"),
                                         Skipped()):
      text = build_corpus.clean_text(unarxive.paper_text(paper))
      out.write(json.dumps({"id": paper["paper_id"], "text": text}) + "\n")
      size += len(text.encode())
  return size


def worker(corpus: str, tokenizer: str, out: str, seq_len: int) -> None:
  from data_prep.build_mlm_shards import build_mlm_shards
  start = time.perf_counter()
  manifest = build_mlm_shards([corpus], tokenizer, seq_len, out, num_shards=4, validation_fraction=0.005,
                              verbose=False)
  seconds = time.perf_counter() - start
  tokens = sum(s["tokens"] for s in manifest["splits"].values())
  print(json.dumps({"seconds": seconds, "tokens": tokens}))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--docs", type=int, default=20000)
  p.add_argument("--seq-len", type=int, default=128)
  p.add_argument("--worker", nargs=3, metavar=("CORPUS", "TOKENIZER", "OUT"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    return worker(*args.worker, args.seq_len)
  from data_prep.train_tokenizer import train_tokenizer
  cores = os.cpu_count() or 1
  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus.jsonl.gz")
    size = write_corpus(corpus, args.docs)
    tokenizer = train_tokenizer([corpus], 30523, os.path.join(tmp, "tok"), verbose=False)
    runs = {}
    for threads in (1, cores):
      env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
      done = subprocess.run([sys.executable, __file__, "--seq-len", str(args.seq_len), "--worker", corpus, tokenizer,
                             os.path.join(tmp, f"out{threads}")], env=env, check=True, capture_output=True, text=True)
      runs[threads] = json.loads(done.stdout.strip().splitlines()[-1])
  mb = size / 1e6
  per_core = mb / runs[1]["seconds"]
  all_cores = mb / runs[cores]["seconds"]
  core_hours = FULL_CORPUS_GB * 1e3 / per_core / 3600
  print(f"{mb:.1f} MB, {runs[1]['tokens']:,} tokens: {per_core:.2f} MB/s on 1 core, {all_cores:.2f} MB/s on "
        f"{cores} cores; 41 GB = {core_hours:.1f} core-hours = {core_hours / 64:.2f} h on 64 cores")
  print(json.dumps({"bench": "data_prep.tokenize_and_shard", "seq_len": args.seq_len, "mb": round(mb, 2),
                    "tokens": runs[1]["tokens"], "tokens_per_byte": round(runs[1]["tokens"] / size, 4),
                    "cores": cores, "mb_per_s_1_core": round(per_core, 3), "mb_per_s_all_cores": round(all_cores, 3),
                    "projection_41gb_core_hours": round(core_hours, 2),
                    "projection_41gb_hours_on_64_cores": round(core_hours / 64, 3),
                    "projection_41gb_hours_on_256_cores": round(core_hours / 256, 3)}))


if __name__ == "__main__":
  main()
