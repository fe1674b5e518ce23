"""Mesh and shardings from the config. The model names logical axes; `config.mesh.rules` maps them onto mesh axes.

Two mesh axes: `data` (pure data parallel: parameters replicated) and `fsdp` (data parallel whose parameters and
optimizer state are sharded along the axis and gathered layer by layer by XLA). The batch is split over both.
    data=-1, fsdp=1   -> DDP on every device        data=1, fsdp=-1 -> ZeRO-3/FSDP on every device
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  sizes = [cfg[a] for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1 (fill), got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} does not fit {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"there are {len(devices)}")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def local_mesh() -> Mesh:
  """One device of this process, with the same axis names: for work one process does alone (validation)."""
  return jax.make_mesh((1,) * len(MESH_AXES), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=jax.local_devices()[:1])


def logical_rules(cfg: ml_collections.ConfigDict) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in cfg.rules)


def tree_shardings(boxed_abstract_tree, mesh: Mesh, rules) -> object:
  """NamedShardings for a pytree whose leaves carry logical axes (nn.Partitioned); others are replicated."""
  specs = nn.get_partition_spec(boxed_abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divides(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  if global_batch_size % (shards * grad_accum_steps):
    raise ValueError(
        f"config.data.global_batch_size={global_batch_size} must be divisible by the {shards} batch shards "
        f"(mesh {dict(mesh.shape)}) x {grad_accum_steps} accumulation steps; pick a multiple of "
        f"{shards * grad_accum_steps}")


def process_rows(mesh: Mesh, global_batch_size: int) -> slice:
  """The rows of the global batch this process's devices hold: the rows its input pipeline reads.

  jax.make_mesh puts each process's devices side by side along the batch axes, so they are one contiguous block;
  make_array_from_process_local_data then places them where a single process would have them."""
  index = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  spans = sorted({(s[0].start or 0, global_batch_size if s[0].stop is None else s[0].stop) for s in index.values()})
  start, stop = spans[0][0], spans[-1][1]
  if sum(b - a for a, b in spans) != stop - start:
    raise ValueError(f"this process's devices hold rows {spans} of the global batch, not one contiguous block; "
                     "build the mesh with jax.make_mesh (sharding.make_mesh) so each process's devices are adjacent")
  return slice(start, stop)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of the batch -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
