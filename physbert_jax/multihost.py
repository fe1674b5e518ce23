"""Many processes, one run: start-up and device check, agreeing on when to stop, shared-folder work done once.

One process per GPU (JAX's GPU guide): under Slurm, `srun` starts one task per GPU and `jax.distributed.initialize()`
gives task i the node's GPU SLURM_LOCALID. On CPU, every process has its own devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N) and the collectives run over gloo.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

def initialize() -> None:
  """jax.distributed for several processes: Slurm's variables (srun), JAX_COORDINATOR_ADDRESS with
  JAX_NUM_PROCESSES and JAX_PROCESS_ID (any other launcher), or PHYSBERT_DISTRIBUTED=1 for what JAX detects by
  itself (TPU VMs: launch/tpu.sh). Then the device check."""
  if (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS")
      or os.environ.get("PHYSBERT_DISTRIBUTED") == "1"):
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and os.environ.get("JAX_NUM_PROCESSES"):
      jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                 int(os.environ["JAX_PROCESS_ID"]))
    else:
      jax.distributed.initialize()
  check_device_count(os.environ, jax.device_count(), jax.process_count(), jax.local_device_count(),
                     jax.default_backend())


def check_device_count(env, device_count: int, process_count: int, local_device_count: int, backend: str) -> None:
  """Every GPU the Slurm allocation holds must be a JAX device. With one task per node and 4 GPUs, jax.distributed
  gives each process one GPU: the job would silently train on a quarter of its GPUs."""
  gpus_per_node = int(env.get("SLURM_GPUS_ON_NODE") or 0)
  nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0)
  if backend not in ("gpu", "cuda", "rocm") or not gpus_per_node or not nodes:
    return
  expected = gpus_per_node * nodes
  if device_count != expected:
    raise ValueError(
        f"the Slurm allocation holds {expected} GPUs ({nodes} nodes x {gpus_per_node}), but JAX sees {device_count} "
        f"devices ({process_count} processes x {local_device_count}). Launch one task per GPU: "
        f"--ntasks-per-node={gpus_per_node} --gpus-per-node={gpus_per_node}, as launch/slurm/train.sbatch does")


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def once(name: str, fn: Callable[[], object]) -> None:
  """Process 0 runs fn (work on a shared folder: no two processes write the same file); the others wait for it.
  A failure on process 0 is reported to all, so no process waits forever."""
  if jax.process_count() == 1:
    fn()
    return
  from jax.experimental import multihost_utils
  error = None
  if jax.process_index() == 0:
    try:
      fn()
    except Exception as e:   # re-raised below, after the others have been told
      error = e
  failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
  if error is not None:
    raise error
  if int(failed):
    raise RuntimeError(f"{name}: process 0 failed (its log has the error)")


def everywhere(flag: bool) -> bool:
  """True when `flag` holds on every process."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).min())


def broadcast(value):
  """Process 0's JSON-able value on every process (the others pass anything, e.g. None): the validation, which
  only process 0 computes, so every process records the same metrics and keeps the same best checkpoint."""
  if jax.process_count() == 1:
    return value
  import json
  from jax.experimental import multihost_utils
  data = np.frombuffer(json.dumps(value).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
  if jax.process_index() != 0:
    data = np.zeros(size, np.uint8)
  return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(data)).tobytes().decode())


class StopSignal:
  """SIGTERM (preemption, `scancel`, Slurm's --signal) stops the run after a step every process agrees on.

  Slurm signals tasks one by one and a task may be mid-step: if each process stopped when its own signal came, one
  would enter the checkpoint save while the others enter the next step's collectives (gloo/NCCL abort; no
  checkpoint). So each step every process contributes its flag to an all-reduce (max over processes), and reads the
  reduced flag one step later: by then that tiny collective has run, so reading it does not stall the device queue.
  All processes read the same value at the same step and stop after it. One process: the flag itself.
  """

  def __init__(self, mesh: Mesh):
    self.received = False
    signal.signal(signal.SIGTERM, self._handler)
    self._pending = None
    if jax.process_count() > 1:
      self._sharding = NamedSharding(mesh, P(mesh.axis_names))
      self._max = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))

  def _handler(self, signum, frame):
    self.received = True

  def __call__(self) -> bool:
    """Called once per step, by every process: True when the run must stop after this step."""
    if jax.process_count() == 1:
      return self.received
    local = np.full((jax.local_device_count(),), int(self.received), np.int32)
    flags = jax.make_array_from_process_local_data(self._sharding, local)
    previous, self._pending = self._pending, self._max(flags)
    return previous is not None and bool(previous)
