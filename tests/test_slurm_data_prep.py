"""launch/slurm/data_prep.sbatch on a real Slurm cluster (tests/slurm_cluster.sh): a 4-task array, then the merge job
chained with --dependency=afterok, gives the bytes of a one-process run of the same stage with the same --num-shards.

The jobs are submitted from tmp_path (the script cd's to the submit dir and makes logs/ there) with --output into
it, so the repository gets no logs/; they import the repository through PYTHONPATH (slurmtools.clean_env).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

import slurmtools
from clitools import DEMO, REPO, snapshot_records, tree_state

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(REPO, "launch", "slurm", "data_prep.sbatch")
# The script asks for 8 CPUs, 32G and 12 h a task, more than a 2-core test node has: the command line overrides it.
SMALL = ["--cpus-per-task=1", "--mem=1G", "--time=10"]
PARTS = 4


@pytest.fixture(scope="module", autouse=True)
def slurm():
  slurmtools.require_slurm()


def _local(module: str, args: list[str], cwd) -> None:
  r = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=slurmtools.clean_env(), capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0, r.stderr


def _logs(d) -> str:
  return "\n".join(f"--- {n}\n{open(os.path.join(d, n)).read()}" for n in sorted(os.listdir(d)))


def _array_then_merge(tmp_path, stage: str, args: list[str]) -> None:
  """The README's recipe: `sbatch --array=0-3 ... <stage> <args>`, then `... --merge` once every task is done."""
  logs = tmp_path / "slurm-logs"
  logs.mkdir()
  repo_had_logs = os.path.exists(os.path.join(REPO, "logs"))
  args = [*args, "--num-shards", str(PARTS)]
  array = slurmtools.sbatch([*SMALL, f"--array=0-{PARTS - 1}", f"--output={logs}/array-%A_%a.out", SCRIPT, stage,
                             *args], cwd=tmp_path)
  merge = slurmtools.sbatch([*SMALL, f"--dependency=afterok:{array}", f"--output={logs}/merge-%j.out", SCRIPT,
                             stage, *args, "--merge"], cwd=tmp_path)
  try:
    assert slurmtools.wait_job(array, timeout=300) == "COMPLETED", _logs(logs)
    assert slurmtools.wait_job(merge, timeout=120) == "COMPLETED", _logs(logs)
  finally:
    slurmtools.scancel(array)
    slurmtools.scancel(merge)
  # Every task ran its own part: the script's first line names the task, and no task saw the caller's Slurm vars.
  for k in range(PARTS):
    log = open(logs / f"array-{array}_{k}.out").read()
    assert f" task {k}/{PARTS}: data_prep.{stage} " in log, log
  assert f" task none/1: data_prep.{stage} " in open(logs / f"merge-{merge}.out").read()
  assert os.path.exists(os.path.join(REPO, "logs")) == repo_had_logs, "a job wrote logs/ into the repository"


def _same_tree(a, b):
  sa, sb = tree_state(a), tree_state(b)
  assert sa == sb, sorted(set(sa.items()) ^ set(sb.items()))[:10]


def test_arxiv_metadata_array_and_merge_match_one_process(tmp_path):
  snapshot = tmp_path / "snapshot.jsonl.gz"
  with gzip.open(snapshot, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in snapshot_records())
  args = lambda out: ["--snapshot", str(snapshot), "--out", str(tmp_path / out), "--quiet"]
  _array_then_merge(tmp_path, "arxiv_metadata", args("slurm"))
  _local("data_prep.arxiv_metadata", [*args("local"), "--num-shards", str(PARTS)], tmp_path)
  _same_tree(tmp_path / "local", tmp_path / "slurm")
  assert len([n for n in os.listdir(tmp_path / "slurm") if n.startswith("papers-")]) == PARTS


def test_build_mlm_shards_array_and_merge_match_one_process(tmp_path):
  corpus = tmp_path / "corpus"                   # build_corpus's layout: one file a part, task K reads file K
  corpus.mkdir()
  with open(DEMO, encoding="utf-8") as f:
    lines = f.readlines()
  for k in range(PARTS):
    with gzip.open(corpus / f"corpus-{k:05d}-of-{PARTS:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
      f.writelines(lines[k::PARTS])
  _local("data_prep.train_tokenizer", ["--corpus", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "tok")],
         tmp_path)
  args = lambda out: ["--corpus", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--seq-len", "32", "--out",
                      str(tmp_path / out), "--validation-fraction", "0.2"]
  _array_then_merge(tmp_path, "build_mlm_shards", args("slurm"))
  # One process, part after part, then the merge (without --shard-index it would pack one round-robin build).
  for k in range(PARTS):
    _local("data_prep.build_mlm_shards", [*args("local"), "--num-shards", str(PARTS), "--shard-index", str(k)],
           tmp_path)
  _local("data_prep.build_mlm_shards", [*args("local"), "--num-shards", str(PARTS), "--merge"], tmp_path)
  _same_tree(tmp_path / "local", tmp_path / "slurm")
  assert os.path.exists(tmp_path / "slurm" / "manifest.json")
