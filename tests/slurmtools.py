"""Helpers for the tests that submit real Slurm jobs to the one-node cluster tests/slurm_cluster.sh sets up.

    require_slurm()                        # once a session: start (or install) the cluster, or skip saying why
    job = sbatch(["--array=0-3", script, ...], cwd=tmp_path)
    assert wait_job(job, timeout=300) == "COMPLETED"

Jobs get clean_env(): this process's environment without any SLURM_*/SBATCH_* (a test run inside an allocation
must not submit into it), with the repository importable (PYTHONPATH) and jax on the CPU. Slurm passes it on
(--export=ALL is the default). With no slurmdbd there is no sacct: a job's state comes from `scontrol show job`,
which keeps finished jobs for MinJobAge (600 s in the cluster's slurm.conf).
PHYSBERT_NO_SLURM=1 skips these tests; PHYSBERT_REQUIRE_SLURM=1 makes a cluster that cannot start a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_SCRIPT = os.path.join(REPO, "tests", "slurm_cluster.sh")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
        "DEADLINE"}
NEVER = {"DependencyNeverSatisfied", "PartitionConfig", "BadConstraints"}  # pending reasons that never clear
_cluster: dict = {}


def require_slurm() -> None:
  """Make sure the test cluster is up (the script runs once per session), or skip with the script's last line."""
  if os.environ.get("PHYSBERT_NO_SLURM") == "1":
    pytest.skip("PHYSBERT_NO_SLURM=1")
  if "ok" not in _cluster:
    try:
      r = subprocess.run(["bash", CLUSTER_SCRIPT], capture_output=True, text=True, timeout=900)
      lines = (r.stdout + r.stderr).strip().splitlines() or [f"exit status {r.returncode}"]
      _cluster.update(ok=r.returncode == 0, why=lines[-1])
    except (OSError, subprocess.TimeoutExpired) as e:
      _cluster.update(ok=False, why=f"{CLUSTER_SCRIPT}: {e}")
  if not _cluster["ok"]:
    if os.environ.get("PHYSBERT_REQUIRE_SLURM") == "1":
      pytest.fail(f"no Slurm test cluster: {_cluster['why']}")
    pytest.skip(f"no Slurm test cluster: {_cluster['why']}")


def clean_env(**extra: str) -> dict:
  """For jobs and the Slurm commands: a stray SLURM_CONF makes scontrol hang a minute looking for a config."""
  env = {k: v for k, v in os.environ.items() if not re.match(r"(SLURM|SBATCH|SALLOC|SRUN)_", k)}
  env.pop("XLA_FLAGS", None)   # conftest's 8 fake devices are for the test process, not the jobs
  env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **extra)
  return env


def sbatch(args: list[str], cwd, env: dict | None = None) -> str:
  """Submit; return the job id (of the whole array, for --array)."""
  r = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=clean_env() if env is None else env,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, f"sbatch {' '.join(args)}: {r.stderr.strip()}"
  return r.stdout.strip().split(";")[0]


def job_tasks(job_id: str) -> dict[str, dict[str, str]]:
  """`scontrol show job` as {"<id>" or "<array id>_<task>": its fields}; every task of an array job."""
  r = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=clean_env(), capture_output=True, text=True,
                     timeout=60)
  if r.returncode != 0:
    raise LookupError(f"scontrol show job {job_id}: {r.stderr.strip()} (finished more than MinJobAge ago?)")
  tasks = {}
  for line in r.stdout.splitlines():
    fields = dict(re.findall(r"(\w+)=(\S*)", line))
    task = fields.get("ArrayTaskId")
    tasks[f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]] = fields
  return tasks


def wait_job(job_id: str, timeout: float) -> str:
  """Wait until every task of the job has ended; return its state ("COMPLETED"), or the states that differ
  ("COMPLETED,FAILED"), or "PENDING (<reason>)" for a job that can never start. Cancels the job on timeout."""
  deadline = time.time() + timeout
  while True:
    tasks = job_tasks(job_id)
    states = {t["JobState"] for t in tasks.values()}
    if states <= DONE:
      return ",".join(sorted(states))
    stuck = {t["Reason"] for t in tasks.values() if t["JobState"] == "PENDING"} & NEVER
    if stuck:
      return f"PENDING ({','.join(sorted(stuck))})"
    if time.time() > deadline:
      scancel(job_id)
      left = {k: (t["JobState"], t["Reason"]) for k, t in tasks.items()}
      raise TimeoutError(f"job {job_id} not done after {timeout:.0f}s (cancelled): {left}")
    time.sleep(0.5)


def scancel(job_id: str) -> None:
  subprocess.run(["scancel", job_id], env=clean_env(), capture_output=True, timeout=60)
