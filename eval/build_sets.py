"""Build the PhysBERT evaluation sets from arXiv metadata and a citation graph.

    python -m eval.build_sets --metadata arxiv-metadata.jsonl.gz --citations citations/ --out evalsets/

Sizes default to the paper's (Sec. 3.2): 1,000 abstracts x each merged class for clustering, 50k citation pairs,
50k retrieval queries, 1,000 evaluation abstracts and 10,000 training pairs per subdomain subcategory. On a small
snapshot each size is capped at what the data holds; the printed summary and manifest.json say where.
The file layout is eval/sets.py's.

Determinism: every set draws from its own numpy Generator seeded with (--seed, set number), over candidates
sorted by id, so the same inputs and flags give byte-identical files, and changing one set's size does not
reshuffle the others.

Disjointness: ids.txt lists every paper of every evaluation file (clustering, citation, retrieval, subdomain
evaluation); training must exclude them. A paper may sit in several evaluation sets (it is one id in ids.txt).
The subdomain training pairs are drawn only from papers outside ids.txt, and their ids go to train/ids.txt: they
are meant to be trained on, so they must not be evaluated on.

Retrieval is a proxy until synthetic questions exist: query = a paper's title, corpus = the abstracts of all query
papers, relevant = the query paper's own abstract.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import time

import numpy as np

from data_prep import taxonomy
from eval import citations, sets

# The paper's sizes (Sec. 3.2 and 4).
PAPER_SIZES = {"clustering_per_class": 1000, "citation_pairs": 50_000, "retrieval_queries": 50_000,
               "subdomain_eval_per_class": 1000, "subdomain_train_pairs_per_class": 10_000}
# Withdrawal notices ("This paper has been withdrawn by the author...") are not abstracts. They are short.
_WITHDRAWN = re.compile(r"\b(withdrawn|withdraw)\b", re.IGNORECASE)
_SET_SEEDS = {"clustering": 1, "citation": 2, "retrieval": 3, "subdomain_eval": 4, "subdomain_train": 5}


def clean(text: str) -> str:
  """Collapse the snapshot's line wrapping; LaTeX is kept as it is (the model sees it in training too)."""
  return " ".join(text.split())


def usable(title: str, abstract: str) -> bool:
  return bool(title) and len(abstract) >= 20 and not (len(abstract) < 400 and _WITHDRAWN.search(abstract))


def _records(path: str):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      yield json.loads(line)


def scan_metadata(path: str) -> dict[str, str]:
  """Pass 1: id -> normalised primary category, for usable physics papers. Texts are not kept (2M+ on arXiv)."""
  primaries = {}
  for rec in _records(path):
    try:
      code = taxonomy.primary(rec.get("categories") or "")
    except ValueError:
      continue
    if taxonomy.is_physics(code) and usable(clean(rec.get("title") or ""), clean(rec.get("abstract") or "")):
      primaries[rec["id"]] = code
  return primaries


def read_texts(path: str, ids: set[str]) -> dict[str, tuple[str, str]]:
  """Pass 2: (title, abstract) of the selected ids only."""
  texts = {}
  for rec in _records(path):
    if rec["id"] in ids:
      texts[rec["id"]] = (clean(rec["title"]), clean(rec["abstract"]))
  return texts


def _draw(candidates: list[str], n: int, rng: np.random.Generator) -> list[str]:
  candidates = sorted(candidates)
  if n >= len(candidates):
    return [candidates[i] for i in rng.permutation(len(candidates))]
  return [candidates[i] for i in rng.choice(len(candidates), n, replace=False)]


def _rng(seed: int, name: str) -> np.random.Generator:
  return np.random.default_rng([seed, _SET_SEEDS[name]])


def build(metadata: str, citations_path: str | None, out: str, seed: int, min_class_papers: int,
          sizes: dict[str, int], log=print) -> dict:
  t0 = time.time()
  notes: list[str] = []
  primaries = scan_metadata(metadata)
  log(f"{metadata}: {len(primaries):,} usable physics papers ({time.time() - t0:.0f}s)")
  by_class: dict[str, list[str]] = {}
  by_sub: dict[str, list[str]] = {}
  for pid, code in primaries.items():
    by_class.setdefault(taxonomy.merged_class(code), []).append(pid)
    if taxonomy.subdomain(code):
      by_sub.setdefault(code, []).append(pid)

  # Clustering: merged classes with enough papers (the paper's threshold is on the full arXiv).
  classes = sorted(c for c, ids in by_class.items() if len(ids) >= min_class_papers)
  log(f"clustering classes with >= {min_class_papers:,} papers: {len(classes)} "
      f"(paper: 21 on the full arXiv): " + ", ".join(f"{c} {len(by_class[c]):,}" for c in classes))
  if not classes:
    raise ValueError(f"{metadata}: no merged class has >= {min_class_papers:,} papers; lower --min-class-papers")
  rng = _rng(seed, "clustering")
  clustering = {c: _draw(by_class[c], sizes["clustering_per_class"], rng) for c in classes}
  for c, ids in clustering.items():
    if len(ids) < sizes["clustering_per_class"]:
      notes.append(f"clustering: {c} has {len(ids)} papers < {sizes['clustering_per_class']} requested")

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
    graph = citations.read_graph(citations_path)
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

  # Write.
  os.makedirs(os.path.join(out, sets.TRAIN_DIR), exist_ok=True)
  files = {}

  def write(name, rows):
    path = os.path.join(out, name)
    n = sets.write_rows(path, rows)
    files[name] = {"rows": n, "sha256": sets.sha256_file(path)}

  write(sets.CLUSTERING, ({"id": p, "text": texts[p][1], "label": c} for c in classes for p in clustering[c]))
  if citation_rows:
    write(sets.CITATION, citation_rows)
  elif os.path.exists(os.path.join(out, sets.CITATION)):
    os.remove(os.path.join(out, sets.CITATION))  # a stale set from an earlier build must not be evaluated
  write(sets.RETRIEVAL_QUERIES, ({"id": p, "text": texts[p][0], "relevant": [p]} for p in retrieval))
  write(sets.RETRIEVAL_CORPUS, ({"id": p, "text": texts[p][1]} for p in sorted(retrieval)))
  for domain in sets.SUBDOMAINS:
    codes = taxonomy.SUBDOMAINS[domain]
    write(sets.subdomain_file(domain),
          ({"id": p, "text": texts[p][1], "label": c} for c in codes for p in sub_eval[c]))
    write(os.path.join(sets.TRAIN_DIR, sets.subdomain_file(domain)),
          ({"id": p, "anchor": texts[p][0], "positive": texts[p][1], "label": c} for c in codes for p in sub_train[c]))
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
          "citation": citation_stats,
          "retrieval_queries": len(retrieval),
          "subdomain_eval": {c: len(v) for c, v in sub_eval.items()},
          "subdomain_train": {c: len(v) for c, v in sub_train.items()},
          "eval_ids": len(eval_ids), "train_ids": len(train_ids),
      },
      "classes_available": {c: len(v) for c, v in sorted(by_class.items())},
      "capped": notes,
      "sources": {"metadata": {"path": os.path.abspath(metadata), "sha256": sets.sha256_file(metadata)},
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
  p.add_argument("--metadata", required=True, help="arXiv metadata snapshot, gzip JSON lines (Kaggle schema)")
  p.add_argument("--citations", help="citation files: a directory of pscp-*.csv / *.jsonl[.gz], or one file")
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--min-class-papers", type=int, default=taxonomy.MIN_CLASS_PAPERS,
                 help="keep merged classes with at least this many physics papers in --metadata")
  for key, value in PAPER_SIZES.items():
    p.add_argument("--" + key.replace("_", "-"), type=int, default=value, help=f"paper: {value:,}")
  args = p.parse_args(argv)
  sizes = {k: getattr(args, k) for k in PAPER_SIZES}
  build(args.metadata, args.citations, args.out, args.seed, args.min_class_papers, sizes)


if __name__ == "__main__":
  main()
