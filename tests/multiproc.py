"""Run the trainer as N JAX processes on localhost (gloo collectives over CPU devices), as srun would."""

import json
import os
import socket
import subprocess
import sys

from clitools import REPO


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env_for(devices: int, extra=None) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAX_"))}
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return {**env, **(extra or {})}


def train(args, processes: int, devices: int, timeout: int = 600, env=None) -> list[tuple[int, str]]:
  """`python -m physbert_jax.train ARGS` as `processes` processes of `devices` CPU devices each; (rc, output) each."""
  cmd = [sys.executable, "-m", "physbert_jax.train", *map(str, args)]
  if processes == 1:
    p = subprocess.run(cmd, cwd=REPO, env=env_for(devices, env), capture_output=True, text=True, timeout=timeout)
    return [(p.returncode, p.stdout + p.stderr)]
  address = f"127.0.0.1:{free_port()}"
  procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_for(devices, {"JAX_COORDINATOR_ADDRESS": address,
                                                  "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(i),
                                                  **(env or {})}))
           for i in range(processes)]
  out = []
  for p in procs:
    try:
      text, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      text = "(timed out)\n" + (p.communicate()[0] or "")
    out.append((p.returncode, text))
  return out


def losses(workdir) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}
