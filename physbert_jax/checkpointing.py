"""Orbax checkpoints under workdir/checkpoints: the train state and the Grain iterator position, saved together.

Layout: workdir/checkpoints/<step>/{state, data}. `state` is the TrainState pytree (sharded arrays are written
by every process in parallel); `data` is one small JSON per process with that process's iterator state.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as preservation

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
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state, data_iter=None, force: bool = False,
         metrics: dict | None = None) -> bool:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iter)
  return manager.save(step, args=ocp.args.Composite(**items), force=force, metrics=metrics)


def record_best(workdir: str, step: int, metrics: dict, key: str) -> bool:
  """workdir/best.json names the best step so far by metrics[key] (higher is better); `convert --best` reads it."""
  path = os.path.join(workdir, BEST)
  if os.path.exists(path):
    with open(path) as f:
      best = json.load(f)
    if best["metric"] == key and best["metrics"][key] >= metrics[key]:
      return False
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"step": int(step), "metric": key, "metrics": metrics}, f, indent=2)
    os.replace(tmp, path)
  return True


def best_step(workdir: str) -> int:
  path = os.path.join(workdir, BEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: only runs that validate (the contrastive stage) record a best step")
  with open(path) as f:
    return int(json.load(f)["step"])


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Restore into the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct with .sharding)."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"]


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
