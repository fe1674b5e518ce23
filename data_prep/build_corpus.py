"""The pre-training corpus: each physics paper's full text when there is one, else its title and abstract.

    python -m data_prep.build_corpus --meta data/meta [--text data/text] --out data/corpus

Inputs: a metadata directory (data_prep.arxiv_metadata) and, optionally, a text directory (data_prep.pdf_to_text or
data_prep.unarxive: `text-KKKKK-of-NNNNN.jsonl.gz` lines {"id", "text" (null when extraction failed), "error", ...}).
Either may have been built with another --num-shards: a part then reads every input part and keeps its own ids.
A text part is held in memory (~41 GB / N for the full arXiv: use N >= 64).

Output directory (--out):

    corpus-KKKKK-of-NNNNN.jsonl.gz   {"id": "1401.0025", "categories": "hep-th gr-qc", "source": "fulltext" | "abstract",
                                      "text": "..."}, one paper a line, in metadata order; readable as a corpus by
                                      train_tokenizer and build_mlm_shards (corpus_io reads *.jsonl.gz)
    report-KKKKK-of-NNNNN.json, report.json   papers, documents per source, characters, why papers fell back to
                                      the abstract, skipped with file, line, id and reason

Cleaning (`clean_text`): Unicode NFKC (ligatures, full-width and compatibility characters folded: "ﬁ" -> "fi"),
control characters removed, runs of spaces and tabs collapsed, lines stripped, blank lines dropped; paragraphs stay
one a line. LaTeX is kept as text (`$\\alpha_s$`): the tokenizer learns its pieces. The abstract document is
"title\\nabstract". Ids are de-duplicated (the first is kept; all copies of an id are in one part, see stage.py).
Full arXiv: ~1.25M papers, ~41 GB of text after Nougat; the shared sample's 116,738 abstracts are ~110 MB.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import unicodedata
from typing import Iterator

from data_prep import arxiv_metadata, stage
from data_prep.corpus_io import Skipped
from physbert_jax import outputs

CORPUS = "corpus"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")  # Keeps \t and \n for the next step.
_SPACES = re.compile(r"[ \t\u00a0]+")


def clean_text(text: str) -> str:
  text = unicodedata.normalize("NFKC", text)
  text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
  lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
  return "\n".join(line for line in lines if line)


def clean_abstract(title: str, abstract: str) -> str:
  # The snapshot wraps titles and abstracts at ~80 columns: those line breaks are not paragraphs.
  one_line = lambda s: " ".join(clean_text(s).split())
  return "\n".join(s for s in (one_line(title or ""), one_line(abstract)) if s)


def corpus_path(out_dir: str, index: int, count: int) -> str:
  return os.path.join(out_dir, stage.part_name(CORPUS, index, count, ".jsonl.gz"))


def own_records(directory: str, prefix: str, index: int, count: int, skipped: Skipped) -> Iterator[dict]:
  """Records of `directory`'s parts (prefix-KKKKK-of-NNNNN.jsonl.gz) that belong to part `index` of `count`."""
  report = stage.read_json(os.path.join(directory, "report.json"))  # Exists only after a complete merge.
  parts = report["parts"]
  names = [stage.part_name(prefix, i, parts, ".jsonl.gz") for i in range(parts)]
  if parts == count:
    names = [names[index]]  # Same sharding: part K's ids are all in input part K.
  for name in names:
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing although {directory}/report.json lists it; rebuild that part")
    for lineno, obj in stage.iter_json_lines(path, skipped, name):
      pid = obj.get("id")
      if not isinstance(pid, str):
        skipped.add(name, lineno, "missing id")
        continue
      if parts == count or stage.shard_of(pid, count) == index:
        obj["_where"] = (name, lineno)
        yield obj


def build_part(meta_dir: str, text_dir: str | None, out_dir: str, index: int, count: int,
               quiet: bool = False) -> dict:
  skipped = Skipped()
  texts: dict[str, dict] = {}
  if text_dir:
    for obj in own_records(text_dir, "text", index, count, skipped):
      if obj["id"] in texts:
        skipped.add(*obj["_where"], "duplicate id in text", doc_id=obj["id"], detail="the first is kept")
      else:
        texts[obj["id"]] = obj
  counts = collections.Counter()
  fallback: collections.Counter[str] = collections.Counter()
  seen: set[str] = set()
  out = corpus_path(out_dir, index, count)
  bar = stage.progress(None, f"corpus {index}/{count}", " papers", quiet)
  with stage.jsonl_gz_writer(out) as writer:
    for paper in own_records(meta_dir, arxiv_metadata.PAPERS, index, count, skipped):
      bar.update(1)
      pid = paper["id"]
      counts["papers"] += 1
      if pid in seen:
        skipped.add(*paper["_where"], "duplicate id", doc_id=pid, detail="the first is kept")
        continue
      seen.add(pid)
      full = texts.pop(pid, None)
      text = clean_text(full["text"]) if full and isinstance(full.get("text"), str) else ""
      if text:
        source = "fulltext"
      else:
        if full is None:
          fallback["no text" if text_dir else "no --text given"] += 1
        else:
          fallback[full.get("error") or "empty text"] += 1
        source = "abstract"
        text = clean_abstract(paper.get("title") or "", paper.get("abstract") or "")
      if not text:
        skipped.add(*paper["_where"], "no text and empty abstract", doc_id=pid)
        continue
      writer.write({"id": pid, "categories": paper.get("categories", ""), "source": source, "text": text})
      counts["documents"] += 1
      counts[f"documents_{source}"] += 1
      counts["characters"] += len(text)
      counts["words"] += len(text.split())
  bar.close()
  for pid, obj in texts.items():  # Text for a paper the metadata does not keep (not physics, or filtered out).
    skipped.add(*obj["_where"], "text without physics metadata", doc_id=pid)
  result = dict(counts)
  result["abstract_fallback_reasons"] = dict(sorted(fallback.items()))
  return {"counts": result, "skipped": skipped, "outputs": [os.path.basename(out)]}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--meta", required=True, help="directory written by data_prep.arxiv_metadata")
  p.add_argument("--text", default=None, help="directory written by data_prep.pdf_to_text or data_prep.unarxive")
  p.add_argument("--out", required=True, help="output directory")
  stage.add_shard_flags(p)
  args = p.parse_args(argv)
  count, indices = stage.resolve_shards(args.num_shards, args.shard_index)
  for flag, folder, writer, done in (("--meta", args.meta, "arxiv_metadata", "stats.json"),
                                     ("--text", args.text, "pdf_to_text", "report.json")):
    if folder and not os.path.isfile(os.path.join(folder, done)):
      raise ValueError(f"{flag} {folder}: not a finished data_prep.{writer} folder (no {done}); run that stage "
                       "(and its --merge) first")
  if not args.merge:
    settings = {"meta": os.path.abspath(args.meta), "text": args.text and os.path.abspath(args.text)}
    stage.run_parts("build_corpus", args.out, settings, count, indices,
                    lambda k, n: build_part(args.meta, args.text, args.out, k, n, args.quiet), force=args.force)
  if args.merge or len(indices) == count:
    report = stage.merge_reports(args.out, count, "build_corpus")
    print(stage.summary_line("build_corpus", report))
    if not report["counts"].get("documents"):
      raise ValueError(f"{args.out}: no document written: {args.meta} holds no usable paper; check the metadata "
                       "stage's report.json")
    print(f"abstract fallbacks: {report['counts'].get('abstract_fallback_reasons') or 'none'}")
    print(stage.skipped_summary(report["skipped"]))


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
