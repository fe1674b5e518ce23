"""launch/speedrun.sh, shortened (a few steps per stage): the whole pipeline from the shipped arXiv sample to an
evaluated, exported model, then a rerun that skips everything complete."""

import json
import os
import subprocess

import pytest

from clitools import REPO, tree_state

pytestmark = pytest.mark.slow


def _speedrun(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_FLAGS"))}
  env.update(DATA=str(tmp_path / "data"), RUNS=str(tmp_path / "runs"), MLM_STEPS="30", CONTRASTIVE_STEPS="20",
             EVAL_PER_CLASS="10", PAIRS="2000")
  return subprocess.run(["bash", "launch/speedrun.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1500)


def test_shortened_speedrun_end_to_end_and_rerun_skips(tmp_path):
  r = _speedrun(tmp_path)
  assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
  out = r.stdout
  for n in range(1, 11):
    assert f" {n}/10 " in out, f"step {n} missing"
  assert "synthetic QA pairs: skipped (no LLM engine" in out
  report = json.loads((tmp_path / "runs" / "report" / "results.json").read_text())
  names = [m["name"] for m in report["models"]]
  assert len(names) >= 3 and any("mlm" in n for n in names) and any("random" in n for n in names), names
  for model in report["models"]:
    for task in ("clustering", "citation", "retrieval"):
      assert "main" in model["tasks"][task], (model["name"], task, model["tasks"][task])
  figures = sorted(os.listdir(tmp_path / "runs" / "report"))
  assert sum(f.startswith("pca-") for f in figures) == len(names)
  assert "curves-mlm.png" in figures and "curves-contrastive.png" in figures, figures
  assert "| Model |" in out or "| model |" in out.lower()
  # The exported model loads in sentence-transformers and encodes as the run's own encoder does.
  from sentence_transformers import SentenceTransformer
  st = SentenceTransformer(str(tmp_path / "runs" / "export"), device="cpu")
  assert st.encode(["Superconductivity in twisted bilayer graphene."]).shape == (1, 128)
  # Rerun: every data step is skipped, both runs are complete, nothing in the data folder changes.
  before = tree_state(tmp_path / "data")
  again = _speedrun(tmp_path)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  assert tree_state(tmp_path / "data") == before
  assert "build_corpus:" not in again.stdout and "tokenizer:" not in again.stdout
