"""A hyperparameter grid as ordinary runs: `config.grid = [("optimizer.lr", [1e-4, 2e-4]), ...]`.

Every combination trains in workdir/<key><value>-.../ with the same code path as a single run (so each is
resumable and exportable), then workdir/grid.json lists each run's best validation metrics and the winner. Used by
configs/subdomain.py, the paper's subdomain protocol.
"""

from __future__ import annotations

import copy
import itertools
import json
import os

import jax
import ml_collections

from physbert_jax import checkpointing, outputs


def _short(key: str, value) -> str:
  name = {"optimizer.lr": "lr", "data.global_batch_size": "bs"}.get(key, key.split(".")[-1])
  return f"{name}{value:g}" if isinstance(value, float) else f"{name}{value}"


def run_grid(config: ml_collections.ConfigDict, workdir: str, train_fn) -> dict:
  keys = [k for k, _ in config.grid]
  base = copy.deepcopy(config.to_dict())
  base["grid"] = []
  results = []
  for values in itertools.product(*(v for _, v in config.grid)):
    point = copy.deepcopy(base)
    for key, value in zip(keys, values):
      node = point
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
    name = "-".join(_short(k, v) for k, v in zip(keys, values))
    run_dir = os.path.join(workdir, name)
    summary = train_fn(ml_collections.ConfigDict(point), run_dir)
    best = json.load(open(os.path.join(run_dir, checkpointing.BEST))) if os.path.exists(
        os.path.join(run_dir, checkpointing.BEST)) else None
    results.append({"run": name, **dict(zip(keys, values)), "best": best, "final": summary})
  scored = [r for r in results if r["best"]]
  winner = max(scored, key=lambda r: r["best"]["metrics"][r["best"]["metric"]]) if scored else None
  report = {"grid": [[k, v] for k, v in config.grid], "runs": results, "best_run": winner and winner["run"],
            "best": winner and winner["best"]}
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "grid.json"), report)   # temp file + rename: never half written
    for r in results:
      metrics = r["best"]["metrics"] if r["best"] else {}
      print(f"{r['run']:<16} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if winner:
      print(f"best: {winner['run']} step {winner['best']['step']}: {winner['best']['metrics']}")
  return report
