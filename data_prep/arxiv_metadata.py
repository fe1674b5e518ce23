"""Physics papers from arXiv's metadata snapshot, with PhysBERT's class label, and their category statistics.

    python -m data_prep.arxiv_metadata --snapshot arxiv-metadata-oai-snapshot.json.gz --out data/meta

Input: Kaggle's "arXiv metadata OAI snapshot" (one JSON object per line, plain or gzip; ~2.6M papers, ~4.5 GB
plain). A paper is kept when its primary category (the first code of `categories`) is a physics category
(data_prep.taxonomy; legacy archives such as chao-dyn -> nlin.CD are physics): ~1.3M papers on the 2024 snapshot,
116,738 of the 163,860 in the shared sample. Streams; memory holds one part's ids (for de-duplication) only.

Output directory (--out):

    papers-KKKKK-of-NNNNN.jsonl.gz   the kept records, one JSON object per line, UTF-8, compact; part K holds the
                                     papers with stage.shard_of(id, N) == K, in snapshot order. Each record is the
                                     snapshot record unchanged (all its keys, in its order: id, submitter, authors,
                                     title, comments, journal-ref, doi, report-no, categories, license, abstract,
                                     versions, update_date, authors_parsed) plus two derived keys at the end:
                                       "primary_category": the primary code as arXiv lists it today
                                                           ("chao-dyn" -> "nlin.CD", "astro-ph" stays "astro-ph")
                                       "class": PhysBERT's merged class of that code: "astro-ph", "cond-mat" or
                                                "hep" for astro-ph*/cond-mat*/hep-*, otherwise the code itself
                                                ("quant-ph", "physics.optics", "nlin.CD", ...)
                                     "class" is set on every record; whether the class counts for the 21-class
                                     tasks is in stats.json ("classes"), because the threshold needs all parts.
    stats.json                       after the merge: {"threshold": 5000, "classes": {class: papers, ...} (kept,
                                     largest first), "dropped_classes": {...}, "class_counts" (all),
                                     "category_counts" (normalised primary), "primary_counts" (as written in the
                                     snapshot), "non_physics_primary_counts", "papers_read", "physics_papers"}
    report-KKKKK-of-NNNNN.json       per part: settings, counts, skipped lines with file, line, id and reason
    report.json                      all parts summed (stage.merge_reports)

Skipped, each with file, line and id where there is one: invalid JSON, not UTF-8, not an object, a missing or
non-string id/categories/abstract, an empty abstract or categories, a duplicate id (the first is kept), a
truncated gzip (the part ends there and says so). Non-physics papers are not skipped but filtered, and counted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

from data_prep import stage, taxonomy
from data_prep.corpus_io import Skipped, read_lines
from physbert_jax import outputs

REQUIRED = ("id", "categories", "abstract")  # What later stages read; other snapshot keys are passed through.
PAPERS = "papers"


def papers_path(out_dir: str, index: int, count: int) -> str:
  return os.path.join(out_dir, stage.part_name(PAPERS, index, count, ".jsonl.gz"))


def _fast_id(raw: bytes) -> str | None:
  # Snapshot lines start with {"id":"..."; reading the id without parsing the line lets each of N array tasks
  # skip the other tasks' papers cheaply. Anything else is parsed in full.
  if raw.startswith(b'{"id":"'):
    end = raw.find(b'"', 7)
    if end > 7 and b"\\" not in raw[7:end]:
      return raw[7:end].decode("utf-8", "replace")
  return None


def _check(obj: dict) -> str | None:
  """Why a snapshot record is unusable, or None."""
  for key in REQUIRED:
    if key not in obj or obj[key] is None:
      return f"missing {key}"
    if not isinstance(obj[key], str):
      return f"{key} is not a string"
  if not obj["id"].strip():
    return "empty id"
  if not obj["categories"].split():
    return "empty categories"
  if not obj["abstract"].strip():
    return "empty abstract"
  return None


def _parse(raw: bytes) -> dict | tuple[str, str | None]:
  """A snapshot line -> its object, or (reason, detail) when it is damaged."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    return "not UTF-8", f"byte {e.start} of the line"
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    return "invalid JSON", f"{e.msg} at column {e.colno}"
  if not isinstance(obj, dict):
    return "not a JSON object", None
  return obj


def filter_part(snapshot: str, out_dir: str, index: int, count: int, quiet: bool = False) -> dict:
  """Write part `index` of `count`: the physics papers of the snapshot that belong to it."""
  skipped = Skipped()
  name = os.path.basename(snapshot)
  seen: set[str] = set()
  counts = {"papers_read": 0, "physics_papers": 0, "non_physics_papers": 0}
  primary_counts: collections.Counter[str] = collections.Counter()
  non_physics: collections.Counter[str] = collections.Counter()
  out = papers_path(out_dir, index, count)
  bar = stage.progress(None, f"metadata {index}/{count}", " lines", quiet)
  with stage.jsonl_gz_writer(out) as writer:
    # A truncated snapshot: every part meets the damage and reports it, since each lacks its papers after it.
    for lineno, raw in read_lines(snapshot, name, skipped):
      bar.update(1)
      if not raw.strip():
        continue
      fast = _fast_id(raw)
      if fast is not None and stage.shard_of(fast, count) != index:
        continue  # Another part's paper: not even parsed.
      obj = _parse(raw)
      if fast is None:
        pid = obj.get("id") if isinstance(obj, dict) else None
        # A line without a readable id is reported by exactly one part.
        owner = stage.shard_of(pid, count) if isinstance(pid, str) and pid.strip() else lineno % count
        if owner != index:
          continue
      if isinstance(obj, tuple):
        skipped.add(name, lineno, obj[0], doc_id=fast, detail=obj[1])
        continue
      counts["papers_read"] += 1
      paper_id = obj.get("id") if isinstance(obj.get("id"), str) else None
      why = _check(obj)
      if why:
        skipped.add(name, lineno, why, doc_id=paper_id)
        continue
      if paper_id in seen:
        skipped.add(name, lineno, "duplicate id", doc_id=paper_id, detail="the first record is kept")
        continue
      seen.add(paper_id)
      raw_primary = obj["categories"].split()[0]
      code = taxonomy.normalize(raw_primary)
      if not taxonomy.is_physics(code):
        counts["non_physics_papers"] += 1
        non_physics[raw_primary] += 1
        continue
      counts["physics_papers"] += 1
      primary_counts[raw_primary] += 1
      writer.write({**obj, "primary_category": code, "class": taxonomy.merged_class(code)})
  bar.close()
  counts["primary_counts"] = dict(sorted(primary_counts.items()))
  counts["non_physics_primary_counts"] = dict(sorted(non_physics.items()))
  return {"counts": counts, "skipped": skipped, "outputs": [os.path.basename(out)]}


def class_stats(counts: dict, threshold: int | None) -> dict:
  """stats.json from the merged counts: the threshold, kept and dropped classes, category counts. A None threshold
  is the paper's 5,000 scaled to the physics papers counted (taxonomy.scaled)."""
  if threshold is None:
    threshold = taxonomy.scaled(taxonomy.MIN_CLASS_PAPERS, counts["physics_papers"])
  categories: collections.Counter[str] = collections.Counter()
  classes: collections.Counter[str] = collections.Counter()
  for raw, n in counts["primary_counts"].items():
    code = taxonomy.normalize(raw)
    categories[code] += n
    classes[taxonomy.merged_class(code)] += n
  ordered = lambda c: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
  return {
      "threshold": threshold,
      "classes": ordered({c: n for c, n in classes.items() if n >= threshold}),
      "dropped_classes": ordered({c: n for c, n in classes.items() if n < threshold}),
      "class_counts": ordered(classes),
      "category_counts": dict(sorted(categories.items())),
      "primary_counts": counts["primary_counts"],
      "non_physics_primary_counts": counts["non_physics_primary_counts"],
      "papers_read": counts["papers_read"],
      "physics_papers": counts["physics_papers"],
  }


def merge(out_dir: str, count: int, threshold: int | None) -> dict:
  report = stage.merge_reports(out_dir, count, "arxiv_metadata")
  if not report["counts"].get("physics_papers"):
    raise ValueError(f"{out_dir}: no physics paper in the snapshot ({report['counts'].get('papers_read', 0):,} "
                     f"records read; {stage.skipped_summary(report['skipped'], 3)}); check --snapshot")
  stats = class_stats(report["counts"], threshold)
  threshold = stats["threshold"]
  stage.write_json(os.path.join(out_dir, "stats.json"), stats)
  print(stage.summary_line("arxiv_metadata", report))
  print(stage.skipped_summary(report["skipped"]))
  print(f"class threshold: {threshold:,} papers -> {len(stats['classes'])} classes kept, "
        f"{len(stats['dropped_classes'])} dropped")
  for c, n in stats["classes"].items():
    print(f"  {c:<22} {n:>9,}")
  dropped = ", ".join(f"{c} {n:,}" for c, n in stats["dropped_classes"].items())
  print(f"  dropped (< {threshold:,}): {dropped or 'none'}")
  return stats


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--snapshot", required=True, help="arxiv-metadata-oai-snapshot.json(.gz), one JSON object a line")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--min-class-papers", type=int, default=None,
                 help="classes with fewer papers are dropped from the labelling (default: the paper's 5000 on "
                      "~1.2M papers, scaled to the physics papers read; 5000 -> the paper's 21 classes)")
  stage.add_shard_flags(p)
  args = p.parse_args(argv)
  with outputs.user_errors():
    count, indices = stage.resolve_shards(args.num_shards, args.shard_index)
    if not args.merge:
      if not os.path.isfile(args.snapshot):
        raise SystemExit(f"error: --snapshot {args.snapshot}: no such file")
      settings = {"snapshot": os.path.basename(args.snapshot), "size": os.path.getsize(args.snapshot)}
      stage.run_parts("arxiv_metadata", args.out, settings, count, indices,
                      lambda k, n: filter_part(args.snapshot, args.out, k, n, args.quiet), force=args.force)
    if args.merge or len(indices) == count:
      merge(args.out, count, args.min_class_papers)


if __name__ == "__main__":
  main()
