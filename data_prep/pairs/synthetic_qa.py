"""Synthetic question/answer pairs: an instruct LLM writes three questions about each 1,000-character chunk of the
corpus; each surviving question is paired with its chunk.

    python -m data_prep.pairs synthetic-qa --corpus data/corpus --engine vllm \
        --model meta-llama/Meta-Llama-3-70B-Instruct --tensor-parallel-size 8 --out data/pairs/qa
    vllm serve meta-llama/Meta-Llama-3-70B-Instruct --tensor-parallel-size 8 &      # or: a server, many clients
    sbatch --array=0-63 ... python -m data_prep.pairs synthetic-qa --corpus data/corpus \
        --engine openai-endpoint http://gpu-node:8000 --out data/pairs/qa              # then once more with --merge

Paper: 2M pairs from LLaMA-3-70B with vLLM, i.e. ~667k chunks at three questions each. Chunks come from the
corpus (data_prep.build_corpus; any corpus_io input), cut by qa_text.chunks; a chunk's id is "<doc id>#<k>" and its
paper is the doc id (papers in --exclude are not chunked). Which chunks are used: the ceil(num_pairs / 3) with the
smallest sha256(seed, chunk id), found by a first pass that hashes every chunk (8 bytes a chunk); so the sample
does not depend on file order or on --num-shards. The pairs kept after filtering are fewer (report.json counts
the rejections by reason; the pass rate on LLaMA-3-70B replies is not measured yet): raise --num-pairs to compensate.

Parts (stage.py): chunk c belongs to part shard_of(c, N); part K writes
    train-KKKKK-of-NNNNN.array_record       its pairs {"anchor": question, "positive": chunk, "source":
                                            "synthetic-qa", "anchor_id": "<chunk id>:q<j>", "positive_id": chunk id}
    completions-KKKKK-of-NNNNN.jsonl.gz     every raw reply with its parse, the questions kept and the others'
                                            rejections by reason (re-filtering with other bounds reuses these
                                            instead of asking the LLM again)
    report-KKKKK-of-NNNNN.json              counts, formats, rejections by reason (written last: the part is done)
and `--merge` (automatic when one process ran every part) writes report.json and manifest.json.
Resume: replies are appended to .completions-KKKKK-of-NNNNN.partial.jsonl and fsynced after every batch; a killed
part rerun generates only what that file (or an earlier completions file made with the same model, sampling, prompt
and chunking) lacks. Size: 667k chunks -> ~0.7 GB of chunk text in the shards, ~1 GB of completions. Time, an
estimate not yet measured: ~500 prompt + ~250 reply tokens a chunk is ~0.5B tokens through LLaMA-3-70B.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, Iterator

import numpy as np

from data_prep import corpus_io, stage
from data_prep.corpus_io import Skipped
from data_prep.pairs import llm, papers, qa_text, writer
from physbert_jax import outputs, records

KIND = "synthetic-qa"
NUM_PAIRS = 2_000_000       # paper: 2M synthetic QA pairs
PAIRS_PER_CHUNK = 3         # the prompt asks for three


@dataclasses.dataclass(frozen=True)
class Options:
  corpus: tuple[str, ...]
  out: str
  exclude: tuple[str, ...] = ()
  num_pairs: int = NUM_PAIRS
  chunk_chars: int = 1000
  min_chunk_chars: int = 200
  seed: int = 0
  engine: str = "vllm"
  model: str | None = None
  sampling: llm.Sampling = llm.Sampling()
  bounds: qa_text.Bounds = qa_text.Bounds()
  batch_size: int = 256      # chunks per generate call; also how often progress is saved
  quiet: bool = False

  def settings(self) -> dict:
    """What decides the output (the endpoint URL and batch size do not)."""
    files = [p for p, _ in corpus_io.expand_paths(self.corpus)]
    excluded = sorted(papers.read_exclude(self.exclude))
    return {"corpus": [os.path.abspath(p) for p in self.corpus], "corpus_bytes": sum(map(os.path.getsize, files)),
            "exclude_ids": len(excluded), "exclude_sha256": _sha(excluded), "num_pairs": self.num_pairs,
            "seed": self.seed, "generation": self.generation(), "bounds": dataclasses.asdict(self.bounds)}

  def generation(self) -> dict:
    """What decides a chunk's reply: replies made with the same values are reused."""
    return {"engine": self.engine, "model": self.model, "sampling": dataclasses.asdict(self.sampling),
            "prompt_version": qa_text.PROMPT_VERSION, "chunk_chars": self.chunk_chars,
            "min_chunk_chars": self.min_chunk_chars, "seed": self.seed}


def _sha(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def chunk_score(seed: int, chunk_id: str) -> int:
  return stage.hash64(f"{seed}/chunk/{chunk_id}")


def chunk_seed(seed: int, chunk_id: str) -> int:
  return stage.hash64(f"{seed}/sample/{chunk_id}") & 0x7FFFFFFF


def iter_chunks(opts: Options, skipped: Skipped, counts: dict | None = None) -> Iterator[tuple[str, str]]:
  excluded = papers.read_exclude(opts.exclude)
  counts = counts if counts is not None else {}
  for doc_id, text in corpus_io.iter_documents(opts.corpus, skipped):
    if papers.arxiv_id(doc_id) in excluded:
      counts["excluded_documents"] = counts.get("excluded_documents", 0) + 1
      continue
    counts["documents"] = counts.get("documents", 0) + 1
    pieces = qa_text.chunks(text, opts.chunk_chars, opts.min_chunk_chars)
    if not pieces:
      counts["documents_without_chunks"] = counts.get("documents_without_chunks", 0) + 1
    for k, piece in enumerate(pieces):
      yield f"{doc_id}#{k}", piece


def selection(opts: Options) -> tuple[int | None, int, int]:
  """(largest chunk score to use, or None for every chunk; chunks in the corpus; chunks to use)."""
  scores = np.fromiter((chunk_score(opts.seed, cid) for cid, _ in iter_chunks(opts, Skipped())), np.uint64)
  target = math.ceil(opts.num_pairs / PAIRS_PER_CHUNK)
  if len(scores) <= target:
    return None, len(scores), len(scores)
  return int(np.partition(scores, target - 1)[target - 1]), len(scores), target


def _paths(out: str, index: int, count: int) -> tuple[str, str, str]:
  return (os.path.join(out, stage.part_name("completions", index, count, ".jsonl.gz")),
          os.path.join(out, "." + stage.part_name("completions", index, count, ".partial.jsonl")),
          records.shard_name(writer.SPLIT, index, count))


def _load_replies(final: str, partial: str, gen: str) -> dict[str, dict]:
  """Replies already made with these generation settings: the last completions file, then the partial log."""
  done: dict[str, dict] = {}
  if os.path.exists(final):
    for _, rec in stage.iter_json_lines(final, Skipped()):
      if rec.get("gen") == gen:
        done[rec["chunk_id"]] = rec
  if os.path.exists(partial):
    with open(partial, "rb") as f:
      for raw in f:
        try:
          rec = json.loads(raw)
        except ValueError:
          break   # The line being written when the job died.
        if rec.get("gen") == gen:
          done[rec["chunk_id"]] = rec
  return done


def run_part(opts: Options, index: int, count: int, threshold: int | None, make_engine: Callable[[], llm.Engine]
             ) -> dict:
  """Generate, parse and filter part `index` of `count`; stage.run_parts' part dict."""
  # Every part reads the whole corpus; only part 0 reports the corpus' damaged lines and document counts, so that
  # the merged report counts them once.
  skipped, counts = Skipped(), {}
  own = [(cid, text) for cid, text in iter_chunks(opts, skipped if index == 0 else Skipped(),
                                                  counts if index == 0 else {})
         if stage.shard_of(cid, count) == index
         and (threshold is None or chunk_score(opts.seed, cid) <= threshold)]
  own.sort(key=lambda c: chunk_score(opts.seed, c[0]))   # Shuffled: batches mix papers, the shard is mixed.
  final, partial, shard = _paths(opts.out, index, count)
  gen = _sha(opts.generation())
  text_sha = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]
  done = _load_replies(final, partial, gen)
  todo = [(cid, text) for cid, text in own if done.get(cid, {}).get("chunk_sha") != text_sha(text)]
  counts.update({"chunks": len(own), "replies_reused": len(own) - len(todo), "replies_generated": len(todo)})

  if todo:
    engine = make_engine()   # Only now: a finished part reruns without loading a 70B model.
    bar = stage.progress(len(todo), f"qa {index}/{count}", " chunks", opts.quiet)
    os.makedirs(opts.out, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as log:
      for k in range(0, len(todo), opts.batch_size):
        batch = todo[k:k + opts.batch_size]
        seeds = [chunk_seed(opts.seed, cid) for cid, _ in batch]
        replies = engine.generate([qa_text.conversation(text) for _, text in batch], seeds)
        for (cid, text), seed, reply in zip(batch, seeds, replies):
          rec = {"chunk_id": cid, "gen": gen, "chunk_sha": text_sha(text), "seed": seed, "completion": reply}
          log.write(json.dumps(rec, ensure_ascii=False) + "\n")
          done[cid] = rec
        log.flush()
        os.fsync(log.fileno())
        bar.update(len(batch))
    bar.close()

  seen: set[str] = set()
  reasons: collections.Counter[str] = collections.Counter()
  formats: collections.Counter[str] = collections.Counter()
  out = writer.ShardWriter(opts.out, names=[shard])
  parsed = 0
  with stage.jsonl_gz_writer(final) as log:
    for cid, text in own:
      rec = done[cid]
      items, fmt = qa_text.parse_completion(rec["completion"])
      formats[fmt] += 1
      parsed += len(items)
      mine: collections.Counter[str] = collections.Counter()
      kept = qa_text.filter_pairs(items, text, seen, opts.bounds, mine)
      reasons.update(mine)
      for j, qa in enumerate(kept):
        out.write({"anchor": qa["question"], "positive": text, "source": KIND, "anchor_id": f"{cid}:q{j}",
                   "positive_id": cid})
      # Each reply accounts for itself: every parsed question is kept or rejected for a reason.
      log.write({**rec, "format": fmt, "parsed": items, "kept": [qa["question"] for qa in kept],
                 "rejected": dict(sorted(mine.items()))})
  split = out.close()
  if os.path.exists(partial):
    os.remove(partial)   # Everything in it is in the completions file now.
  counts.update({"questions_parsed": parsed, "pairs": split["records"], "formats": dict(formats),
                 "rejected": dict(sorted(reasons.items()))})
  return {"counts": counts, "skipped": skipped, "outputs": [os.path.basename(final), shard],
          "extra": {"shard": split["shards"][0]}}


def merge(opts: Options, count: int) -> dict:
  report = stage.merge_reports(opts.out, count, "synthetic_qa")
  parts = [stage.read_json(stage.report_path(opts.out, i, count)) for i in range(count)]
  shards = [p["extra"]["shard"] for p in parts if p["extra"]["shard"]["records"]]
  c = report["counts"]
  print(stage.summary_line("synthetic_qa", report))
  print(f"replies: {c.get('chunks', 0):,} chunks -> {c.get('questions_parsed', 0):,} questions parsed -> "
        f"{c.get('pairs', 0):,} pairs; formats {c.get('formats', {})}; rejected {c.get('rejected', {})}")
  if not shards:
    raise ValueError(f"{opts.out}: no pair survived parsing and filtering; read the replies in "
                     f"{opts.out}/completions-*.jsonl.gz and the reasons in {opts.out}/report.json")
  split = {"records": sum(s["records"] for s in shards), "shards": shards}
  sources = {"corpus": list(opts.corpus), "exclude": list(opts.exclude), "generation": opts.generation()}
  m = writer.manifest(KIND, split, opts.seed, c, sources)
  outputs.write_json(os.path.join(opts.out, records.MANIFEST), m, sort_keys=True)
  return m


def run(opts: Options, num_shards: int | None, shard_index: int | None, merge_only: bool, force: bool,
        make_engine: Callable[[], llm.Engine]) -> dict | None:
  """The command: run this process's parts (skipping finished ones), then merge when every part ran here."""
  count, indices = stage.resolve_shards(num_shards, shard_index)
  if not merge_only:
    settings = {**opts.settings(), "parts": count}
    pending = [k for k in indices if force or not stage.part_is_done(opts.out, k, count, settings)]
    threshold = None
    if pending:
      threshold, total, used = selection(opts)
      if not opts.quiet:
        print(f"synthetic-qa: {total:,} chunks in the corpus; using {used:,} (~{used * PAIRS_PER_CHUNK:,} "
              f"questions before filtering)")
        if total * PAIRS_PER_CHUNK < opts.num_pairs:
          print(f"note: the corpus gives at most ~{total * PAIRS_PER_CHUNK:,} pairs, fewer than the "
                f"{opts.num_pairs:,} asked: capped by the data")
    start = time.time()
    stage.run_parts("synthetic_qa", opts.out, settings, count, indices,
                    lambda k, n: run_part(opts, k, n, threshold, make_engine), force=force)
    if not opts.quiet:
      print(f"{time.time() - start:.1f}s")
  if merge_only or len(indices) == count:
    return merge(opts, count)
  return None
