"""Faults in the long stages: a kill or a full disk mid-run, rerun, gives the bytes of a run that never failed and
leaves no staging folder behind; a retrained tokenizer stops training; a damaged checkpoint falls back to the newest
intact one, saying so.

The full-disk tests mount a small tmpfs (root, as on this project's machines and CI; skipped with the reason
elsewhere) and, after the failure, remount it larger for the rerun.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from clitools import DEMO, REPO, run, snapshot_records, tree_state

pytestmark = pytest.mark.slow


def _corpus(path, copies: int):
  with open(DEMO, encoding="utf-8") as f:
    docs = [json.loads(line)["text"] for line in f]
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w", encoding="utf-8") as f:
    for r in range(copies):
      for i, text in enumerate(docs):
        f.write(json.dumps({"id": f"{r}-{i}", "text": text}) + "\n")
  return str(path)


def _tokenizer(tmp_path, corpus, name="tok", vocab=300):
  r = run(["data_prep.train_tokenizer", "--corpus", corpus, "--vocab-size", str(vocab), "--out",
           str(tmp_path / name)])
  assert r.returncode == 0, r.stderr
  return str(tmp_path / name)


def _staging_left(out: str) -> list[str]:
  parent, prefix = os.path.dirname(out), f".{os.path.basename(out)}.tmp-"
  return [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]


def _same_tree(a, b):
  sa, sb = tree_state(a), tree_state(b)
  assert sa == sb, sorted(set(sa.items()) ^ set(sb.items()))[:10]


def test_shards_killed_mid_write_rerun_is_byte_identical(tmp_path):
  corpus = _corpus(tmp_path / "corpus", 200)           # 12,000 documents: seconds of packing
  tok = _tokenizer(tmp_path, corpus)
  args = lambda out: ["data_prep.build_mlm_shards", "--corpus", corpus, "--tokenizer", tok, "--seq-len", "64",
                      "--out", out]
  ref = str(tmp_path / "ref")
  assert run(args(ref)).returncode == 0
  out = str(tmp_path / "out")
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.Popen([sys.executable, "-m", *args(out)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  while not _staging_left(out) and time.time() < deadline:   # the staging folder appears before tokenizing starts
    time.sleep(0.05)
  time.sleep(1.0)                                             # then kill it half-way through packing
  assert proc.poll() is None, "the build finished before the kill; the corpus is too small"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(out), "a killed build published nothing"
  assert _staging_left(out), "the killed run's staging folder is there until the rerun"
  r = run(args(out))
  assert r.returncode == 0, r.stderr
  assert "removed" in r.stdout and "did not finish" in r.stdout
  assert not _staging_left(out)
  _same_tree(ref, out)


@pytest.fixture
def small_disk(tmp_path):
  """A tmpfs of 4 KiB at tmp_path/disk; yields a function that resizes it. Needs root."""
  path = tmp_path / "disk"
  path.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(path)], capture_output=True, text=True)
  if r.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs to fill (needs root): {r.stderr.strip()}")

  def resize(size: str):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)

  try:
    yield path, resize
  finally:
    subprocess.run(["umount", str(path)], capture_output=True)


def _disk_full_then_rerun(tmp_path, small_disk, argv, size):
  """argv(out) fails on the full disk with the message and no leftovers; rerun after resizing equals a reference."""
  disk, resize = small_disk
  resize(size)
  out = str(disk / "out")
  r = run(argv(out))
  assert r.returncode == 1, r.stdout + r.stderr
  assert "no space left on the device" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr, r.stderr
  left = [os.path.relpath(os.path.join(d, n), disk) for d, _, names in os.walk(disk) for n in names]
  assert left in ([], ["out/.physbert-output.json"]), f"left behind: {left}"   # array stages claim --out first
  resize("64m")
  r = run(argv(out))
  assert r.returncode == 0, r.stderr
  ref = str(tmp_path / "ref")
  assert run(argv(ref)).returncode == 0
  assert not _staging_left(out)
  _same_tree(ref, out)


def test_shards_disk_full(tmp_path, small_disk):
  corpus = _corpus(tmp_path / "corpus", 40)
  tok = _tokenizer(tmp_path, corpus)
  _disk_full_then_rerun(tmp_path, small_disk, lambda out: ["data_prep.build_mlm_shards", "--corpus", corpus,
                                                          "--tokenizer", tok, "--seq-len", "64", "--out", out],
                        "256k")


def test_tokenizer_disk_full(tmp_path, small_disk):
  corpus = _corpus(tmp_path / "corpus", 1)
  _disk_full_then_rerun(tmp_path, small_disk, lambda out: ["data_prep.train_tokenizer", "--corpus", corpus,
                                                          "--vocab-size", "300", "--out", out], "4k")


def test_pairs_disk_full(tmp_path, small_disk):
  import gzip
  meta = tmp_path / "meta.jsonl.gz"
  with gzip.open(meta, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in snapshot_records())
  _disk_full_then_rerun(tmp_path, small_disk, lambda out: ["data_prep.pairs", "category", "--meta", str(meta),
                                                          "--num-pairs", "200", "--num-shards", "2", "--out", out,
                                                          "--quiet"], "32k")


def test_corpus_disk_full(tmp_path, small_disk):
  import gzip
  snapshot = tmp_path / "snap.jsonl.gz"
  with gzip.open(snapshot, "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in snapshot_records())
  assert run(["data_prep.arxiv_metadata", "--snapshot", str(snapshot), "--out", str(tmp_path / "meta"),
              "--quiet"]).returncode == 0
  _disk_full_then_rerun(tmp_path, small_disk, lambda out: ["data_prep.build_corpus", "--meta", str(tmp_path / "meta"),
                                                          "--out", out, "--quiet"], "8k")


def test_export_disk_full(tmp_path, small_disk):
  r = _train(tmp_path / "run", f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.total_steps=2")
  assert r.returncode == 0, r.stderr
  disk, resize = small_disk
  resize("1m")                                      # the tokenizer fits, the 4 MB safetensors does not
  out = str(disk / "out")
  r = run(["physbert_jax.convert", "to-hf", "--workdir", str(tmp_path / "run"), "--out", out])
  assert r.returncode == 1 and "no space left on the device" in r.stderr and "Traceback" not in r.stderr, r.stderr
  assert os.listdir(disk) == []
  resize("64m")
  assert run(["physbert_jax.convert", "to-hf", "--workdir", str(tmp_path / "run"), "--out", out]).returncode == 0
  ref = str(tmp_path / "ref")
  assert run(["physbert_jax.convert", "to-hf", "--workdir", str(tmp_path / "run"), "--out", ref]).returncode == 0
  a, b = tree_state(ref), tree_state(out)
  differ = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
  assert differ in ([], ["README.md"]), differ      # the model card names the output folder


def _train(workdir, *overrides):
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", "physbert_jax.train", "--config", "configs/mlm.py:tiny", "--workdir",
                         str(workdir), "--config.log_every=2", "--config.checkpoint.async_save=False", *overrides],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_tokenizer_fingerprint_and_resume_without_the_data_tokenizer(tmp_path):
  corpus = _corpus(tmp_path / "corpus", 2)
  tok = _tokenizer(tmp_path, corpus)
  shards = str(tmp_path / "shards")
  assert run(["data_prep.build_mlm_shards", "--corpus", corpus, "--tokenizer", tok, "--seq-len", "64", "--out",
              shards]).returncode == 0
  data = [f"--config.data.shards={shards}", "--config.data.seq_len=64", "--config.checkpoint.every_steps=2",
          "--config.total_steps=4"]
  r = _train(tmp_path / "run", *data)
  assert r.returncode == 0, r.stderr
  # The data folder's tokenizer is gone: the same command resumes (from step 2: the last checkpoint is removed, as
  # if the run had stopped there) with the run's own copy.
  shutil.rmtree(tok)
  shutil.rmtree(tmp_path / "run" / "checkpoints" / "4")
  r = _train(tmp_path / "run", *data)
  assert r.returncode == 0, r.stderr
  assert "resumed from" in r.stderr
  # Retrained with another vocabulary in place: a new run on the old shards is refused, naming both.
  _tokenizer(tmp_path, corpus, vocab=400)
  r = _train(tmp_path / "run2", *data)
  assert r.returncode == 1, r.stderr
  assert f"{tok}/tokenizer.json" in r.stderr and "is not the tokenizer the shards" in r.stderr, r.stderr
  assert "Traceback" not in r.stderr
  assert not os.path.exists(tmp_path / "run2" / "tokenizer"), "the wrong tokenizer was not copied into the run"


def test_damaged_checkpoints_fall_back_to_the_newest_intact(tmp_path):
  cache = str(tmp_path / "cache")
  cmd = [f"--config.data.cache_dir={cache}", "--config.checkpoint.every_steps=2", "--config.checkpoint.keep=3",
         "--config.eval_every=1000", "--config.total_steps=8"]
  r = _train(tmp_path / "run", *cmd)
  assert r.returncode == 0, r.stderr
  ckpt = tmp_path / "run" / "checkpoints"
  assert sorted(os.listdir(ckpt)) == ["4", "6", "8"]
  # Step 8: an array file cut in half. Step 6: its metadata JSON cut short.
  arrays = [p for p in glob.glob(str(ckpt / "8" / "state" / "**" / "*"), recursive=True) if os.path.isfile(p)]
  biggest = max(arrays, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  data_json = str(ckpt / "6" / "state" / "_METADATA")
  with open(data_json, "r+b") as f:
    f.truncate(5)
  r = _train(tmp_path / "run", *cmd)        # the same command: it resumes, from step 4, and trains to 8 again
  assert r.returncode == 0, r.stderr
  err = r.stderr
  assert f"checkpoint {ckpt}/8 cannot be restored" in err, err
  assert f"checkpoint {ckpt}/6 cannot be restored" in err and f"{data_json} is not valid JSON" in err, err
  assert f"resumed from {ckpt}/4" in err, err
  # No assertion on tracebacks here: after a failed read, TensorStore's callback threads may print "Event loop is
  # closed" tracebacks of their own (not ours, not catchable from Python; docs/LOG.md). The run goes on.
  moved = sorted(os.listdir(tmp_path / "run" / "damaged-checkpoints"))
  assert [m.split("-")[0] for m in moved] == ["6", "8"], moved
  assert "8" in os.listdir(ckpt)
  with open(tmp_path / "run" / "summary.json") as f:
    assert json.load(f)["step"] == 8


def test_training_disk_full_stops_cleanly_and_the_rerun_equals_a_straight_run(tmp_path, small_disk):
  disk, resize = small_disk
  resize("3m")                                   # the run starts; its first checkpoint (~12 MB) cannot fit
  cmd = [f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.total_steps=2", "--config.checkpoint.every_steps=2"]
  r = _train(disk / "run", *cmd)
  assert r.returncode == 1, r.stderr
  assert "no space left for checkpoint 2" in r.stderr and "Traceback" not in r.stderr, r.stderr
  resize("64m")
  r = _train(disk / "run", *cmd)
  assert r.returncode == 0, r.stderr
  r = _train(tmp_path / "straight", *cmd)
  assert r.returncode == 0, r.stderr
  losses = lambda d: [json.loads(l)["loss"] for l in open(os.path.join(d, "metrics.jsonl")) if '"loss"' in l]
  assert losses(disk / "run") == losses(tmp_path / "straight")
