"""Reading corpus documents (outputs are published by physbert_jax.outputs).

A corpus is any mix of:

    *.txt               one document per non-empty line
    *.jsonl, *.jsonl.gz one JSON object per line: {"id": ..., "text": ...}; "id" is optional
    directories         every such file inside, recursively, in sorted order

Documents come out as (doc_id, text). A document without an "id" is named `<file>:<line>`, where <file> is the
path relative to the corpus argument (the base name for a file argument), so ids do not depend on where the corpus
is mounted: the train/validation split hashes them.

Bad lines (invalid JSON, no usable "text", bytes that are not UTF-8, a truncated gzip stream) do not stop a multi-hour job: they are skipped
and recorded in a `Skipped` that the caller prints and writes to its report. A missing file or an unknown file type
is an error: that is a wrong command line, not bad data.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import zlib
from typing import Iterable, Iterator

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz")


class Skipped:
  """Lines that were not documents: where and why. Keeps every count, and the first `keep` locations."""

  def __init__(self, keep: int = 1000):
    self.keep = keep
    self.count = 0
    self.by_reason: collections.Counter[str] = collections.Counter()
    self.entries: list[dict] = []

  def add(self, file: str, line: int | None, reason: str, doc_id: str | None = None,
          detail: str | None = None) -> None:
    """`reason` is a short fixed phrase (the report counts by it); `doc_id` and `detail` locate and explain."""
    self.count += 1
    self.by_reason[reason] += 1
    if len(self.entries) < self.keep:
      entry = {"file": file, "line": line, "reason": reason}
      if doc_id is not None:
        entry["id"] = doc_id
      if detail is not None:
        entry["detail"] = detail
      self.entries.append(entry)

  def __len__(self) -> int:
    return self.count

  def to_json(self) -> dict:
    return {"count": self.count, "by_reason": dict(sorted(self.by_reason.items())), "entries": self.entries}

  def summary(self, show: int = 10) -> str:
    if not self.count:
      return "skipped: none"
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.by_reason.items()))
    lines = [f"skipped: {self.count} ({reasons})"]
    for e in self.entries[:show]:
      where = e["file"] + (f":{e['line']}" if e["line"] is not None else "") + (f" id {e['id']}" if "id" in e else "")
      lines.append(f"  {where}: {e['reason']}" + (f" ({e['detail']})" if "detail" in e else ""))
    if self.count > show:
      lines.append(f"  ... {self.count - show} more (see the report)")
    return "\n".join(lines)


def expand_paths(paths: Iterable[str]) -> list[tuple[str, str]]:
  """Corpus arguments -> [(file path, name used in ids and reports)], in a stable order."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      found = []
      for root, dirs, names in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, n) for n in names if n.endswith(SUFFIXES)]
      if not found:
        raise FileNotFoundError(f"{path}: directory holds no corpus files ({', '.join(SUFFIXES)})")
      files += [(f, os.path.relpath(f, path)) for f in sorted(found)]
    elif os.path.isfile(path):
      if not path.endswith(SUFFIXES):
        raise ValueError(f"{path}: unknown corpus file type; expected one of {', '.join(SUFFIXES)}")
      files.append((path, os.path.basename(path)))
    else:
      raise FileNotFoundError(f"{path}: no such corpus file or directory")
  return files


def read_lines(path: str, name: str, skipped: Skipped) -> Iterator[tuple[int, bytes]]:
  # Binary, so that one undecodable line is skipped instead of failing the whole file.
  opener = gzip.open if path.endswith(".gz") else open
  lineno = 0
  try:
    with opener(path, "rb") as f:
      for lineno, raw in enumerate(f, start=1):
        yield lineno, raw
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    # A truncated upload or a job killed while writing: keep what was read, record where it stopped.
    skipped.add(name, lineno + 1, "truncated or corrupt gzip", detail=f"nothing read after line {lineno}: {e}")


def _json_document(line: str) -> tuple[str | None, str] | str:
  """A .jsonl line -> (id or None, text), or the reason it is not a document."""
  try:
    obj = json.loads(line)
  except json.JSONDecodeError:
    return "invalid JSON"
  if not isinstance(obj, dict):
    return "not a JSON object"
  text = obj.get("text")
  if text is None:
    return "missing text"
  if not isinstance(text, str):
    return "text is not a string"
  if not text.strip():
    return "empty text"
  doc_id = obj.get("id")
  return (None if doc_id is None else str(doc_id)), text.strip()


def iter_documents(paths: Iterable[str], skipped: Skipped | None = None) -> Iterator[tuple[str, str]]:
  """Yield (doc_id, text) for every document under `paths`; bad lines go to `skipped`."""
  skipped = Skipped() if skipped is None else skipped
  for path, name in expand_paths(paths):
    is_json = not path.endswith(".txt")
    for lineno, raw in read_lines(path, name, skipped):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError:
        skipped.add(name, lineno, "not UTF-8")
        continue
      if not line.strip():
        continue  # Blank lines separate nothing and are not errors.
      if is_json:
        doc = _json_document(line)
        if isinstance(doc, str):
          skipped.add(name, lineno, doc)
          continue
        doc_id, text = doc
      else:
        doc_id, text = None, line.strip()
      yield (doc_id if doc_id is not None else f"{name}:{lineno}"), text
