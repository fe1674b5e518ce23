"""Title -> abstract pairs: a short query and the passage it belongs to, from metadata alone.

    python -m data_prep.pairs title-abstract --meta data/meta --exclude evalsets/ids.txt --out data/pairs/title-abstract

The paper's third pair set is 2M synthetic (question, passage) pairs from LLaMA-3-70B: it teaches the model to put
a short query next to the longer text that answers it, which category pairs (abstract, abstract) and citation pairs
(title, title) do not. Without an LLM at hand, a paper's title and its own abstract are the same kind of pair (as
SPECTER-style and E5 training use them). Measured on the sample: category + citation pairs alone cost MiniLM
title -> abstract retrieval (97.75 -> 91.12 nDCG@10); with these pairs mixed in, it holds (docs/LOG.md,
2026-12-01). The QA set, when one is generated, takes this set's place.

Sampling: the papers with a usable title and abstract (papers.unusable, a title of at least MIN_TITLE_CHARS) that
are not excluded, sorted by id, then `num_pairs` of them drawn with random.Random(seed) (all of them when fewer).
The default size is the paper's 2M QA pairs scaled to the corpus (taxonomy.scaled).
"""

from __future__ import annotations

import random
import time
from typing import Iterable

from data_prep import taxonomy
from data_prep.corpus_io import Skipped
from data_prep.pairs import papers, writer

KIND = "title-abstract"
STAGE = "pairs title-abstract"   # the output marker (physbert_jax.outputs)
NUM_PAIRS = 2_000_000            # stands in for the paper's 2M synthetic QA pairs
MIN_TITLE_CHARS = 10


def build(meta: Iterable[str], out_dir: str, exclude: Iterable[str] = (), num_pairs: int | None = None,
          seed: int = 0, num_shards: int = 4, settings: dict | None = None, quiet: bool = False,
          overwrite: bool = False) -> dict:
  start = time.time()
  meta = list(meta)
  excluded = papers.read_exclude(exclude)
  skipped = Skipped()
  counts = {"papers_read": 0, "non_physics": 0, "excluded": 0}
  pool, physics = [], 0
  for p in papers.iter_papers(meta, skipped, quiet):
    counts["papers_read"] += 1
    if p.klass is None:
      counts["non_physics"] += 1
      continue
    physics += 1
    if p.id in excluded:
      counts["excluded"] += 1
      continue
    why = papers.unusable(p.abstract) or (
        "title too short" if len(p.title) < MIN_TITLE_CHARS else None)
    if why:
      skipped.add("meta", None, why, doc_id=p.id)
      continue
    pool.append(p)
  notes = []
  if num_pairs is None:
    num_pairs = taxonomy.scaled(NUM_PAIRS, physics)
    notes.append(f"--num-pairs {num_pairs:,}: the paper's {NUM_PAIRS:,} QA pairs scaled to {physics:,} physics papers")
  if not pool:
    raise ValueError(f"no usable physics paper with a title and an abstract in {meta}; {skipped.summary(3)}")
  pool.sort(key=lambda p: p.id)
  drawn = random.Random(f"{seed}/{KIND}").sample(pool, min(num_pairs, len(pool)))
  if len(drawn) < num_pairs:
    notes.insert(0, f"{len(drawn):,} pairs written, fewer than the {num_pairs:,} asked: capped by the data")
  counts.update({"pairs": len(drawn), "physics_papers": physics})
  report = {"settings": settings or {}, "counts": counts, "notes": notes, "skipped": skipped.to_json()}
  pairs = ({"anchor": p.title, "positive": p.abstract, "source": KIND, "anchor_id": p.id, "positive_id": p.id}
           for p in drawn)
  m = writer.write_pairs(out_dir, pairs, num_shards,
                         lambda split: writer.manifest(KIND, split, seed, counts, {"meta": meta}),
                         report, len(drawn), quiet, STAGE, overwrite)
  for note in notes:
    print(f"note: {note}")
  print(f"{KIND}: {len(drawn):,} pairs; {counts['excluded']:,} excluded papers")
  print(skipped.summary(5))
  print(f"{time.time() - start:.1f}s -> {out_dir}")
  return m
