"""Citation pairs: (citing paper's title, cited paper's title), from one of three sources behind one interface.

    python -m data_prep.pairs citation --source paperscape DIR --meta data/meta --out data/pairs/citation
    python -m data_prep.pairs citation --source s2-bulk DIR    --meta data/meta --out data/pairs/citation
    python -m data_prep.pairs citation --source s2-api         --meta data/meta --out data/pairs/citation

Paper: 1M title pairs from Semantic Scholar. A source yields citation edges (citing id, cited id, titles when it
has them) and, afterwards, titles for ids it can name (`titles`). Ids are arXiv ids ("hep-th/9601001",
"1401.0025") where the paper has one, else "CorpusId:N" (S2 bulk) or "S2:<paperId>" (S2 API).

  paperscape DIR  Paperscape's pscp-*.csv (one arXiv paper a row: id;cats;nfound;ntotal;refs;authors;title).
                  Cited titles are the titles of cited papers that are themselves rows, or come from --meta.
                  Full Paperscape (1991-2017): ~1.3M papers, ~20M matched refs, ~600 MB of CSV.
  s2-bulk DIR     Semantic Scholar's bulk datasets: DIR/papers/*.gz ({"corpusid", "title", "externalids": {"ArXiv"}})
                  and DIR/citations/*.gz ({"citingcorpusid", "citedcorpusid", ...}), gzip JSON lines. Citing papers
                  must have an arXiv id; cited papers may be any paper. Reads papers twice (arXiv papers, then
                  the titles of cited non-arXiv papers). Full datasets: ~200M papers, ~2.5B citations (~300 GB).
  s2-api          The Graph API (s2_client.py): --meta's physics papers, in a seeded order, resolved with the
                  batch endpoint and their references paged; stops as soon as enough edges are in hand.

Selection: an edge is dropped when it is a self-citation, when either paper is in --exclude, or when the citing
paper is known not to be physics (its primary category, from --meta or from the old-style id's archive in
Paperscape). Of the rest, the `num_pairs` with the smallest sha256(seed, citing, cited) are kept (a bounded heap:
memory is O(num_pairs), not O(edges), and the choice does not depend on file order). Titles: the source's, else
--meta's; edges with a missing title or two equal titles are dropped before selection, except where the source
finds titles only afterwards (S2 bulk's non-arXiv cited papers): there a 5% reserve of extra edges covers them.
Pairs are written in hash order, i.e. shuffled, dealt round robin over the shards.
"""

from __future__ import annotations

import dataclasses
import glob
import heapq
import os
import time
from typing import Iterable, Iterator, Protocol

from data_prep import stage, taxonomy
from data_prep.corpus_io import Skipped
from data_prep.pairs import papers, writer

KIND = "citation"
STAGE = "pairs citation"   # the output marker (physbert_jax.outputs)
NUM_PAIRS = 1_000_000          # paper: 1M citation title pairs


@dataclasses.dataclass
class Edge:
  citing: str
  cited: str
  citing_title: str | None = None
  cited_title: str | None = None
  citing_physics: bool | None = None   # None: the source does not know


class Source(Protocol):
  name: str
  lazy: bool          # True: stop reading as soon as enough edges are kept (API calls cost time)
  late_titles: bool   # True: `titles` can name papers whose edges came without a title

  def edges(self, skipped: Skipped) -> Iterator[Edge]: ...

  def titles(self, ids: set[str]) -> dict[str, str]: ...


def _archive_is_physics(paper_id: str) -> bool | None:
  """Old-style ids name their primary archive ("hep-th/9601001"); new-style ids do not (None)."""
  if "/" not in paper_id:
    return None
  archive = paper_id.split("/", 1)[0].split(".")[0]
  return archive in ("physics", "nlin") or taxonomy.is_physics(archive)


# --- Paperscape ------------------------------------------------------------------------------------------------


class PaperscapeSource:
  name, lazy, late_titles = "paperscape", False, False

  def __init__(self, *paths: str):
    self.files = [f for p in paths for f in (sorted(glob.glob(os.path.join(p, "pscp-*.csv"))) if os.path.isdir(p)
                                             else [p])]
    if not self.files or not all(os.path.isfile(f) for f in self.files):
      raise FileNotFoundError(f"--source paperscape {' '.join(paths)}: no pscp-*.csv files there")
    self.row_titles: dict[str, str] = {}

  def rows(self, skipped: Skipped) -> Iterator[tuple[str, str, str]]:
    """(arXiv id, its refs as Paperscape writes them, title) per row; malformed rows go to `skipped`."""
    for path in self.files:
      name = os.path.basename(path)
      with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
          if line.startswith("#") or not line.strip():
            continue
          fields = line.rstrip("\n").split(";", 6)  # The title may itself contain ';'.
          if len(fields) != 7 or not fields[0]:
            skipped.add(name, lineno, "malformed Paperscape row")
            continue
          yield papers.arxiv_id(fields[0]), fields[4], papers.clean(fields[6])

  def edges(self, skipped: Skipped) -> Iterator[Edge]:
    # Two reads: a paper cites papers of later rows and files, so every title is collected first (~1.3M titles,
    # ~150 MB for all of Paperscape), then edges come out with both titles.
    self.row_titles = {aid: title for aid, _, title in self.rows(Skipped()) if title}
    for aid, refs, title in self.rows(skipped):
      physics = _archive_is_physics(aid)
      for ref in refs.split(","):
        if ref.strip():
          cited = papers.arxiv_id(ref)
          yield Edge(aid, cited, title or None, self.row_titles.get(cited), physics)

  def titles(self, ids: set[str]) -> dict[str, str]:
    return {i: self.row_titles[i] for i in ids if i in self.row_titles}


# --- Semantic Scholar bulk datasets ----------------------------------------------------------------------------


class S2BulkSource:
  name, lazy, late_titles = "s2-bulk", False, True

  def __init__(self, path: str, quiet: bool = True):
    self.paper_files = sorted(glob.glob(os.path.join(path, "papers", "*.gz")))
    self.citation_files = sorted(glob.glob(os.path.join(path, "citations", "*.gz")))
    if not self.paper_files or not self.citation_files:
      raise FileNotFoundError(f"--source s2-bulk {path}: need {path}/papers/*.gz and {path}/citations/*.gz "
                              "(the S2 datasets API's 'papers' and 'citations' releases)")
    self.quiet = quiet
    self.arxiv: dict[int, str] = {}     # corpusid -> arXiv id, for papers that have one
    self.arxiv_titles: dict[str, str] = {}

  def _papers(self, skipped: Skipped) -> Iterator[dict]:
    bar = stage.progress(None, "s2 papers", " papers", self.quiet)
    for path in self.paper_files:
      for lineno, obj in stage.iter_json_lines(path, skipped, os.path.basename(path)):
        bar.update(1)
        if not isinstance(obj.get("corpusid"), int):
          skipped.add(os.path.basename(path), lineno, "paper without corpusid")
          continue
        yield obj
    bar.close()

  def edges(self, skipped: Skipped) -> Iterator[Edge]:
    for obj in self._papers(skipped):
      ext = obj.get("externalids") or {}
      if isinstance(ext.get("ArXiv"), str) and ext["ArXiv"].strip():
        aid = papers.arxiv_id(ext["ArXiv"])
        self.arxiv[obj["corpusid"]] = aid
        if isinstance(obj.get("title"), str) and obj["title"].strip():
          self.arxiv_titles[aid] = papers.clean(obj["title"])
    bar = stage.progress(None, "s2 citations", " edges", self.quiet)
    for path in self.citation_files:
      name = os.path.basename(path)
      for lineno, obj in stage.iter_json_lines(path, skipped, name):
        bar.update(1)
        citing, cited = obj.get("citingcorpusid"), obj.get("citedcorpusid")
        if not isinstance(citing, int) or not isinstance(cited, int):
          skipped.add(name, lineno, "citation without both corpus ids")  # S2 leaves unresolved refs null.
          continue
        if citing not in self.arxiv:
          continue  # Not an arXiv paper: outside the corpus.
        cited_id = self.arxiv.get(cited, f"CorpusId:{cited}")
        yield Edge(self.arxiv[citing], cited_id, self.arxiv_titles.get(self.arxiv[citing]),
                   self.arxiv_titles.get(cited_id))
    bar.close()

  def titles(self, ids: set[str]) -> dict[str, str]:
    out = {i: self.arxiv_titles[i] for i in ids if i in self.arxiv_titles}
    wanted = {int(i.split(":", 1)[1]) for i in ids if i.startswith("CorpusId:")}
    if wanted:
      for obj in self._papers(Skipped()):  # Damage was reported on the first read.
        if obj["corpusid"] in wanted and isinstance(obj.get("title"), str) and obj["title"].strip():
          out[f"CorpusId:{obj['corpusid']}"] = papers.clean(obj["title"])
    return out


# --- The builder -----------------------------------------------------------------------------------------------


def edge_score(seed: int, citing: str, cited: str) -> int:
  return stage.hash64(f"{seed}/{citing}/{cited}")


def select_edges(source: Source, limit: int, seed: int, excluded: set[str], meta_titles: dict[str, str],
                 meta_physics: dict[str, bool], physics_only: bool, skipped: Skipped, counts: dict
                 ) -> tuple[list[tuple], bool]:
  """The `limit` edges with the smallest scores, sorted by score; and whether any edge was pushed out."""
  heap: list[tuple] = []   # (-score, citing, cited, citing_title, cited_title): a max-heap on score
  kept: set[tuple[str, str]] = set()
  overflow = False
  for e in source.edges(skipped):
    counts["edges_read"] += 1
    if e.citing == e.cited:
      counts["self_citations"] += 1
      continue
    if e.citing in excluded or e.cited in excluded:
      counts["excluded"] += 1
      continue
    physics = meta_physics.get(e.citing, e.citing_physics)
    if physics_only and physics is False:
      counts["citing_not_physics"] += 1
      continue
    ta, tb = e.citing_title or meta_titles.get(e.citing), e.cited_title or meta_titles.get(e.cited)
    if not source.late_titles and not (ta and tb):
      counts["no_title"] += 1
      skipped.add(source.name, None, "no title", doc_id=e.cited if ta else e.citing, detail=f"{e.citing} -> {e.cited}")
      continue
    if ta and tb and ta.lower() == tb.lower():
      counts["same_title"] += 1   # An erratum or a duplicate entry citing itself: nothing to learn.
      continue
    if (e.citing, e.cited) in kept:
      counts["duplicates"] += 1
      continue
    item = (-edge_score(seed, e.citing, e.cited), e.citing, e.cited, ta, tb)
    if len(heap) < limit:
      heapq.heappush(heap, item)
      kept.add((e.citing, e.cited))
    else:
      overflow = True
      if item > heap[0]:  # A smaller score than the largest kept.
        _, a, b, _, _ = heapq.heapreplace(heap, item)
        kept.discard((a, b))
        kept.add((e.citing, e.cited))
      if source.lazy:
        break
  return sorted((-s, a, b, ta, tb) for s, a, b, ta, tb in heap), overflow


def build(source: Source, out_dir: str, meta: Iterable[str] = (), exclude: Iterable[str] = (),
          num_pairs: int = NUM_PAIRS, seed: int = 0, num_shards: int = 4, physics_only: bool = True,
          settings: dict | None = None, quiet: bool = False, overwrite: bool = False) -> dict:
  start = time.time()
  meta = list(meta)
  excluded = papers.read_exclude(exclude)
  skipped = Skipped()
  meta_titles: dict[str, str] = {}
  meta_physics: dict[str, bool] = {}
  for p in papers.iter_papers(meta, skipped, quiet):
    if p.title:
      meta_titles[p.id] = p.title
    meta_physics[p.id] = p.klass is not None
  counts = {"edges_read": 0, "self_citations": 0, "excluded": 0, "citing_not_physics": 0, "duplicates": 0,
            "no_title": 0, "same_title": 0}
  limit = num_pairs + num_pairs // 20 + 100   # The reserve: edges whose title turns out to be unknown.
  chosen, overflow = select_edges(source, limit, seed, excluded, meta_titles, meta_physics, physics_only, skipped,
                                  counts)

  missing = {i for _, a, b, ta, tb in chosen for i, t in ((a, ta), (b, tb)) if not t}
  found = source.titles(missing) if missing else {}
  out, notes = [], []
  for _, a, b, ta, tb in chosen:
    ta, tb = ta or found.get(a), tb or found.get(b)
    if not ta or not tb:
      counts["no_title"] += 1
      skipped.add(source.name, None, "no title", doc_id=b if ta else a, detail=f"{a} -> {b}")
      continue
    if ta.lower() == tb.lower():
      counts["same_title"] += 1
      continue
    out.append({"anchor": ta, "positive": tb, "source": KIND, "anchor_id": a, "positive_id": b})
    if len(out) == num_pairs:
      break
  counts["pairs"] = len(out)
  if len(out) < num_pairs:
    notes.append(f"{len(out):,} pairs written, fewer than the {num_pairs:,} asked: "
                 + ("the 5% reserve for untitled edges ran out; rerun with a larger --num-pairs" if overflow
                    else "capped by the data"))
  sources = {"source": source.name, "meta": meta, "exclude": list(exclude)}
  report = {"settings": settings or {}, "counts": counts, "notes": notes, "skipped": skipped.to_json()}
  m = writer.write_pairs(out_dir, iter(out), num_shards,
                         lambda split: writer.manifest(KIND, split, seed, counts, sources),
                         report, len(out), quiet, STAGE, overwrite)
  for note in notes:
    print(f"note: {note}")
  print(f"citation ({source.name}): {counts['edges_read']:,} edges read -> {len(out):,} pairs; "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k not in ("edges_read", "pairs")))
  print(skipped.summary(5))
  print(f"{time.time() - start:.1f}s -> {out_dir}")
  return m
