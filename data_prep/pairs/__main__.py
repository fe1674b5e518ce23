"""Command line: `python -m data_prep.pairs {category,citation,synthetic-qa} ...` (see data_prep/pairs/__init__.py)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from data_prep import stage
from physbert_jax import outputs
from data_prep.corpus_io import Skipped
from data_prep.pairs import (category, citation, llm, papers, qa_text, s2_client, synthetic_qa, title_abstract,
                             writer)


def _file_facts(paths: list[str]) -> list[list]:
  """[path, bytes] of every input file: a changed input makes a rerun rebuild."""
  return [[os.path.abspath(p), os.path.getsize(p)] for p in paths]


def _exclude_sha(paths: list[str]) -> str:
  return hashlib.sha256("\n".join(sorted(papers.read_exclude(paths))).encode()).hexdigest()


def _common(p: argparse.ArgumentParser, num_pairs: int, num_shards: int | None, scaled: bool = False) -> None:
  p.add_argument("--out", required=True, help="output pair-set directory")
  p.add_argument("--exclude", nargs="*", default=[], help="files of arXiv ids to keep out (evalsets/ids.txt)")
  p.add_argument("--num-pairs", type=int, default=None if scaled else num_pairs,
                 help=f"pairs to make (paper: {num_pairs:,}" + (" on ~1.2M papers; default: scaled to the corpus)"
                                                                 if scaled else ")"))
  p.add_argument("--seed", type=int, default=0, help="every random choice derives from it")
  if num_shards is not None:   # synthetic-qa takes stage.py's shard flags instead
    p.add_argument("--num-shards", type=int, default=num_shards, help="ArrayRecord files to deal the pairs over")
    p.add_argument("--force", action="store_true", help="rebuild even if --out is complete with these settings")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier pair set in --out (anything else there is never replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _skip(out: str, settings: dict, force: bool, stage_name: str, overwrite: bool = False) -> bool:
  """Skip a complete build with these settings; else refuse an --out this builder may not replace (before any
  work: physbert_jax.outputs)."""
  if not force and writer.build_is_current(out, settings):
    print(f"{out} is complete and built with these settings; skipping (--force rebuilds)")
    return True
  outputs.check_out(out, stage_name, overwrite or force)
  return False


def cmd_category(args) -> None:
  settings = {"meta": _file_facts(papers.meta_files(args.meta)), "exclude_sha256": _exclude_sha(args.exclude),
              "num_pairs": args.num_pairs, "min_class_papers": args.min_class_papers,
              "min_abstract_chars": args.min_abstract_chars, "seed": args.seed, "num_shards": args.num_shards}
  if _skip(args.out, settings, args.force, category.STAGE, args.overwrite):
    return
  category.build(args.meta, args.out, args.exclude, args.num_pairs, args.min_class_papers, args.min_abstract_chars,
                 args.seed, args.num_shards, settings, args.quiet, overwrite=args.overwrite or args.force)


def cmd_title_abstract(args) -> None:
  settings = {"meta": _file_facts(papers.meta_files(args.meta)), "exclude_sha256": _exclude_sha(args.exclude),
              "num_pairs": args.num_pairs, "seed": args.seed, "num_shards": args.num_shards}
  if _skip(args.out, settings, args.force, title_abstract.STAGE, args.overwrite):
    return
  title_abstract.build(args.meta, args.out, args.exclude, args.num_pairs, args.seed, args.num_shards, settings,
                       args.quiet, overwrite=args.overwrite or args.force)


def cmd_citation(args) -> None:
  kind, *rest = args.source
  if kind not in ("paperscape", "s2-bulk", "s2-api") or len(rest) != (kind != "s2-api"):
    raise SystemExit(f"--source {' '.join(args.source)}: expected `paperscape DIR`, `s2-bulk DIR` or `s2-api`")
  inputs = []
  if kind == "paperscape":
    source = citation.PaperscapeSource(rest[0])
    inputs = source.files
  elif kind == "s2-bulk":
    source = citation.S2BulkSource(rest[0], args.quiet)
    inputs = source.paper_files + source.citation_files
  else:
    if not args.meta:
      raise SystemExit("--source s2-api needs --meta: its physics papers are the citing papers asked about")
    excluded, skipped = papers.read_exclude(args.exclude), Skipped()
    ids = [p.id for p in papers.iter_papers(args.meta, skipped) if p.klass is not None and p.id not in excluded]
    cache = args.s2_cache or os.path.join(os.path.dirname(os.path.abspath(args.out)), "s2-cache.sqlite")
    client = s2_client.S2Client(args.s2_url, cache_path=cache, min_interval_s=args.s2_min_interval)
    source = s2_client.S2ApiSource(client, s2_client.citing_order(ids, args.seed), args.quiet)
  settings = {"source": [kind, *_file_facts(inputs)], "meta": _file_facts(papers.meta_files(args.meta or [])),
              "exclude_sha256": _exclude_sha(args.exclude), "num_pairs": args.num_pairs, "seed": args.seed,
              "num_shards": args.num_shards, "physics_only": not args.all_fields}
  if _skip(args.out, settings, args.force, citation.STAGE, args.overwrite):
    return
  citation.build(source, args.out, args.meta or [], args.exclude, args.num_pairs, args.seed, args.num_shards,
                 not args.all_fields, settings, args.quiet, overwrite=args.overwrite or args.force)
  if kind == "s2-api":
    print(f"s2-api: {client.stats}")


def cmd_synthetic_qa(args) -> None:
  kind, *rest = args.engine
  if kind not in ("vllm", "openai-endpoint", "transformers") or len(rest) != (kind == "openai-endpoint"):
    raise SystemExit(f"--engine {' '.join(args.engine)}: expected `vllm`, `openai-endpoint URL` or `transformers`")
  if kind != "openai-endpoint" and not args.model:
    raise SystemExit(f"--engine {kind} needs --model (a Hugging Face name or directory; transformers: or a .gguf file)")
  sampling = llm.Sampling(args.temperature, args.top_p, args.max_new_tokens)
  bounds = qa_text.Bounds(min_grounding=args.min_grounding)
  batch = args.batch_size or (8 if kind == "transformers" else 256)
  opts = synthetic_qa.Options(tuple(args.corpus), args.out, tuple(args.exclude), args.num_pairs, args.chunk_chars,
                              args.min_chunk_chars, args.seed, kind, args.model, sampling, bounds, batch, args.quiet)
  make = lambda: llm.make_engine(kind, args.model, sampling, rest[0] if rest else None, args.tensor_parallel_size,
                                 args.concurrency, batch, args.seed)
  synthetic_qa.run(opts, args.num_shards, args.shard_index, args.merge, args.force, make)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m data_prep.pairs", description="Pair sets for the contrastive stage.")
  sub = p.add_subparsers(dest="command", required=True)

  c = sub.add_parser("category", help="abstract pairs sharing a merged class, balanced over classes")
  c.add_argument("--meta", nargs="+", required=True, help="data/meta directory or the snapshot JSON lines file")
  _common(c, category.NUM_PAIRS, 8, scaled=True)
  c.add_argument("--min-class-papers", type=int, default=None,
                 help="classes with fewer papers are not used (default: the paper's 5000 on ~1.2M papers, scaled "
                      "to the corpus read: 487 on the 116,738-paper sample; 5000 gives the paper's 21 classes)")
  c.add_argument("--min-abstract-chars", type=int, default=papers.MIN_ABSTRACT_CHARS)
  c.set_defaults(run=cmd_category)

  c = sub.add_parser("title-abstract", help="(title, its abstract) pairs: query -> passage without an LLM")
  c.add_argument("--meta", nargs="+", required=True, help="data/meta directory or the snapshot JSON lines file")
  _common(c, title_abstract.NUM_PAIRS, 4, scaled=True)
  c.set_defaults(run=cmd_title_abstract)

  c = sub.add_parser("citation", help="(citing title, cited title) pairs")
  c.add_argument("--source", nargs="+", required=True, metavar="KIND [DIR]",
                 help="paperscape DIR (pscp-*.csv) | s2-bulk DIR (papers/, citations/) | s2-api")
  c.add_argument("--meta", nargs="*", default=[], help="titles and physics categories (s2-api: the citing papers)")
  _common(c, citation.NUM_PAIRS, 4)
  c.add_argument("--all-fields", action="store_true", help="keep citing papers whose primary is not physics")
  c.add_argument("--s2-url", default=os.environ.get("S2_API_URL", s2_client.BASE_URL), help="Graph API base URL")
  c.add_argument("--s2-cache", default=None,
                 help="SQLite cache of API answers (default: s2-cache.sqlite next to --out)")
  c.add_argument("--s2-min-interval", type=float, default=None,
                 help="seconds between API requests (default: 1 with S2_API_KEY, 3 without)")
  c.set_defaults(run=cmd_citation)

  c = sub.add_parser("synthetic-qa", help="(LLM question, chunk) pairs")
  c.add_argument("--corpus", nargs="+", required=True, help="corpus files or directories (data/corpus)")
  c.add_argument("--engine", nargs="+", required=True, metavar="KIND [URL]",
                 help="vllm | openai-endpoint URL (e.g. http://host:8000 from `vllm serve`) | transformers")
  c.add_argument("--model", default=None, help="model name or path (paper: LLaMA-3-70B-Instruct); "
                 "openai-endpoint: default the server's model; transformers: also a .gguf file (CPU tests)")
  _common(c, synthetic_qa.NUM_PAIRS, None)
  stage.add_shard_flags(c)
  c.add_argument("--chunk-chars", type=int, default=1000, help="paper: 1,000-character chunks")
  c.add_argument("--min-chunk-chars", type=int, default=200, help="a shorter last chunk of a document is dropped")
  c.add_argument("--tensor-parallel-size", type=int, default=None, help="vllm: GPUs per model (default: all visible)")
  c.add_argument("--concurrency", type=int, default=64, help="openai-endpoint: requests in flight")
  c.add_argument("--batch-size", type=int, default=None,
                 help="chunks per generate call and per progress save (default 256; transformers 8)")
  c.add_argument("--temperature", type=float, default=llm.Sampling.temperature)
  c.add_argument("--top-p", type=float, default=llm.Sampling.top_p)
  c.add_argument("--max-new-tokens", type=int, default=llm.Sampling.max_new_tokens)
  c.add_argument("--min-grounding", type=float, default=qa_text.Bounds.min_grounding,
                 help="share of an answer's content words that must occur in the chunk")
  c.set_defaults(run=cmd_synthetic_qa)

  args = p.parse_args(argv)
  if args.num_pairs is not None and args.num_pairs < 1:
    p.error(f"--num-pairs {args.num_pairs}: must be >= 1")
  if getattr(args, "num_shards", None) is not None and args.num_shards < 1:
    p.error(f"--num-shards {args.num_shards}: must be >= 1")
  try:
    args.run(args)
  except (FileNotFoundError, ValueError, s2_client.S2Error, outputs.DiskFullError) as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
