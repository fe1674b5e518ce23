"""Cut the repository's arXiv metadata sample from the shared data kit (how data_prep/arxiv_sample/ was made).

  python data_prep/arxiv_sample/cut.py ../shared/data/arxiv/metadata-sample.jsonl.gz data_prep/arxiv_sample/metadata.jsonl.gz

Deterministic: the records are ranked by sha256 of their id; the first PHYSICS records with a physics primary
category and the first OTHER without one (so the physics filter has something to drop) are kept, in id order, as
the exact lines of the source (gzip with mtime 0: a rerun gives the same bytes).
"""

import gzip
import hashlib
import json
import sys

from data_prep import taxonomy

PHYSICS, OTHER = 18_000, 1_000


def main(src: str, dst: str) -> None:
  physics, other = [], []
  with gzip.open(src, "rt", encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      rank = hashlib.sha256(record["id"].encode()).hexdigest()
      (physics if taxonomy.is_physics(taxonomy.primary(record["categories"])) else other).append((rank, record["id"], line))
  keep = sorted(physics)[:PHYSICS] + sorted(other)[:OTHER]
  keep.sort(key=lambda t: t[1])
  with open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
    for _, _, line in keep:
      f.write(line.encode("utf-8"))
  print(f"{dst}: {len(keep)} records ({min(PHYSICS, len(physics))} physics of {len(physics)}, "
        f"{min(OTHER, len(other))} other of {len(other)})")


if __name__ == "__main__":
  main(*sys.argv[1:3])
