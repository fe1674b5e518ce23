"""Category pairs: two abstracts whose papers share PhysBERT's merged class, balanced across classes.

    python -m data_prep.pairs category --meta data/meta --exclude evalsets/ids.txt --out data/pairs/category

Paper: 2M pairs over the 21 merged classes that have >= 5,000 papers (astro-ph.*, cond-mat.*, hep-* merged; every
other physics category its own class), i.e. ~95k pairs a class. Both numbers are absolute counts for the paper's
~1.2M-paper corpus: by default they scale with the physics papers read (taxonomy.scaled: 487 papers a class and
~195k pairs on the 116,738-paper sample, 30 of its 35 classes), so a smaller corpus still teaches every class it
can support; `--min-class-papers 5000 --num-pairs 2000000` is the paper's setting. With the absolute threshold the
sample kept 8 classes, and the other 27 were pushed toward those 8 (docs/LOG.md, 2026-12-01). Classes are counted
over all physics papers read (the labelling of data_prep.arxiv_metadata's stats.json), before exclusion; the pairs
are then drawn from the papers that are not excluded and have a usable abstract. Each pair carries its class
(`label`), with which the loss can keep same-class texts out of each other's negatives.

Sampling, per class, from random.Random(f"{seed}/{class}"): shuffle the class's papers (sorted by id first, so
input order does not matter) and pair neighbours (0,1), (2,3), ...; reshuffle and repeat until the class's quota
is met, skipping pairs already drawn. Every round uses every paper once (less an odd one out and repeats), so
papers are used about equally often: a 5,000-paper class gives each paper ~38 pairs at the paper's size. A quota
above a quarter of a class's n(n-1)/2 distinct pairs is drawn directly from the pair index instead; one above
n(n-1)/2 is capped, with a note. Finally all pairs are shuffled together (seeded) and dealt round robin over the
shards.
Full arXiv: ~1.3M abstracts in memory (~1.5 GB); 2M pairs -> ~4 GB of shards (each pair stores two abstracts).
"""

from __future__ import annotations

import collections
import math
import random
import time
from typing import Iterable

from data_prep import taxonomy
from data_prep.corpus_io import Skipped
from data_prep.pairs import papers, writer

KIND = "category"
STAGE = "pairs category"   # the output marker (physbert_jax.outputs)
NUM_PAIRS = 2_000_000          # paper: 2M category pairs


def quotas(classes: list[str], num_pairs: int) -> dict[str, int]:
  """num_pairs split as evenly as the integers allow (the first classes, in name order, get the remainder)."""
  base, extra = divmod(num_pairs, len(classes))
  return {c: base + (i < extra) for i, c in enumerate(sorted(classes))}


def _pair_from_index(t: int, n: int) -> tuple[int, int]:
  """The t-th pair (i < j) of range(n) in lexicographic order."""
  i = n - 2 - int(math.sqrt(-8 * t + 4 * n * (n - 1) - 7) / 2.0 - 0.5)
  j = t + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2
  return i, j


def sample_pairs(n: int, quota: int, rng: random.Random) -> list[tuple[int, int]]:
  """`quota` distinct unordered pairs of range(n) (quota <= n(n-1)/2), every index used about equally often."""
  total = n * (n - 1) // 2
  if quota > total:
    raise ValueError(f"{quota} pairs asked of {n} items, which have {total}")
  if quota * 4 > total:
    # Dense: rounds of neighbour pairs would keep hitting pairs already drawn.
    return [_pair_from_index(t, n) for t in rng.sample(range(total), quota)]
  order, seen, out = list(range(n)), set(), []
  while len(out) < quota:
    rng.shuffle(order)
    for k in range(0, n - 1, 2):
      a, b = order[k], order[k + 1]
      key = (a, b) if a < b else (b, a)
      if key not in seen:
        seen.add(key)
        out.append((a, b))
        if len(out) == quota:
          break
  return out


def build(meta: Iterable[str], out_dir: str, exclude: Iterable[str] = (), num_pairs: int | None = None,
          min_class_papers: int | None = None, min_abstract_chars: int = papers.MIN_ABSTRACT_CHARS,
          seed: int = 0, num_shards: int = 8, settings: dict | None = None, quiet: bool = False,
          overwrite: bool = False) -> dict:
  start = time.time()
  meta = list(meta)
  excluded = papers.read_exclude(exclude)
  skipped = Skipped()
  class_papers: collections.Counter[str] = collections.Counter()
  pools: dict[str, list[papers.Paper]] = collections.defaultdict(list)
  counts = {"papers_read": 0, "non_physics": 0, "excluded": 0}
  for p in papers.iter_papers(meta, skipped, quiet):
    counts["papers_read"] += 1
    if p.klass is None:
      counts["non_physics"] += 1
      continue
    class_papers[p.klass] += 1
    if p.id in excluded:
      counts["excluded"] += 1
      continue
    why = papers.unusable(p.abstract, min_abstract_chars)
    if why:
      skipped.add("meta", None, why, doc_id=p.id)
      continue
    pools[p.klass].append(p)

  physics = sum(class_papers.values())
  notes = []
  if min_class_papers is None:
    min_class_papers = taxonomy.scaled(taxonomy.MIN_CLASS_PAPERS, physics)
    notes.append(f"--min-class-papers {min_class_papers:,}: the paper's {taxonomy.MIN_CLASS_PAPERS:,} scaled to "
                 f"{physics:,} physics papers")
  if num_pairs is None:
    num_pairs = taxonomy.scaled(NUM_PAIRS, physics)
    notes.append(f"--num-pairs {num_pairs:,}: the paper's {NUM_PAIRS:,} scaled to {physics:,} physics papers")
  if num_pairs < 1 or min_class_papers < 1:
    raise ValueError(f"--num-pairs {num_pairs} / --min-class-papers {min_class_papers}: both must be >= 1")
  classes = sorted(c for c, n in class_papers.items() if n >= min_class_papers and len(pools[c]) >= 2)
  if not classes:
    raise ValueError(f"no class has {min_class_papers:,} papers in {meta} (largest: "
                     f"{class_papers.most_common(3)}); lower --min-class-papers")
  wanted = quotas(classes, num_pairs)
  drawn: list[tuple[papers.Paper, papers.Paper]] = []
  per_class = {}
  for c in classes:
    pool = sorted(pools[c], key=lambda p: p.id)
    cap = len(pool) * (len(pool) - 1) // 2
    if wanted[c] > cap:
      notes.append(f"class {c}: {len(pool):,} papers give only {cap:,} distinct pairs of the {wanted[c]:,} asked")
    idx = sample_pairs(len(pool), min(wanted[c], cap), random.Random(f"{seed}/{c}"))
    drawn += [(pool[i], pool[j]) for i, j in idx]
    per_class[c] = len(idx)
  random.Random(f"{seed}/order").shuffle(drawn)

  counts.update({"pairs": len(drawn), "classes": len(classes), "min_class_papers": min_class_papers,
                 "physics_papers": physics, "pairs_per_class": per_class,
                 "papers_per_class": {c: len(pools[c]) for c in classes},
                 "class_papers_all": dict(sorted(class_papers.items())),
                 "dropped_classes": {c: n for c, n in sorted(class_papers.items()) if c not in classes}})
  if len(drawn) < num_pairs:
    notes.insert(0, f"{len(drawn):,} pairs written, fewer than the {num_pairs:,} asked: capped by the data")
  report = {"settings": settings or {}, "counts": counts, "notes": notes, "skipped": skipped.to_json()}
  pairs = ({"anchor": a.abstract, "positive": b.abstract, "source": KIND, "anchor_id": a.id, "positive_id": b.id,
            "label": a.klass} for a, b in drawn)
  m = writer.write_pairs(out_dir, pairs, num_shards,
                         lambda split: writer.manifest(KIND, split, seed, counts, {"meta": meta}),
                         report, len(drawn), quiet, STAGE, overwrite)
  for note in notes:
    print(f"note: {note}")
  print(f"category: {len(drawn):,} pairs over {len(classes)} classes "
        f"({', '.join(f'{c} {n:,}' for c, n in per_class.items())}); {counts['excluded']:,} excluded papers")
  print(skipped.summary(5))
  print(f"{time.time() - start:.1f}s -> {out_dir}")
  return m
