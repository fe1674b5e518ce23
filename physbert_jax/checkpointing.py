"""Orbax checkpoints under workdir/checkpoints: the train state at a step.

Layout: workdir/checkpoints/<step>/state, the TrainState pytree (sharded arrays are written by every process in
parallel). The data position is the step itself (input_pipeline: batch s is a function of (seed, s)), so a
checkpoint restores on any number of processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as preservation

from physbert_jax import multihost, outputs

BEST = "best.json"


def make_manager(workdir: str, cfg: ml_collections.ConfigDict, best_metric: str | None = None
                 ) -> ocp.CheckpointManager:
  """Keeps the last cfg.keep checkpoints, every cfg.keep_every-th step, and (contrastive stage) the best one by
  `best_metric` among those saved with metrics."""
  policies = [preservation.LatestN(cfg.keep)]
  if cfg.keep_every:
    policies.append(preservation.EveryNSteps(cfg.keep_every))   # kept forever, for learning curves
  if best_metric:
    policies.append(preservation.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                                       keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation.AnyPreservationPolicy(policies),
      enable_async_checkpointing=cfg.async_save,   # training continues while the write happens
      create=True)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler()})


def check_space(workdir: str, state, step: int) -> None:
  """Stop before a save that cannot fit: Orbax writing into a full disk fails in its worker threads with a page of
  asyncio tracebacks and leaves a half-written step behind. The estimate is the state's bytes (all processes'
  shards: a shared file system holds them all) plus 10% and 16 MB for metadata."""
  need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) * 1.1 + 16e6
  free = shutil.disk_usage(workdir).free
  if free < need:
    raise ValueError(f"no space left for checkpoint {step} under {workdir}: it needs about {need / 1e6:,.0f} MB, "
                     f"{free / 1e6:,.0f} MB are free. Free space and rerun the same command: it resumes from the "
                     "last checkpoint")


def save(manager: ocp.CheckpointManager, step: int, state, force: bool = False, metrics: dict | None = None) -> bool:
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force,
                      metrics=metrics)


def record_best(workdir: str, step: int, metrics: dict, key: str) -> bool:
  """workdir/best.json names the best step so far by metrics[key] (higher is better); `convert --best` reads it."""
  if jax.process_index() != 0:             # one writer; every process has the same metrics (multihost.broadcast)
    return False
  path = os.path.join(workdir, BEST)
  if os.path.exists(path):
    with open(path) as f:
      best = json.load(f)
    if best["metric"] == key and best["metrics"][key] >= metrics[key]:
      return False
  outputs.write_json(path, {"step": int(step), "metric": key, "metrics": metrics})
  return True


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """Restore into the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct with .sharding)."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"]


def restore_latest_intact(manager: ocp.CheckpointManager, abstract_state, log=print):
  """(state, step) from the newest checkpoint that reads back whole; (None, None) when there is none.

  A checkpoint that cannot be read (a truncated array file, a damaged metadata JSON: a full disk or a copy
  cut short) is named, with the error, and the next older one is tried: resuming from an intact step 4 is better
  than a traceback about step 6. Nothing is deleted: a damaged step is moved to workdir/damaged-checkpoints/ (the
  run will save that step again), and the log says so. When no checkpoint reads, the error lists every one.
  """
  directory = manager.directory
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    error = None
    try:
      state = restore(manager, step, abstract_state)
    except Exception as e:   # Orbax and TensorStore raise many types for a damaged file
      error = e
    if not multihost.everywhere(error is None):   # a process whose shards read fine must fall back with the others
      detail = " ".join(str(error).split())[:400] if error else "its files failed to read on another process"
      broken = _unreadable_json(os.path.join(str(directory), str(step)))
      failures.append(f"{directory}/{step}: {broken or type(error).__name__}: {detail}")
      log(f"warning: checkpoint {directory}/{step} cannot be restored ({failures[-1]}); trying the one before it")
      continue
    if failures:
      aside = os.path.join(os.path.dirname(str(directory)), "damaged-checkpoints")
      os.makedirs(aside, exist_ok=True)
      newer = [s for s in manager.all_steps() if s > step]
      if jax.process_index() == 0:
        for s in newer:
          os.replace(os.path.join(str(directory), str(s)), os.path.join(aside, f"{s}-{int(time.time())}"))
      multihost.barrier("damaged checkpoints moved")
      manager.reload()
      log(f"warning: resumed from {directory}/{step}, the newest intact checkpoint; the damaged newer ones "
          f"({', '.join(map(str, newer))}) were moved to {aside}")
    return state, step
  if failures:
    raise ValueError("no checkpoint can be restored:\n  " + "\n  ".join(failures) +
                     f"\nmove {directory} aside to start over, or point --workdir elsewhere")
  return None, None


def _unreadable_json(step_dir: str) -> str | None:
  """The first JSON file under a checkpoint step that does not parse, as 'path is not valid JSON', or None."""
  for root, _, names in sorted(os.walk(step_dir)):
    for name in sorted(names):
      if name.endswith(".json") or name in ("_METADATA", "_CHECKPOINT_METADATA"):
        path = os.path.join(root, name)
        try:
          with open(path) as f:
            json.load(f)
        except (ValueError, OSError):
          return f"{path} is not valid JSON"
  return None


def restore_params(workdir: str, abstract_params, step: int | None = None):
  """The parameters of another run's checkpoint (init_from: phase 128 -> 512, MLM -> contrastive).

  Only the `params` entries that `abstract_params` asks for are read (partial restore): not the optimizer state
  nor the data position, and not the MLM head when the new model has none. Returns (params, step).
  """
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"init_from: {directory} does not exist; train that run first or fix the path")
  manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from: {directory} holds no checkpoint")
  target = {"params": abstract_params}
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
  return restored["state"]["params"], step
