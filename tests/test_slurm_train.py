"""The real launch/slurm/train.sbatch under a real (one-node) Slurm cluster, CPU devices, 2 tasks:

  srun -n 2 of the trainer equals 1 process (the global batch is a function of (seed, step) only);
  SIGTERM to one task only: both agree on a step, save it and exit within a minute; resubmitting the same command
  resumes to the per-step losses of an uninterrupted run; `scontrol requeue` resumes too.

The cluster comes from tests/slurm_cluster.sh (tests/slurmtools.py); without apt or the daemons these tests skip.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

import multiproc
import slurmtools
from clitools import REPO

pytestmark = pytest.mark.slow

STEPS = 24
SBATCH = os.path.join(REPO, "launch", "slurm", "train.sbatch")
TWO_TASKS = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1"]   # the command
DEVICES = "--xla_force_host_platform_device_count=4"                                          # 2 x 4 = 8 devices


def _overrides(cache):
  return [f"--config.data.cache_dir={cache}", f"--config.total_steps={STEPS}", "--config.checkpoint.every_steps=8",
          "--config.eval_every=8", "--config.log_every=1", "--config.data.global_batch_size=16",
          "--config.data.worker_count=0"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One process of 8 CPU devices, straight through: the losses every launch must reproduce."""
  slurmtools.require_slurm()
  tmp = tmp_path_factory.mktemp("slurm-train")
  cache = tmp / "cache"
  rc, out = multiproc.train(["--config", "configs/mlm.py:tiny", "--workdir", tmp / "reference", *_overrides(cache)],
                            processes=1, devices=8)[0]
  assert rc == 0, out
  return tmp, cache, multiproc.losses(tmp / "reference")


def _same_as(reference_losses, workdir):
  got = multiproc.losses(workdir)
  assert sorted(got) == list(range(1, STEPS + 1)), sorted(got)
  np.testing.assert_allclose([got[s] for s in got], [reference_losses[s] for s in got], rtol=2e-6)


def _submit(tmp, cache, workdir, tag):
  args = [*TWO_TASKS, f"--output={tmp}/{tag}-%j.out", SBATCH, "configs/mlm.py:tiny", str(workdir), *_overrides(cache)]
  return slurmtools.sbatch(args, cwd=REPO, env=slurmtools.clean_env(XLA_FLAGS=DEVICES))


def _wait_for_step(workdir, step, job, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path) and max(multiproc.losses(workdir) or [0]) >= step:
      return
    time.sleep(0.2)
  slurmtools.scancel(job)
  raise TimeoutError(f"{workdir} did not reach step {step} in {timeout} s")


def _log(tmp, tag, job):
  with open(f"{tmp}/{tag}-{job}.out") as f:
    return f.read()


def test_srun_two_tasks_equal_one_process(reference):
  tmp, cache, losses = reference
  cmd = ["timeout", "600", "srun", "-n", "2", "--cpus-per-task=1", "python", "-m", "physbert_jax.train",
         "--config", "configs/mlm.py:tiny", "--workdir", str(tmp / "srun"), *_overrides(cache)]
  r = subprocess.run(cmd, cwd=REPO, env=slurmtools.clean_env(XLA_FLAGS=DEVICES), capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "mesh {'data': 8, 'fsdp': 1}" in r.stderr, r.stderr[-3000:]
  _same_as(losses, tmp / "srun")


def _task_pid(job, task):
  """The trainer's pid of global task `task` (scontrol listpids: PID JOBID STEPID LOCALID GLOBALID)."""
  r = subprocess.run(["scontrol", "listpids", job], env=slurmtools.clean_env(), capture_output=True, text=True)
  for line in r.stdout.splitlines()[1:]:
    pid, _, _, _, global_id = line.split()
    if global_id == str(task):
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"physbert_jax.train" in f.read():
          return int(pid)
  raise LookupError(f"no trainer of task {task} in job {job}: {r.stdout}")


def test_sigterm_to_one_task_saves_and_resubmitting_resumes(reference):
  tmp, cache, losses = reference
  workdir = tmp / "preempted"
  job = _submit(tmp, cache, workdir, "preempted")
  _wait_for_step(workdir, 10, job)
  os.kill(_task_pid(job, 1), signal.SIGTERM)           # task 1 only; task 0 never hears of it from Slurm
  sent = time.time()
  assert slurmtools.wait_job(job, timeout=120) == "COMPLETED", _log(tmp, "preempted", job)
  assert time.time() - sent < 60, f"{time.time() - sent:.0f} s from SIGTERM to the job's end"
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["preempted"] and 10 <= summary["step"] < STEPS, summary
  assert str(summary["step"]) in os.listdir(workdir / "checkpoints"), "the agreed step was saved"
  again = _submit(tmp, cache, workdir, "resubmitted")
  assert slurmtools.wait_job(again, timeout=600) == "COMPLETED", _log(tmp, "resubmitted", again)
  assert f"resumed from {workdir}/checkpoints/{summary['step']}" in _log(tmp, "resubmitted", again)
  _same_as(losses, workdir)


def test_scontrol_requeue_resumes(reference):
  tmp, cache, losses = reference
  workdir = tmp / "requeued"
  job = _submit(tmp, cache, workdir, "requeued")
  _wait_for_step(workdir, 10, job)
  r = subprocess.run(["scontrol", "requeue", job], env=slurmtools.clean_env(), capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  deadline = time.time() + 600
  # A requeued job is held until a BeginTime about two minutes ahead; let it start as soon as it has stopped.
  held = time.time() + 90
  while slurmtools.job_tasks(job)[job]["JobState"] != "PENDING" and time.time() < held:
    time.sleep(0.5)
  subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurmtools.clean_env(),
                 capture_output=True, text=True)
  while not (workdir / "summary.json").exists() or json.loads((workdir / "summary.json").read_text())["preempted"]:
    assert time.time() < deadline, _log(tmp, "requeued", job)
    time.sleep(1)
  assert slurmtools.wait_job(job, timeout=120) == "COMPLETED", _log(tmp, "requeued", job)
  log = _log(tmp, "requeued", job)
  assert "resumed from" in log, log[-3000:]
  _same_as(losses, workdir)
