"""bench/gpu.py --smoke: the GPU check script at tiny shapes on CPU, so it cannot rot between GPU runs."""

import json
import os
import subprocess
import sys

import pytest

from clitools import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_script_smoke_runs_every_check(tmp_path):
  out = tmp_path / "gpu.jsonl"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out)], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")] == lines   # printed = written
  by = {}
  for line in lines:
    by.setdefault(line["check"], []).append(line)
  assert by["attention"][0]["ok"] and by["attention"][0]["rel_error"] < 1e-4
  loss = by["mlm_loss"][0]
  assert loss["ok"] and len(loss["losses"]) == 20 and loss["losses"][-1] < loss["losses"][0]
  assert by["contrastive_loss"][0]["ok"]
  # Both sequence lengths x both attention paths; the reference row for each length, with its ratio.
  assert sorted((x["seq_len"], x["attention"]) for x in by["mlm_step"]) == [(32, "cpu"), (32, "xla"),
                                                                            (64, "cpu"), (64, "xla")]
  assert all(x["tokens_per_s"] > 0 and x["memory_bytes"] > 0 for x in by["mlm_step"])
  for ref in by["mlm_torch"]:
    ours = max(x["tokens_per_s"] for x in by["mlm_step"] if x["seq_len"] == ref["seq_len"])
    assert ref["ratio"] == pytest.approx(ours / ref["tokens_per_s"], rel=1e-2)
  c = by["contrastive"][0]
  assert c["pairs_per_s"] > 0 and c["reference_pairs_per_s"] > 0
  e = by["encode"][0]
  # Same random weights on both sides: fp32 embeddings agree (our encoder vs SentenceTransformer.encode).
  assert e["texts"] == 64 and e["min_cosine"] > 0.9999, e
  for m in by["max_batch"]:
    assert m["batch"] > 0 and m["bytes_per_row"] > 0, m
  assert by["done"][0]["checks"] == ["attention", "mlm_loss", "contrastive_loss", "mlm_step", "mlm_torch",
                                     "contrastive", "encode", "max_batch"]


def test_gpu_check_script_refuses_a_cpu_without_smoke():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, "bench/gpu.py", "--only", "attention"], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "--smoke" in r.stderr and "Traceback" not in r.stderr


def test_cost_flops_match_a_hand_count():
  sys.path.insert(0, os.path.join(REPO, "bench"))
  import cost
  h, f, n, v = 768, 3072, 12, 30523
  def per_token(seq, head):   # forward matmul FLOPs x 3 (forward + backward), written out by hand
    layer = 2 * (4 * h * h + 2 * h * f) + 4 * seq * h
    return 3 * (n * layer + head * 2 * (h * h + h * v))
  mlm = 8e9 * (4 * per_token(128, 0.15) + 6 * per_token(512, 0.15))
  contrastive = 2 * (2e6 * 512 * per_token(256, 0) + 1e6 * 64 * per_token(32, 0) + 2e6 * 288 * per_token(144, 0))
  got = cost.run_flops()
  assert got["mlm"] == pytest.approx(mlm, rel=1e-12) and got["contrastive"] == pytest.approx(contrastive, rel=1e-12)
  assert mlm == pytest.approx(4.57e19, rel=1e-3)   # the figure docs/COST.md prints
