"""Helpers for the command-line tests: run a program as a user would, hash a folder tree, real-looking inputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real arXiv data (README, "Tests and benchmarks"): $PHYSBERT_DATA, else ../shared/data beside the checkout, else
# the project machines' shared folder (a clone elsewhere, as CI's may be).
DATA = os.environ.get("PHYSBERT_DATA") or next(
    (d for d in (os.path.join(os.path.dirname(REPO), "shared", "data"), "/work/shared/data") if os.path.isdir(d)),
    os.path.join(os.path.dirname(REPO), "shared", "data"))
SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
DEMO = os.path.join(REPO, "data_prep", "demo_corpus", "abstracts.jsonl")
_PHYSICS = ("cond-mat.str-el", "astro-ph.GA", "hep-th", "quant-ph", "physics.optics", "gr-qc")


def snapshot_records() -> list[dict]:
  """The demo abstracts as arXiv snapshot records (the OAI schema), 2015 papers over six physics classes."""
  with open(DEMO, encoding="utf-8") as f:
    docs = [json.loads(line) for line in f]
  return [{"id": f"1501.{i:05d}", "submitter": None, "authors": "A. Author", "title": d["text"].split(". ")[0][:120],
           "comments": None, "journal-ref": None, "doi": None, "report-no": None,
           "categories": _PHYSICS[i % len(_PHYSICS)], "license": None, "abstract": d["text"],
           "versions": [{"version": "v1", "created": "Mon, 05 Jan 2015 00:00:00 GMT"}], "update_date": "2015-01-05",
           "authors_parsed": []} for i, d in enumerate(docs)]


def needs_data(*paths: str):
  """Skip, naming what is missing, unless every path (default: the metadata sample) exists."""
  import pytest
  missing = [p for p in paths or (SNAPSHOT,) if not os.path.exists(p)]
  return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not found (set PHYSBERT_DATA to the "
                                                  "shared data directory)")


def tree_state(root) -> dict:
  out = {}
  for d, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(d, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), root) + "/"] = "dir"
  return out


def run(argv, cwd=REPO, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                        env=env)


def kill_when_saved(cmd, workdir, step: int, env=None, timeout: float = 600) -> str:
  """Start `cmd`, SIGKILL it as soon as checkpoint `step` is committed under workdir (Orbax writes a temporary
  folder and renames it to the step), as a node failure would; return the output. Fails if the run ended first."""
  import signal
  import time
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  target, deadline = os.path.join(workdir, "checkpoints", str(step)), time.time() + timeout
  while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  out, _ = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, f"the run ended before checkpoint {step} could be killed:\n{out}"
  return out
