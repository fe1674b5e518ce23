"""Build the PhysBERT evaluation sets from arXiv metadata and a citation graph.

    python -m eval.build_sets --metadata arxiv-metadata.jsonl.gz --citations citations/ --out evalsets/

Sizes default to the paper's (Sec. 3.2): 1,000 abstracts x each merged class for clustering, 50k citation pairs,
50k retrieval queries, 1,000 evaluation abstracts and 10,000 training pairs per subdomain subcategory. On a small
snapshot each size is capped at what the data holds; the printed summary and manifest.json say where.
The file layout is physbert_jax/evaluation/sets.py's.

Determinism: every set draws from its own numpy Generator seeded with (--seed, set number), over candidates
sorted by id, so the same inputs and flags give byte-identical files, and changing one set's size does not
reshuffle the others.

Disjointness: ids.txt lists every paper of every evaluation file (clustering, citation, retrieval, subdomain
evaluation); training must exclude them. A paper may sit in several evaluation sets (it is one id in ids.txt).
The subdomain training pairs are drawn only from papers outside ids.txt, and their ids go to train/ids.txt: they
are meant to be trained on, so they must not be evaluated on.

Retrieval is a proxy until synthetic questions exist: query = a paper's title, corpus = the abstracts of all query
papers, relevant = the query paper's own abstract.

Sizes: the paper's (1,000 abstracts a class, 50,000 citation pairs and queries, ...) on its ~1.2M-paper corpus,
scaled to the corpus read unless given, as the pair builders scale theirs (at least 20 abstracts a class).

Clustering classes: by default every merged class with at least --clustering-per-class usable papers, i.e. every
class the corpus supports, not only the classes the category pairs teach (those need the paper's 5,000 papers,
scaled to the corpus). A set of the taught classes only cannot see a run that forgets the others: on the sample it
picked a checkpoint that made MiniLM worse on held-out physics (docs/LOG.md, 2026-12-01). `--min-class-papers
5000` builds the paper's 21-class layout on the full arXiv. `--clustering-years 2015-2019` draws each class's
abstracts from those years first (other years fill a class that has too few), so clustering also measures papers
from years the training pairs barely hold.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from data_prep import stage, taxonomy
from data_prep.corpus_io import Skipped
from data_prep.pairs import papers, writer
from data_prep.pairs.papers import read_exclude
from eval import citations
from physbert_jax import outputs, records
from physbert_jax.evaluation import sets

# The paper's sizes (Sec. 3.2 and 4).
PAPER_SIZES = {"clustering_per_class": 1000, "citation_pairs": 50_000, "retrieval_queries": 50_000,
               "subdomain_eval_per_class": 1000, "subdomain_train_pairs_per_class": 10_000}
# Sizes not given are the paper's scaled to the corpus read (as the pair builders scale theirs: data_prep.taxonomy.
# scaled), never above the paper's and never below these: a clustering class needs >= 10 texts for 10 stratified
# folds, 20 keeps two a fold.
MIN_SIZES = {"clustering_per_class": 20, "subdomain_eval_per_class": 20}
STAGE = "eval.build_sets"   # the output marker (physbert_jax.outputs)
_SET_SEEDS = {"clustering": 1, "citation": 2, "retrieval": 3, "subdomain_eval": 4, "subdomain_train": 5}


def _records(path: str, skipped: Skipped | None = None):
  """Snapshot records from what data_prep.arxiv_metadata writes (a folder of papers-*.jsonl.gz) or any snapshot
  file (.json/.jsonl, plain or gzip), with the data_prep readers' tolerance: a damaged line or a truncated gzip is
  counted in `skipped` with file and line, never fatal. Records without an "id" are skipped too."""
  skipped = Skipped() if skipped is None else skipped
  for file in papers.meta_files([path]):
    name = os.path.basename(file)
    for lineno, rec in stage.iter_json_lines(file, skipped, name):
      if not isinstance(rec.get("id"), str) or not rec["id"].strip():
        skipped.add(name, lineno, "missing id")
        continue
      yield rec


def v1_year(rec: dict) -> int | None:
  """The year of a snapshot record's first version ("Sat, 31 Mar 2007 00:00:00 GMT"), or None."""
  try:
    return int(rec["versions"][0]["created"].split()[3])
  except (KeyError, IndexError, TypeError, ValueError, AttributeError):
    return None


def scan_metadata(path: str, years: dict[str, int | None] | None = None,
                  skipped: Skipped | None = None) -> dict[str, str]:
  """Pass 1: id -> normalised primary category, for usable physics papers. Texts are not kept (2M+ on arXiv).
  `years`, when given, receives id -> v1 year; damaged lines go to `skipped`."""
  primaries = {}
  for rec in _records(path, skipped):
    try:
      code = taxonomy.primary(rec.get("categories") or "")
    except ValueError:
      continue
    title, abstract = papers.clean(rec.get("title") or ""), papers.clean(rec.get("abstract") or "")
    if taxonomy.is_physics(code) and title and not papers.unusable(abstract):   # data_prep's rule: one for both
      primaries[rec["id"]] = code
      if years is not None:
        years[rec["id"]] = v1_year(rec)
  return primaries


def read_texts(path: str, ids: set[str]) -> dict[str, tuple[str, str]]:
  """Pass 2: (title, abstract) of the selected ids only."""
  texts = {}
  for rec in _records(path, Skipped()):     # the damage was counted in pass 1
    if rec["id"] in ids:
      texts[rec["id"]] = (papers.clean(rec["title"]), papers.clean(rec["abstract"]))
  return texts


def _draw(candidates: list[str], n: int, rng: np.random.Generator) -> list[str]:
  candidates = sorted(candidates)
  if n >= len(candidates):
    return [candidates[i] for i in rng.permutation(len(candidates))]
  return [candidates[i] for i in rng.choice(len(candidates), n, replace=False)]


def _draw_preferring(candidates: list[str], preferred: set[str], n: int, rng: np.random.Generator) -> list[str]:
  """n of candidates, those in `preferred` first; the rest drawn from the others only when too few are preferred."""
  first = _draw([c for c in candidates if c in preferred], n, rng)
  if len(first) >= n:
    return first
  return first + _draw([c for c in candidates if c not in preferred], n - len(first), rng)


def parse_years(spec: str | None) -> tuple[int, int] | None:
  """"2015-2019" or "2016" -> (first, last) inclusive; None or "" -> None."""
  if not spec:
    return None
  first, _, last = spec.partition("-")
  try:
    lo, hi = int(first), int(last or first)
  except ValueError:
    raise ValueError(f"--clustering-years {spec!r}: expected YEAR or FIRST-LAST, e.g. 2015-2019") from None
  if lo > hi:
    raise ValueError(f"--clustering-years {spec!r}: the first year is after the last")
  return lo, hi


def _rng(seed: int, name: str) -> np.random.Generator:
  return np.random.default_rng([seed, _SET_SEEDS[name]])


def resolve_sizes(sizes: dict[str, int | None], physics_papers: int, log=print) -> dict[str, int]:
  """Every size in PAPER_SIZES: the one given, else the paper's scaled to `physics_papers` (see MIN_SIZES)."""
  out = {k: sizes.get(k) or max(MIN_SIZES.get(k, 1), min(v, taxonomy.scaled(v, physics_papers)))
         for k, v in PAPER_SIZES.items()}
  chosen = [k for k in PAPER_SIZES if not sizes.get(k)]
  if chosen:
    log(f"sizes scaled to {physics_papers:,} papers (the paper's for ~1.2M; give them to override): "
        + ", ".join(f"{k} {out[k]:,} (paper {PAPER_SIZES[k]:,})" for k in chosen))
  return out


def build(metadata: str, citations_path: str | None, out: str, seed: int, min_class_papers: int | None,
          sizes: dict[str, int], log=print, clustering_years: tuple[int, int] | None = None,
          exclude: set[str] = frozenset(), overwrite: bool = False) -> dict:
  t0 = time.time()
  outputs.check_out(out, STAGE, overwrite)   # before minutes of reading, not after
  notes: list[str] = []
  years: dict[str, int | None] = {}
  skipped = Skipped()
  primaries = scan_metadata(metadata, years, skipped)
  if skipped.count:
    log(skipped.summary(5))
  if not primaries:
    raise ValueError(f"--metadata {metadata}: no usable physics paper in it (records need id, categories with a "
                     f"physics primary, title and abstract); {skipped.summary(3)}")
  if exclude:
    primaries = {p: c for p, c in primaries.items() if p not in exclude}
    log(f"--exclude: {len(exclude):,} ids kept out of every set")
  log(f"{metadata}: {len(primaries):,} usable physics papers ({time.time() - t0:.0f}s)")
  sizes = resolve_sizes(sizes, len(primaries), log)
  by_class: dict[str, list[str]] = {}
  by_sub: dict[str, list[str]] = {}
  for pid, code in primaries.items():
    by_class.setdefault(taxonomy.merged_class(code), []).append(pid)
    if taxonomy.subdomain(code):
      by_sub.setdefault(code, []).append(pid)

  # Clustering: every merged class the corpus supports at the requested size (the paper's 5,000-paper threshold is
  # for the full arXiv; pass it to get the paper's 21 classes there).
  if min_class_papers is None:
    min_class_papers = sizes["clustering_per_class"]
  classes = sorted(c for c, ids in by_class.items() if len(ids) >= min_class_papers)
  log(f"clustering classes with >= {min_class_papers:,} papers: {len(classes)} "
      f"(paper: 21 with >= 5,000 on the full arXiv): " + ", ".join(f"{c} {len(by_class[c]):,}" for c in classes))
  if not classes:
    raise ValueError(f"{metadata}: no merged class has >= {min_class_papers:,} papers; lower --min-class-papers")
  rng = _rng(seed, "clustering")
  preferred = ({p for p, y in years.items() if y is not None and clustering_years[0] <= y <= clustering_years[1]}
               if clustering_years else set())
  clustering = {c: _draw_preferring(by_class[c], preferred, sizes["clustering_per_class"], rng) for c in classes}
  clustering_in_years = {c: sum(p in preferred for p in ids) for c, ids in clustering.items()}
  for c, ids in clustering.items():
    if len(ids) < sizes["clustering_per_class"]:
      notes.append(f"clustering: {c} has {len(ids)} papers < {sizes['clustering_per_class']} requested")
    if clustering_years and clustering_in_years[c] < len(ids):
      notes.append(f"clustering: {c} has {clustering_in_years[c]} papers from {clustering_years[0]}-"
                   f"{clustering_years[1]}; {len(ids) - clustering_in_years[c]} come from other years")

  # Retrieval (proxy): titles -> abstracts of the same papers.
  retrieval = _draw(list(primaries), sizes["retrieval_queries"], _rng(seed, "retrieval"))
  if len(retrieval) < sizes["retrieval_queries"]:
    notes.append(f"retrieval: {len(retrieval)} queries < {sizes['retrieval_queries']} requested")

  # Subdomain evaluation first (evaluation quality decides comparisons); training gets what is left.
  rng = _rng(seed, "subdomain_eval")
  sub_eval = {}
  for domain in sets.SUBDOMAINS:
    for code in taxonomy.SUBDOMAINS[domain]:
      sub_eval[code] = _draw(by_sub.get(code, []), sizes["subdomain_eval_per_class"], rng)
      if len(sub_eval[code]) < sizes["subdomain_eval_per_class"]:
        notes.append(f"subdomain eval: {code} has {len(sub_eval[code])} < {sizes['subdomain_eval_per_class']}")

  # Citations.
  citation_rows, citation_stats, citation_sources = [], {}, []
  if citations_path:
    graph = citations.read_graph(citations_path, skipped)
    citation_sources = graph.files
    citation_rows, citation_stats = citations.sample_pairs(graph, sizes["citation_pairs"], _rng(seed, "citation"))
    log(f"{citations_path}: {citation_stats['papers']:,} papers with titles, "
        f"{citation_stats['positive_pairs_available']:,} citing->cited pairs with both titles")
    if len(citation_rows) < sizes["citation_pairs"]:
      notes.append(f"citation: {len(citation_rows)} pairs < {sizes['citation_pairs']} requested")
  else:
    notes.append("citation: no --citations given; the citation set is not built")

  eval_ids = set().union(*clustering.values(), retrieval, *sub_eval.values(),
                         *({r["id1"], r["id2"]} for r in citation_rows))
  rng = _rng(seed, "subdomain_train")
  sub_train = {}
  for code in sub_eval:
    free = [p for p in by_sub.get(code, []) if p not in eval_ids]
    sub_train[code] = _draw(free, sizes["subdomain_train_pairs_per_class"], rng)
    if len(sub_train[code]) < sizes["subdomain_train_pairs_per_class"]:
      notes.append(f"subdomain train: {code} has {len(sub_train[code])} pairs "
                   f"< {sizes['subdomain_train_pairs_per_class']}")

  needed = set().union(*clustering.values(), retrieval, *sub_eval.values(), *sub_train.values())
  texts = read_texts(metadata, needed)

  # Write: into a staging folder published whole (physbert_jax.outputs), so a set from an earlier build is
  # never mixed with this one (a citation set without --citations, say).
  final_out = out
  with outputs.staged(final_out, STAGE, overwrite) as out:
    os.makedirs(os.path.join(out, sets.TRAIN_DIR), exist_ok=True)
    files = {}

    def write(name, rows):
      path = os.path.join(out, name)
      n = sets.write_rows(path, rows)
      files[name] = {"rows": n, "sha256": sets.sha256_file(path)}

    write(sets.CLUSTERING, ({"id": p, "text": texts[p][1], "label": c} for c in classes for p in clustering[c]))
    if citation_rows:
      write(sets.CITATION, citation_rows)
    write(sets.RETRIEVAL_QUERIES, ({"id": p, "text": texts[p][0], "relevant": [p]} for p in retrieval))
    write(sets.RETRIEVAL_CORPUS, ({"id": p, "text": texts[p][1]} for p in sorted(retrieval)))
    for domain in sets.SUBDOMAINS:
      codes = taxonomy.SUBDOMAINS[domain]
      write(sets.subdomain_file(domain),
            ({"id": p, "text": texts[p][1], "label": c} for c in codes for p in sub_eval[c]))
      # Training pairs as a pair set (title -> abstract), what configs/subdomain.py trains on as it is.
      pairs_dir = os.path.join(out, sets.TRAIN_DIR, sets.subdomain_pairs(domain))
      shards = writer.ShardWriter(pairs_dir)
      for p in (p for c in codes for p in sub_train[c]):
        shards.write({"anchor": texts[p][0], "positive": texts[p][1], "source": f"subdomain-{domain}",
                      "anchor_id": p, "positive_id": p})
      split = shards.close()
      outputs.write_json(os.path.join(pairs_dir, records.MANIFEST), writer.manifest(
          f"subdomain-{domain}", split, seed=seed, counts={"pairs": split["records"]}, sources=[metadata]),
          sort_keys=True)
      for shard in split["shards"]:
        name = os.path.join(sets.TRAIN_DIR, sets.subdomain_pairs(domain), shard["path"])
        files[name] = {"rows": shard["records"], "sha256": sets.sha256_file(os.path.join(out, name))}
    with open(os.path.join(out, sets.IDS), "w") as f:
      f.writelines(p + "\n" for p in sorted(eval_ids))
    train_ids = set().union(*sub_train.values())
    assert not train_ids & eval_ids
    with open(os.path.join(out, sets.TRAIN_DIR, sets.IDS), "w") as f:
      f.writelines(p + "\n" for p in sorted(train_ids))

    manifest = {
        "created_by": "python -m eval.build_sets",
        "seed": seed,
        "min_class_papers": min_class_papers,
        "requested": sizes,
        "built": {
            "clustering": {c: len(clustering[c]) for c in classes},
            "clustering_years": list(clustering_years) if clustering_years else None,
            "clustering_in_years": clustering_in_years if clustering_years else None,
            "citation": citation_stats,
            "retrieval_queries": len(retrieval),
            "subdomain_eval": {c: len(v) for c, v in sub_eval.items()},
            "subdomain_train": {c: len(v) for c, v in sub_train.items()},
            "eval_ids": len(eval_ids), "train_ids": len(train_ids),
        },
        "classes_available": {c: len(v) for c, v in sorted(by_class.items())},
        "capped": notes,
        "skipped": skipped.to_json(),
        "sources": {"metadata": [{"path": os.path.abspath(p), "sha256": sets.sha256_file(p)}
                                 for p in papers.meta_files([metadata])],
                    "citations": [{"path": os.path.abspath(p), "sha256": sets.sha256_file(p)}
                                  for p in citation_sources]},
        "files": files,
        "notes": {"retrieval": "proxy: query = title, corpus = abstracts of the query papers, relevant = own abstract "
                               "(the paper uses 50k synthetic questions -> source passages)",
                  "citation": "positives: citing title + cited title (Paperscape edges with both titles); negatives: "
                              "same citing/cited papers re-paired, neither citing the other",
                  "ids": "ids.txt = every evaluation paper (exclude from training); train/ids.txt = subdomain "
                         "training pairs, disjoint from ids.txt"},
    }
    with open(os.path.join(out, sets.MANIFEST), "w") as f:
      json.dump(manifest, f, indent=2)
  out = final_out
  log(summary(manifest))
  return manifest


def summary(manifest: dict) -> str:
  b, r = manifest["built"], manifest["requested"]
  lines = [f"seed {manifest['seed']}, classes with >= {manifest['min_class_papers']:,} papers: {len(b['clustering'])}",
           f"  clustering      {sum(b['clustering'].values()):>7,} abstracts ({r['clustering_per_class']:,} per class "
           f"requested)",
           f"  citation        {b['citation'].get('positives', 0) + b['citation'].get('negatives', 0):>7,} pairs "
           f"({r['citation_pairs']:,} requested)",
           f"  retrieval       {b['retrieval_queries']:>7,} queries ({r['retrieval_queries']:,} requested)",
           f"  subdomain eval  {sum(b['subdomain_eval'].values()):>7,} abstracts "
           f"({r['subdomain_eval_per_class']:,} per subcategory requested)",
           f"  subdomain train {sum(b['subdomain_train'].values()):>7,} pairs "
           f"({r['subdomain_train_pairs_per_class']:,} per subcategory requested)",
           f"  ids.txt {b['eval_ids']:,} evaluation ids; train/ids.txt {b['train_ids']:,}"]
  if manifest["capped"]:
    lines.append(f"capped by the data ({len(manifest['capped'])}):")
    lines += ["  " + n for n in manifest["capped"]]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--metadata", required=True,
                 help="arXiv metadata: the snapshot file (Kaggle schema; .json/.jsonl, plain or gzip) or the folder "
                      "data_prep.arxiv_metadata writes")
  p.add_argument("--citations", help="citation files: a directory of pscp-*.csv / *.jsonl[.gz], or one file")
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--min-class-papers", type=int, default=None,
                 help="clustering keeps merged classes with at least this many usable physics papers (default: "
                      "--clustering-per-class, every class the corpus supports; 5000: the paper's 21 classes)")
  p.add_argument("--exclude", nargs="*", default=[],
                 help="files of arXiv ids to keep out of every set (e.g. another build's ids.txt, for a test set "
                      "disjoint from the validation set)")
  p.add_argument("--clustering-years", default=None, metavar="FIRST-LAST",
                 help="draw clustering abstracts from these v1 years first (e.g. 2015-2019)")
  for key, value in PAPER_SIZES.items():
    p.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                   help=f"default: the paper's {value:,}, scaled to the corpus")
  p.add_argument("--overwrite", action="store_true", help="replace an earlier build in --out")
  args = p.parse_args(argv)
  sizes = {k: getattr(args, k) for k in PAPER_SIZES}
  bad = [f"--{k.replace('_', '-')} {v}" for k, v in sizes.items() if v is not None and v < 1]
  try:
    if bad:
      raise ValueError(f"{', '.join(bad)}: sizes must be >= 1")
    build(args.metadata, args.citations, args.out, args.seed, args.min_class_papers, sizes,
          clustering_years=parse_years(args.clustering_years), exclude=read_exclude(args.exclude),
          overwrite=args.overwrite)
  except (ValueError, OSError) as e:   # OutputError, DiskFullError, missing or damaged inputs
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
