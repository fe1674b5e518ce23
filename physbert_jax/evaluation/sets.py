"""Evaluation set files: names, row schemas, reading with validation, writing, hashing.

A sets directory (written by eval/build_sets.py) holds:

    manifest.json                   seed, requested and built sizes, sources with sha256, counts, file sha256
    ids.txt                         every paper id used by any evaluation file: training must exclude these
    clustering.jsonl.gz             {"id", "text": abstract, "label": merged class}
    citation.jsonl.gz               {"id1", "id2", "text1": citing title, "text2": cited title, "label": 1 | 0}
    retrieval-queries.jsonl.gz      {"id", "text": query, "relevant": [corpus ids]}
    retrieval-corpus.jsonl.gz       {"id", "text": abstract}
    subdomain-<domain>.jsonl.gz     {"id", "text": abstract, "label": subcategory}   (domain: cond-mat, astro-ph, hep)
    train/subdomain-<domain>/       the domain's training pairs, a pair set (records.py): title -> abstract
    train/ids.txt                   ids of the training pairs (disjoint from ids.txt)

Files are gzip JSON lines, one row per line, so a reader can stream them without holding a set in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from typing import Iterator

from physbert_jax import outputs, records

SUBDOMAINS = ("cond-mat", "astro-ph", "hep")  # the paper's order

CLUSTERING = "clustering.jsonl.gz"
CITATION = "citation.jsonl.gz"
RETRIEVAL_QUERIES = "retrieval-queries.jsonl.gz"
RETRIEVAL_CORPUS = "retrieval-corpus.jsonl.gz"
MANIFEST = "manifest.json"
IDS = "ids.txt"
TRAIN_DIR = "train"


def subdomain_file(domain: str) -> str:
  return f"subdomain-{domain}.jsonl.gz"


def subdomain_pairs(domain: str) -> str:
  return f"subdomain-{domain}"


# Keys every row of a file kind must carry, with the type each value must have.
SCHEMAS = {
    "labelled": {"id": str, "text": str, "label": str},
    "pairs": {"id1": str, "id2": str, "text1": str, "text2": str, "label": int},
    "queries": {"id": str, "text": str, "relevant": list},
    "corpus": {"id": str, "text": str},
}


class SetError(ValueError):
  """A set file that cannot be used; the message names the file (and line)."""


def read_rows(path: str, schema: str) -> Iterator[dict]:
  """Stream the rows of a set file, checking each against its schema. Raises SetError naming file and line."""
  if not os.path.exists(path):
    raise SetError(f"{path}: set file not found (build it with `python -m eval.build_sets`)")
  keys = SCHEMAS[schema]
  n = 0
  for lineno, row in records.strict_lines(path, SetError, fix="rebuild the sets with `python -m eval.build_sets`"):
    if not isinstance(row, dict):
      raise SetError(f"{path}: line {lineno}: not a JSON object")
    for key, kind in keys.items():
      value = row.get(key)
      if value is None or value == "" or value == []:
        raise SetError(f"{path}: line {lineno}: missing {key!r} (a {schema} row needs {sorted(keys)})")
      if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SetError(f"{path}: line {lineno}: {key!r} must be {kind.__name__}, got {type(value).__name__}")
    if schema == "pairs" and row["label"] not in (0, 1):
      raise SetError(f"{path}: line {lineno}: 'label' must be 0 or 1, got {row['label']!r}")
    n += 1
    yield row
  if n == 0:
    raise SetError(f"{path}: no rows (empty set)")


def load_rows(path: str, schema: str, fields: tuple[str, ...] | None = None) -> list[dict]:
  """All rows of a file, optionally only some fields (to leave texts out of memory)."""
  if fields is None:
    return list(read_rows(path, schema))
  return [{k: row[k] for k in fields} for row in read_rows(path, schema)]


def write_rows(path: str, rows) -> int:
  """Write rows as gzip JSON lines, byte-identical for identical rows (mtime 0 in the gzip header)."""
  n = 0
  with outputs.atomic_path(path) as tmp, open(tmp, "wb") as raw, \
      gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
    for row in rows:
      gz.write((json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
      n += 1
  return n


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def read_manifest(sets_dir: str) -> dict:
  path = os.path.join(sets_dir, MANIFEST)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
