"""Citation graphs for the citation-classification set: read them, and sample balanced (citing, cited) pairs.

Sources read (a directory may hold several files; each is recognised by its name):
  * Paperscape `pscp-*.csv` (paperscape/paperscape-data): `id;cats;nfound;ntotal;refs;authors;title`, `#` comments.
    Each paper carries its own title, so a pair needs no metadata: a reference counts when the cited id is itself
    a row of the files (its title is then known).
  * JSON lines `*.jsonl[.gz]` with {"id", "title", "refs": [ids]}: the same graph from any other extraction.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from data_prep import stage
from data_prep.corpus_io import Skipped
from data_prep.pairs import papers
from data_prep.pairs.citation import PaperscapeSource


class Graph:
  """Paper id -> title and the set of ids it cites."""

  def __init__(self):
    self.title: dict[str, str] = {}
    self.refs: dict[str, set[str]] = {}
    self.files: list[str] = []

  def add(self, pid: str, title: str, refs) -> None:
    if not pid or not title:
      return  # a paper without a title cannot be a text pair
    self.title[pid] = title
    self.refs.setdefault(pid, set()).update(r for r in refs if r and r != pid)

  def cites_either_way(self, a: str, b: str) -> bool:
    return b in self.refs.get(a, ()) or a in self.refs.get(b, ())


def citation_files(path: str) -> list[str]:
  """The citation files at `path` (a file or a directory), sorted; [] when there are none."""
  if os.path.isfile(path):
    return [path]
  names = glob.glob(os.path.join(path, "pscp-*.csv")) + glob.glob(os.path.join(path, "*.jsonl")) + \
      glob.glob(os.path.join(path, "*.jsonl.gz"))
  return sorted(names)


def read_graph(path: str, skipped: Skipped | None = None) -> Graph:
  """The graph of every citation file at `path`, read as data_prep's citation pairs read them: ids without version
  or prefix, titles with the line wrapping collapsed, a malformed row counted in `skipped` (file and line)."""
  files = citation_files(path)
  if not files:
    raise FileNotFoundError(f"{path}: no citation files (expected pscp-*.csv or *.jsonl[.gz] with id/title/refs)")
  skipped = Skipped() if skipped is None else skipped
  graph = Graph()
  for name in files:
    graph.files.append(name)
    if name.endswith(".csv"):
      for pid, refs, title in PaperscapeSource(name).rows(skipped):
        graph.add(pid, title, [papers.arxiv_id(r) for r in refs.split(",") if r.strip()])
      continue
    for lineno, row in stage.iter_json_lines(name, skipped, os.path.basename(name)):
      if not all(isinstance(row.get(k), t) for k, t in (("id", str), ("title", str), ("refs", list))):
        skipped.add(os.path.basename(name), lineno, "citation row without string id/title and list refs")
        continue
      graph.add(papers.arxiv_id(row["id"]), papers.clean(row["title"]), [papers.arxiv_id(str(r)) for r in row["refs"]])
  return graph


def positive_pairs(graph: Graph) -> list[tuple[str, str]]:
  """Every (citing, cited) edge whose both ends have a title, once per unordered pair, sorted."""
  seen, pairs = set(), []
  for a in sorted(graph.refs):
    for b in sorted(graph.refs[a]):
      if b in graph.title and frozenset((a, b)) not in seen:
        seen.add(frozenset((a, b)))
        pairs.append((a, b))
  return pairs


def sample_pairs(graph: Graph, n_pairs: int, rng: np.random.Generator) -> tuple[list[dict], dict]:
  """n_pairs // 2 positives and as many negatives, shuffled; returns (rows, stats).

  Negatives take their citing paper from the positives' citing papers and their cited paper from the positives'
  cited papers, so both classes have the same papers on each side: a model cannot score well by recognising
  papers that are often cited. A negative is rejected when either paper cites the other (in any direction) or
  when the pair is already used.
  """
  positives = positive_pairs(graph)
  n_pos = min(n_pairs // 2, len(positives))
  chosen = [positives[i] for i in sorted(rng.choice(len(positives), n_pos, replace=False))] if n_pos else []
  citing = sorted({a for a, _ in chosen})
  cited = sorted({b for _, b in chosen})
  used = {frozenset(p) for p in chosen}
  negatives: list[tuple[str, str]] = []
  attempts = 0
  while len(negatives) < n_pos and attempts < 50 * n_pos + 1000:
    draw = max(1024, 2 * (n_pos - len(negatives)))
    attempts += draw
    for i, j in zip(rng.integers(0, len(citing), draw), rng.integers(0, len(cited), draw)):
      a, b = citing[i], cited[j]
      key = frozenset((a, b))
      if a == b or key in used or graph.cites_either_way(a, b):
        continue
      used.add(key)
      negatives.append((a, b))
      if len(negatives) == n_pos:
        break
  chosen = chosen[:len(negatives)]  # keep the classes balanced if negatives ran out (tiny graphs)
  rows = [_row(graph, a, b, 1) for a, b in chosen] + [_row(graph, a, b, 0) for a, b in negatives]
  order = rng.permutation(len(rows))
  stats = {"papers": len(graph.title), "positive_pairs_available": len(positives),
           "positives": len(chosen), "negatives": len(negatives)}
  return [rows[i] for i in order], stats


def _row(graph: Graph, a: str, b: str, label: int) -> dict:
  return {"id1": a, "id2": b, "text1": graph.title[a], "text2": graph.title[b], "label": label}
