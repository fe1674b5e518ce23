"""The multi-process tier without Slurm: 2 JAX processes x 4 CPU devices on localhost (jax.distributed with an
explicit coordinator, gloo collectives) train on the same batches as 1 process x 8 devices, so the per-step
losses agree (to float summation order), data parallel and FSDP, MLM and contrastive (length buckets, validation);
and a checkpoint written by 2 processes resumes in 1 (another process count: the data order goes on)."""

import json
import shutil

import numpy as np
import pytest

import multiproc
from clitools import DEMO, snapshot_records
from test_resume import CONTRASTIVE_CONFIG

pytestmark = pytest.mark.slow

MESHES = {"dp": ["--config.mesh.data=-1", "--config.mesh.fsdp=1"],
          "fsdp": ["--config.mesh.data=1", "--config.mesh.fsdp=-1"]}


def _ok(results):
  for i, (rc, out) in enumerate(results):
    assert rc == 0, f"process {i}:\n{out[-4000:]}"
  return results[0][1]


def _same_losses(a, b, steps):
  la, lb = multiproc.losses(a), multiproc.losses(b)
  assert sorted(la) == sorted(lb) == list(steps), (la, lb)
  np.testing.assert_allclose([lb[s] for s in steps], [la[s] for s in steps], rtol=2e-6)


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_mlm_two_processes_equal_one_and_resume_in_one(tmp_path, mesh):
  args = ["--config", "configs/mlm.py:tiny", f"--config.data.cache_dir={tmp_path / 'cache'}",
          "--config.total_steps=6", "--config.checkpoint.every_steps=3", "--config.eval_every=3",
          "--config.log_every=1", "--config.data.global_batch_size=16", *MESHES[mesh]]
  _ok(multiproc.train(args + ["--workdir", tmp_path / "one"], processes=1, devices=8))
  out = _ok(multiproc.train(args + ["--workdir", tmp_path / "two"], processes=2, devices=4))
  assert "mesh {'data': 8, 'fsdp': 1}" in out if mesh == "dp" else "mesh {'data': 1, 'fsdp': 8}" in out, out
  _same_losses(tmp_path / "one", tmp_path / "two", range(1, 7))
  rows = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r["eval_loss"] for r in rows if "eval_loss" in r}
  ref = {r["step"]: r["eval_loss"] for r in map(json.loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
         if "eval_loss" in r}
  assert sorted(evals) == sorted(ref) == [3, 6]
  np.testing.assert_allclose([evals[s] for s in (3, 6)], [ref[s] for s in (3, 6)], rtol=2e-6)
  # The 2-process checkpoint of step 3, resumed by 1 process of 8 devices: steps 4-6 as the straight run.
  shutil.copytree(tmp_path / "two", tmp_path / "moved")
  shutil.rmtree(tmp_path / "moved" / "checkpoints" / "6")
  out = _ok(multiproc.train(args + ["--workdir", tmp_path / "moved"], processes=1, devices=8))
  assert "resumed from" in out and "checkpoints/3" in out, out
  _same_losses(tmp_path / "one", tmp_path / "moved", range(1, 7))


@pytest.fixture(scope="module")
def contrastive_config(tmp_path_factory):
  """A 2-step tiny MLM run to start from, demo-abstract pairs of several lengths, evaluation sets of the demo."""
  from data_prep.pairs.writer import ShardWriter, manifest
  from eval import build_sets
  from physbert_jax import outputs
  tmp = tmp_path_factory.mktemp("contrastive")
  _ok(multiproc.train(["--config", "configs/mlm.py:tiny", "--workdir", tmp / "mlm", "--config.total_steps=2",
                       f"--config.data.cache_dir={tmp / 'cache'}"], processes=1, devices=1))
  pairs = tmp / "pairs"
  w = ShardWriter(str(pairs), num_shards=2)
  with open(DEMO, encoding="utf-8") as f:
    for i, line in enumerate(f):
      text = json.loads(line)["text"]     # six-word anchors, every 16th a whole sentence: several bucket shapes
      w.write({"anchor": text.split(". ")[0] if i % 16 == 0 else " ".join(text.split()[:6]), "positive": text})
  outputs.write_json(str(pairs / "manifest.json"), manifest("test", w.close(), 0, {}, {}), sort_keys=True)
  snapshot = tmp / "snapshot.json"
  snapshot.write_text("".join(json.dumps(r) + "\n" for r in snapshot_records()))
  small = {"clustering_per_class": 5, "citation_pairs": 10, "retrieval_queries": 10, "subdomain_eval_per_class": 1,
           "subdomain_train_pairs_per_class": 1}
  build_sets.build(str(snapshot), None, str(tmp / "sets"), 0, None, small, log=lambda *_: None)
  config = tmp / "contrastive_test.py"
  config.write_text(CONTRASTIVE_CONFIG.format(init_from=str(tmp / "mlm"), pairs=str(pairs)))
  return config, tmp / "sets"


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_contrastive_two_processes_equal_one(tmp_path, contrastive_config, mesh):
  """Length-bucketed batches, validation on parameters sharded across processes (FSDP), one best checkpoint."""
  config, sets = contrastive_config
  args = ["--config", config, f"--config.validation.sets={sets}", "--config.total_steps=6", "--config.eval_every=3",
          "--config.checkpoint.every_steps=3", *MESHES[mesh]]
  _ok(multiproc.train(args + ["--workdir", tmp_path / "one"], processes=1, devices=8))
  out = _ok(multiproc.train(args + ["--workdir", tmp_path / "two"], processes=2, devices=4))
  assert "new batch shape" in out, out
  _same_losses(tmp_path / "one", tmp_path / "two", range(1, 7))
  rows = {d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two")}
  val = {d: {r["step"]: r["val_mean"] for r in rows[d] if "val_mean" in r} for d in rows}
  assert sorted(val["one"]) == sorted(val["two"]) == [3, 6]
  np.testing.assert_allclose([val["two"][s] for s in (3, 6)], [val["one"][s] for s in (3, 6)], atol=1e-4)
  best = {d: json.loads((tmp_path / d / "best.json").read_text())["step"] for d in rows}
  assert best["one"] == best["two"], best
