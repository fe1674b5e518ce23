"""Pulse tests of the train entrypoint: resume after SIGKILL, SIGTERM saves and exits 0, init_from, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clitools import kill_when_saved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 1 device: bitwise-reproducible runs; the sharding and multi-process tests cover 8.
_ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
pytestmark = pytest.mark.slow


def _cmd(workdir, cache, *overrides):
  return [sys.executable, "-m", "physbert_jax.train", "--config", "configs/mlm.py:tiny", "--workdir", str(workdir),
         f"--config.data.cache_dir={cache}", "--config.total_steps=12", "--config.checkpoint.every_steps=6",
         "--config.log_every=3", "--config.eval_every=6", "--config.checkpoint.async_save=False", *overrides]


def _train(workdir, cache, *overrides, env=None, wait=True):
  full_env = {**_ENV, **(env or {})}
  proc = subprocess.Popen(_cmd(workdir, cache, *overrides), cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, out


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  steps = [r["step"] for r in rows if "loss" in r]
  assert steps == sorted(set(steps)), "each step is logged once"
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _params(workdir):
  import jax
  from physbert_jax import checkpointing
  from physbert_jax.model import Bert, BertConfig
  import jax.numpy as jnp
  import flax.linen as nn
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = BertConfig(**json.load(f)["model"])
  d = jnp.zeros((1, 8), jnp.int32)
  abstract = jax.eval_shape(lambda: nn.unbox(Bert(cfg).init({"params": jax.random.key(0)}, d, d + 1,
                                                            masked_positions=d[:, :2])["params"]))
  params, step = checkpointing.restore_params(workdir, abstract)
  return jax.device_get(params), step


def test_kill_and_resume_equals_straight_run(tmp_path):
  cache = tmp_path / "cache"
  rc, out = _train(tmp_path / "straight", cache)
  assert rc == 0, out
  kill_when_saved(_cmd(tmp_path / "resumed", cache), tmp_path / "resumed", 6, env=_ENV)   # a node failure
  assert max(_losses(tmp_path / "resumed")) >= 6
  rc, out = _train(tmp_path / "resumed", cache)
  assert rc == 0, out
  assert "resumed from" in out
  straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
  assert sorted(straight) == list(range(1, 13)) and sorted(resumed) == list(range(1, 13))
  np.testing.assert_allclose([resumed[s] for s in range(1, 13)], [straight[s] for s in range(1, 13)], rtol=1e-6)
  (p1, s1), (p2, s2) = _params(tmp_path / "straight"), _params(tmp_path / "resumed")
  assert s1 == s2 == 12
  import jax
  jax.tree.map(np.testing.assert_array_equal, p1, p2)


def test_sigterm_saves_and_exits_zero(tmp_path):
  workdir = tmp_path / "run"
  proc = _train(workdir, tmp_path / "cache", "--config.total_steps=100000", "--config.checkpoint.every_steps=50000",
                wait=False)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert "SIGTERM: saved checkpoint" in out
  steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
  assert steps and max(steps) == max(_losses(workdir))
  assert json.loads((workdir / "summary.json").read_text())["preempted"] is True


def test_init_from_loads_weights_and_refuses_other_config(tmp_path):
  cache = tmp_path / "cache"
  rc, out = _train(tmp_path / "a", cache, "--config.total_steps=6")
  assert rc == 0, out
  rc, out = _train(tmp_path / "b", cache, "--config.total_steps=1", f"--config.init_from={tmp_path / 'a'}",
                   "--config.optimizer.lr=0.0", "--config.optimizer.warmup_steps=0")
  assert rc == 0, out
  assert "initialised parameters from" in out
  (pa, _), (pb, _) = _params(tmp_path / "a"), _params(tmp_path / "b")
  import jax
  jax.tree.map(np.testing.assert_array_equal, pa, pb)     # lr 0: one step leaves the imported weights as they were
  # The same workdir with another config is refused, naming the key.
  rc, out = _train(tmp_path / "a", cache, "--config.total_steps=7")
  assert rc != 0 and "total_steps: 6 -> 7" in out


def test_unknown_override_fails_clearly(tmp_path):
  rc, out = _train(tmp_path / "x", tmp_path / "cache", "--config.optimizer.learning_rate=3e-4")
  assert rc != 0 and "unknown config key config.optimizer.learning_rate" in out and "lr" in out


def test_non_finite_loss_stops_naming_the_step(tmp_path):
  rc, out = _train(tmp_path / "nan", tmp_path / "cache", "--config.optimizer.lr=1e30",
                   "--config.optimizer.warmup_steps=0")
  assert rc != 0 and "step 2: loss nan" in out and "is not finite" in out


CONTRASTIVE_CONFIG = '''
from configs import contrastive


def get_config():
  c = contrastive.get_config("tiny")
  c.init_from = {init_from!r}
  c.data.sources = [{{"path": {pairs!r}, "weight": 1.0}}]
  c.data.max_length = 64
  c.data.length_buckets = (16, 32)
  c.data.global_batch_size = 8
  c.data.worker_count = 0
  c.validation.sets = ""                             # tests/test_multiprocess.py sets one
  c.validation.tasks = ("clustering", "retrieval")   # the demo has no citation links
  c.validation.folds = 2
  c.total_steps = 10
  c.checkpoint.every_steps = 5
  c.checkpoint.async_save = False
  c.log_every = 1
  return c
'''


def test_contrastive_kill_and_resume_equals_straight_run(tmp_path):
  """The pair pipeline's iterator state and the length-bucketed batches survive a SIGKILL: the resumed run's
  per-step losses equal the straight run's."""
  from data_prep.pairs.writer import ShardWriter, manifest
  from physbert_jax import outputs
  rc, out = _train(tmp_path / "mlm", tmp_path / "cache", "--config.total_steps=2")     # a start with a tokenizer
  assert rc == 0, out
  pairs = tmp_path / "pairs"
  w = ShardWriter(str(pairs), num_shards=2)
  with open(os.path.join(REPO, "data_prep", "demo_corpus", "abstracts.jsonl"), encoding="utf-8") as f:
    for i, line in enumerate(f):
      text = json.loads(line)["text"]     # six-word anchors, every 16th a whole sentence: several bucket shapes
      w.write({"anchor": text.split(". ")[0] if i % 16 == 0 else " ".join(text.split()[:6]), "positive": text})
  outputs.write_json(str(pairs / "manifest.json"), manifest("test", w.close(), 0, {}, {}), sort_keys=True)
  config = tmp_path / "contrastive_test.py"
  config.write_text(CONTRASTIVE_CONFIG.format(init_from=str(tmp_path / "mlm"), pairs=str(pairs)))

  def run(workdir, env=None):
    cmd = [sys.executable, "-m", "physbert_jax.train", "--config", str(config), "--workdir", str(workdir)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **(env or {})})
    return p.returncode, p.stdout + p.stderr

  rc, out = run(tmp_path / "straight")
  assert rc == 0, out
  assert "new batch shape" in out
  kill_when_saved([sys.executable, "-m", "physbert_jax.train", "--config", str(config), "--workdir",
                   str(tmp_path / "resumed")], tmp_path / "resumed", 5, env=_ENV)
  rc, out = run(tmp_path / "resumed")
  assert rc == 0 and "resumed from" in out, out
  straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
  assert sorted(straight) == sorted(resumed) == list(range(1, 11))
  np.testing.assert_allclose([resumed[s] for s in range(1, 11)], [straight[s] for s in range(1, 11)], rtol=1e-6)
  rows = [json.loads(l) for l in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
  assert any("examples_per_s" in r and r["tokens_per_s"] > 0 for r in rows)
  # The workdir declares how it was trained and validated: exports and eval.run encode the same way.
  assert json.loads((tmp_path / "straight" / "encoder.json").read_text()) == {
      "pooling": "mean", "max_length": 64, "normalize": False, "lowercase": False}
  from physbert_jax import convert
  assert convert.load(str(tmp_path / "straight")).encoder.max_length == 64
