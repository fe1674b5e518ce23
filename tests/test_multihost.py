"""Start-up checks of a multi-process run (no processes started here; tests/test_multiprocess.py starts them)."""

import os
import signal

import jax
import ml_collections
import pytest

from physbert_jax import multihost, sharding

ONE_TASK_PER_NODE = {"SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_NUM_NODES": "32", "SLURM_NTASKS": "32"}


def test_one_task_per_node_with_four_gpus_is_refused_naming_the_fix():
  """The paper's 32 x 4 job launched with one task per node: JAX gives each process one GPU, 32 in all."""
  with pytest.raises(ValueError, match=r"holds 128 GPUs \(32 nodes x 4\), but JAX sees 32 devices \(32 processes x 1\)"
                                       r".*--ntasks-per-node=4 --gpus-per-node=4"):
    multihost.check_device_count(ONE_TASK_PER_NODE, 32, 32, 1, "gpu")


def test_one_task_per_gpu_and_cpu_nodes_pass():
  multihost.check_device_count({**ONE_TASK_PER_NODE, "SLURM_NTASKS": "128"}, 128, 128, 1, "gpu")
  multihost.check_device_count({"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2"}, 8, 2, 4, "cpu")   # --gpus-per-node=0
  multihost.check_device_count({}, 1, 1, 1, "gpu")                                                   # no Slurm


def test_stop_signal_of_one_process_is_its_own_flag():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}))
  previous = signal.getsignal(signal.SIGTERM)
  try:
    stop = multihost.StopSignal(mesh)
    assert not stop()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop() and stop.received
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_process_rows_of_one_process_are_the_whole_batch():
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": -1}))
  assert jax.device_count() == 8
  assert sharding.process_rows(mesh, 16) == slice(0, 16)
