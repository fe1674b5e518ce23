"""Paper metadata and exclusion lists, as every pair builder reads them.

`--meta` is either arXiv's metadata snapshot itself (one JSON object a line, .json/.jsonl, plain or gzip) or a
directory of such files (data_prep.arxiv_metadata's data/meta: papers-*.jsonl.gz; report/stats JSON files are not
read). A record needs "id", "categories" and "abstract"; "title" is used when present. The merged class is
recomputed here from the primary category (data_prep.taxonomy), so a raw snapshot and data/meta give the same
classes. Memory: the full snapshot's ~1.3M physics papers hold ~1.5 GB of titles and abstracts as Python strings.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Iterator

from data_prep import stage, taxonomy
from data_prep.corpus_io import Skipped

META_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_VERSION = re.compile(r"v\d+$")


@dataclasses.dataclass(frozen=True)
class Paper:
  id: str
  title: str
  abstract: str
  primary: str          # normalised primary category ("chao-dyn" -> "nlin.CD")
  klass: str | None     # PhysBERT's merged class; None for a non-physics primary


MIN_ABSTRACT_CHARS = 100       # shorter "abstracts" are placeholders ("See the paper.", "Erratum.")
_WITHDRAWN = ("this paper has been withdrawn", "this article has been withdrawn", "withdrawn by the author",
              "this submission has been withdrawn", "paper withdrawn")


def unusable(abstract: str, min_chars: int = MIN_ABSTRACT_CHARS) -> str | None:
  """Why an abstract cannot be a text of a pair or an evaluation set, or None: the one rule data_prep and eval
  share, so the benchmark draws from the papers training can see."""
  if len(abstract) < min_chars:
    return "abstract too short"
  if any(w in abstract[:300].lower() for w in _WITHDRAWN):
    return "withdrawn"
  return None


def clean(text: str) -> str:
  """Whitespace collapsed: the snapshot wraps titles and abstracts at ~80 columns, which is not structure."""
  return " ".join(text.split())


def arxiv_id(raw: str) -> str:
  """An arXiv id as the snapshot writes it: no "arXiv:" prefix, no version ("hep-th/9601001v2" -> "hep-th/9601001")."""
  raw = raw.strip()
  if raw[:6].lower() == "arxiv:":
    raw = raw[6:]
  return _VERSION.sub("", raw)


def read_exclude(paths: Iterable[str] | None) -> set[str]:
  """Ids to keep out of every pair (eval.build_sets' ids.txt): one a line; blank lines and '#' comments ignored."""
  ids: set[str] = set()
  for path in paths or ():
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--exclude {path}: not a file (expected an ids file such as evalsets/ids.txt)")
    with open(path, "rb") as f:
      for n, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8").split("#", 1)[0].strip()
        except UnicodeDecodeError:
          raise ValueError(f"--exclude {path}:{n}: not UTF-8 text; expected one arXiv id a line "
                           "(evalsets/ids.txt)") from None
        if line:
          ids.add(arxiv_id(line))
  return ids


def meta_files(paths: Iterable[str]) -> list[str]:
  files = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(root, n) for root, _, names in os.walk(path) for n in names
                     if n.endswith((".jsonl", ".jsonl.gz")) and not n.startswith("."))
      if not found:
        raise FileNotFoundError(f"--meta {path}: directory holds no *.jsonl / *.jsonl.gz files")
      files += found
    elif os.path.isfile(path):
      if not path.endswith(META_SUFFIXES):
        raise ValueError(f"--meta {path}: expected a snapshot file ({', '.join(META_SUFFIXES)}) or a directory")
      files.append(path)
    else:
      raise FileNotFoundError(f"--meta {path}: no such file or directory")
  return files


def iter_papers(paths: Iterable[str], skipped: Skipped, quiet: bool = True) -> Iterator[Paper]:
  """Every usable record under `paths`, de-duplicated by id (the first is kept); damage goes to `skipped`."""
  seen: set[str] = set()
  bar = stage.progress(None, "metadata", " papers", quiet)
  for path in meta_files(paths):
    name = os.path.basename(path)
    for lineno, obj in stage.iter_json_lines(path, skipped, name):
      bar.update(1)
      pid, cats, abstract, title = (obj.get(k) for k in ("id", "categories", "abstract", "title"))
      if not isinstance(pid, str) or not pid.strip():
        skipped.add(name, lineno, "missing id")
        continue
      pid = arxiv_id(pid)
      if not isinstance(cats, str) or not cats.split():
        skipped.add(name, lineno, "missing categories", doc_id=pid)
        continue
      if not isinstance(abstract, str):
        skipped.add(name, lineno, "missing abstract", doc_id=pid)
        continue
      if pid in seen:
        skipped.add(name, lineno, "duplicate id", doc_id=pid, detail="the first record is kept")
        continue
      seen.add(pid)
      primary = taxonomy.primary(cats)
      klass = taxonomy.merged_class(primary) if taxonomy.is_physics(primary) else None
      yield Paper(pid, clean(title) if isinstance(title, str) else "", clean(abstract), primary, klass)
  bar.close()
