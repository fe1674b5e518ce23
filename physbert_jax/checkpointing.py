"""Orbax checkpoints under workdir/checkpoints: the train state and the Grain iterator position, saved together.

Layout: workdir/checkpoints/<step>/{state, data}. `state` is the TrainState pytree (sharded arrays are written
by every process in parallel); `data` is one small JSON per process with that process's iterator state.
"""

from __future__ import annotations

import os

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


def make_manager(workdir: str, cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=cfg.keep,                      # the last N
      keep_period=cfg.keep_every or None,        # plus every K-th step forever (for later analysis)
      enable_async_checkpointing=cfg.async_save,  # training continues while the write happens
      create=True)
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state, data_iter=None, force: bool = False) -> bool:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iter)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, data_iter=None):
  """Restore into the shardings of `abstract_state` (a pytree of jax.ShapeDtypeStruct with .sharding)."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iter is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["state"]


def restore_params(workdir: str, abstract_params, step: int | None = None):
  """The parameters of another run's checkpoint (init_from: phase 128 -> 512, MLM -> contrastive).

  Only `params` is read; the optimizer state and data position of that run are not.
  """
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"init_from: {directory} does not exist; train that run first or fix the path")
  manager = ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from: {directory} holds no checkpoint")
  meta = manager.item_metadata(step)["state"]
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), dict(meta))
  target["params"] = abstract_params
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))["state"]
  return restored["params"], step
