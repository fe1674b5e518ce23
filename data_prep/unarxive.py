"""unarXive full text (papers parsed from their LaTeX sources) as a text directory that build_corpus reads.

    python -m data_prep.unarxive --src unarXive_data_sample.tar.gz --out data/unarxive
    python -m data_prep.arxiv_metadata --snapshot data/unarxive/metadata.jsonl.gz --out data/unarxive/meta
    python -m data_prep.build_corpus --meta data/unarxive/meta --text data/unarxive/text --out data/unarxive/corpus

unarXive (Saier & Faerber, CC BY-SA 4.0) is an alternative to PDF -> Nougat for papers with LaTeX sources. --src
is a .tar.gz, a directory (searched recursively) or one .jsonl file; each line is a paper {paper_id, metadata
(the snapshot schema), abstract, body_text: [{section, sec_number, text, ...}], ref_entries: {id: {latex, type}}}.
The shared sample: 49 papers (December 2022, 23 physics), 5,967 paragraphs, 10.7 MB of JSON -> ~2.9 MB of text.

Output (--out):

    metadata.jsonl.gz           the papers' `metadata` records: a snapshot for data_prep.arxiv_metadata
    text/text-KKKKK-of-NNNNN.jsonl.gz   {"id", "text", "error": null, "engine": "unarxive", "pages": null}
    text/metadata-KKKKK-of-NNNNN.jsonl.gz, text/report*.json   the parts, as every stage (stage.py)

Text: title, abstract, then body paragraphs, with a line "sec_number section" where the section changes. Formula
placeholders {{formula:ID}} become `$latex$` from ref_entries (math kept as text); {{cite:...}}, {{figure:...}} and
{{table:...}} placeholders are dropped, as Nougat's post-processing drops captions and references.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import tarfile
from typing import Iterator

from data_prep import stage
from data_prep.corpus_io import Skipped
from physbert_jax import outputs

_PLACEHOLDER = re.compile(r"\{\{(\w+):([^}]*)\}\}")


def paper_text(paper: dict) -> str:
  refs = paper.get("ref_entries") or {}

  def resolve(m: re.Match) -> str:
    if m.group(1) == "formula":
      latex = (refs.get(m.group(2)) or {}).get("latex", "")
      return f"${' '.join(latex.split())}$" if latex.strip() else ""
    return ""

  lines = [paper.get("metadata", {}).get("title", ""), (paper.get("abstract") or {}).get("text", "")]
  section = None
  for para in paper.get("body_text") or []:
    heading = _PLACEHOLDER.sub(resolve, " ".join(x for x in (para.get("sec_number"), para.get("section")) if x))
    if heading and heading != section:
      lines.append(heading)
      section = heading
    lines.append(_PLACEHOLDER.sub(resolve, para.get("text", "")))
  return "\n".join(" ".join(line.split()) for line in lines if line and line.strip())


def _sources(src: str) -> Iterator[tuple[str, io.BufferedIOBase]]:
  """(name, binary file) for every .jsonl under `src`, in a stable order."""
  if os.path.isdir(src):
    for root, dirs, names in os.walk(src):
      dirs.sort()
      for n in sorted(names):
        if n.endswith((".jsonl", ".jsonl.gz")):
          yield os.path.relpath(os.path.join(root, n), src), os.path.join(root, n)
  elif src.endswith((".tar.gz", ".tgz", ".tar")):
    with tarfile.open(src) as tar:
      for member in sorted(tar.getmembers(), key=lambda m: m.name):
        if member.isfile() and member.name.endswith(".jsonl"):
          yield member.name, tar.extractfile(member)
  else:
    yield os.path.basename(src), src


def _records(src: str, skipped: Skipped) -> Iterator[tuple[str, int, dict]]:
  import tempfile
  for name, f in _sources(src):
    if isinstance(f, str):
      for lineno, obj in stage.iter_json_lines(f, skipped, name):
        yield name, lineno, obj
    else:  # A tar member: spill to a temp file so the damage-tolerant reader can read it.
      with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        tmp.write(f.read())
        tmp.flush()
        for lineno, obj in stage.iter_json_lines(tmp.name, skipped, name):
          yield name, lineno, obj


def convert_part(src: str, out_dir: str, index: int, count: int) -> dict:
  skipped = Skipped()
  counts = {"papers": 0, "documents": 0, "characters": 0}
  text_path = os.path.join(out_dir, "text", stage.part_name("text", index, count, ".jsonl.gz"))
  meta_path = os.path.join(out_dir, "text", stage.part_name("metadata", index, count, ".jsonl.gz"))
  with stage.jsonl_gz_writer(text_path) as texts, stage.jsonl_gz_writer(meta_path) as metas:
    for name, lineno, paper in _records(src, skipped):
      meta = paper.get("metadata")
      pid = meta.get("id") if isinstance(meta, dict) else None
      if not isinstance(pid, str):
        skipped.add(name, lineno, "missing metadata.id", doc_id=paper.get("paper_id"))
        continue
      if stage.shard_of(pid, count) != index:
        continue
      counts["papers"] += 1
      text = paper_text(paper)
      metas.write(meta)
      texts.write({"id": pid, "text": text or None, "error": None if text else "empty body", "engine": "unarxive",
                   "pages": None})
      counts["documents"] += bool(text)
      counts["characters"] += len(text)
  return {"counts": counts, "skipped": skipped, "outputs": [os.path.basename(text_path), os.path.basename(meta_path)]}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--src", required=True, help="unarXive .tar.gz, directory or .jsonl")
  p.add_argument("--out", required=True, help="output directory")
  stage.add_shard_flags(p)
  args = p.parse_args(argv)
  count, indices = stage.resolve_shards(args.num_shards, args.shard_index)
  settings = {"src": os.path.abspath(args.src)}
  text_dir = os.path.join(args.out, "text")
  if not args.merge:
    stage.run_parts("unarxive", text_dir, settings, count, indices,
                    lambda k, n: convert_part(args.src, args.out, k, n), force=args.force)
  if args.merge or len(indices) == count:
    report = stage.merge_reports(text_dir, count, "unarxive")
    # One snapshot file for arxiv_metadata: the parts' metadata concatenated (gzip members concatenate).
    with stage.atomic_path(os.path.join(args.out, "metadata.jsonl.gz")) as tmp, open(tmp, "wb") as out:
      for i in range(count):
        with open(os.path.join(text_dir, stage.part_name("metadata", i, count, ".jsonl.gz")), "rb") as f:
          out.write(f.read())
    print(stage.summary_line("unarxive", report))
    print(stage.skipped_summary(report["skipped"]))


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
