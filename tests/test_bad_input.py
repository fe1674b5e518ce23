"""Bad input and faults across the command-line programs: each row runs one command on a copy of a small data tree
and asserts its exit status, that its message names the problem (a regex over stdout + stderr), that no Python
traceback reached the user, and that nothing that was there before changed (the tree is hashed before and after).

The tree: a corpus (the demo abstracts), a tokenizer and MLM shards built from it, a metadata snapshot in the OAI
schema made from the same abstracts, a pair set, and an `other/` folder standing in for a user's own files.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest

from clitools import DEMO, run, snapshot_records, tree_state

@pytest.fixture(scope="module")
def base(tmp_path_factory):
  from data_prep import arxiv_metadata, build_mlm_shards, train_tokenizer
  from data_prep.pairs import category
  root = tmp_path_factory.mktemp("base")
  os.makedirs(root / "corpus")
  shutil.copy(DEMO, root / "corpus" / "abstracts.jsonl")
  train_tokenizer.train_tokenizer([str(root / "corpus")], 300, str(root / "tokenizer"), verbose=False)
  build_mlm_shards.build_mlm_shards([str(root / "corpus")], str(root / "tokenizer"), 64, str(root / "shards"),
                                    num_shards=2, verbose=False)
  with gzip.open(root / "meta.jsonl.gz", "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in snapshot_records())
  category.build([str(root / "meta.jsonl.gz")], str(root / "pairs"), num_pairs=50, num_shards=1, quiet=True)
  arxiv_metadata.main(["--snapshot", str(root / "meta.jsonl.gz"), "--out", str(root / "meta"), "--quiet"])
  os.makedirs(root / "other")
  (root / "other" / "notes.txt").write_text("my own notes\n")
  (root / "plain_file").write_text("not a folder\n")
  (root / "empty_dir").mkdir()
  os.symlink("empty_dir", root / "link")          # relative: the copy of the tree keeps it a link
  (root / "ids.bin").write_bytes(b"\xff\xfe\x00\x81binary")
  (root / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
  (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
  (root / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
  with open(root / "meta.jsonl.gz", "rb") as f:
    data = f.read()
  (root / "truncated.jsonl.gz").write_bytes(data[: len(data) // 2])
  (root / "bad-model").mkdir()
  (root / "bad-model" / "config.json").write_text(json.dumps({
      "model_type": "bert", "vocab_size": 300, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 16, "max_position_embeddings": 64, "type_vocab_size": 2}))
  (root / "bad-model" / "model.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")   # cut short
  (root / "bad-sets").mkdir()
  rows = "".join(json.dumps({"id": str(i), "text": f"text {i}", "label": f"c{i % 2}"}) + "\n" for i in range(400))
  (root / "bad-sets" / "clustering.jsonl.gz").write_bytes(gzip.compress(rows.encode())[:300])
  (root / "bad-tokenizer").mkdir()
  (root / "bad-tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": ')
  return root


SH, TT, CAT, CIT = "data_prep.build_mlm_shards", "data_prep.train_tokenizer", "data_prep.pairs", "data_prep.pairs"
BS, ENC, META, CORP = "eval.build_sets", "physbert_jax.encode", "data_prep.arxiv_metadata", "data_prep.build_corpus"
SHARDS = lambda t, out, *extra: [SH, "--corpus", f"{t}/corpus", "--tokenizer", f"{t}/tokenizer", "--seq-len", "64",
                                 "--out", out, *extra]
TOK = lambda t, out, *extra: [TT, "--corpus", f"{t}/corpus", "--vocab-size", "300", "--out", out, *extra]
PAIRS = lambda t, out, *extra: [CAT, "category", "--meta", f"{t}/meta.jsonl.gz", "--out", out, *extra]
SETS = lambda t, meta, out, *extra: [BS, "--metadata", meta, "--out", out, "--clustering-per-class", "5",
                                     "--citation-pairs", "10", "--retrieval-queries", "10",
                                     "--subdomain-eval-per-class", "2", "--subdomain-train-pairs-per-class", "2",
                                     *extra]
ENCODE = lambda t, inp, out, *extra: [ENC, "--model", f"{t}/no-model", "--input", inp, "--out", out, *extra]
NOT_WRITTEN = "holds files this command did not write"

# (id, argv from the tree path, expected exit status, regex the output must match)
ROWS = [
    # --- data_prep.build_mlm_shards ---
    ("shards: --out is the folder holding the inputs", lambda t: SHARDS(t, t), 1, NOT_WRITTEN),
    ("shards: --out equals --corpus", lambda t: SHARDS(t, f"{t}/corpus"), 1, NOT_WRITTEN),
    ("shards: --out is the tokenizer", lambda t: SHARDS(t, f"{t}/tokenizer"), 1, "output of train_tokenizer"),
    ("shards: --out is a plain file", lambda t: SHARDS(t, f"{t}/plain_file"), 1, "is a file, not a folder"),
    ("shards: --out is a user's folder", lambda t: SHARDS(t, f"{t}/other"), 1, NOT_WRITTEN + r" \(notes.txt\)"),
    ("shards: --out is a symbolic link", lambda t: SHARDS(t, f"{t}/link"), 1, "link is a symbolic link"),
    ("shards: --out under a plain file", lambda t: SHARDS(t, f"{t}/plain_file/x"), 1, "is a file, not a folder"),
    ("shards: earlier build, other settings, no --overwrite",
     lambda t: [*SHARDS(t, f"{t}/shards")[:-4], "--seq-len", "32", "--out", f"{t}/shards"], 1,
     "earlier output of build_mlm_shards.*--overwrite"),
    ("shards: --tokenizer missing", lambda t: [SH, "--corpus", f"{t}/corpus", "--tokenizer", f"{t}/nope",
                                               "--out", f"{t}/s2"], 1, "no tokenizer.json there"),
    ("shards: --tokenizer damaged", lambda t: [SH, "--corpus", f"{t}/corpus", "--tokenizer", f"{t}/bad-tokenizer",
                                               "--out", f"{t}/s2"], 1,
     "bad-tokenizer/tokenizer.json: not a tokenizers"),
    ("shards: --seq-len 1", lambda t: [*SHARDS(t, f"{t}/s2")[:-4], "--seq-len", "1", "--out", f"{t}/s2"], 1,
     "seq_len 1: a record needs"),
    ("shards: --corpus missing", lambda t: [SH, "--corpus", f"{t}/nope", "--tokenizer", f"{t}/tokenizer",
                                            "--out", f"{t}/s2"], 1, "nope: no such corpus file"),
    ("shards: --corpus of an unknown type", lambda t: [SH, "--corpus", f"{t}/ids.bin", "--tokenizer",
                                                       f"{t}/tokenizer", "--out", f"{t}/s2"], 1,
     "unknown corpus file type"),
    ("shards: --validation-fraction 1.5", lambda t: SHARDS(t, f"{t}/s2", "--validation-fraction", "1.5"), 1,
     "validation_fraction"),
    ("shards: --num-shards 0", lambda t: SHARDS(t, f"{t}/s2", "--num-shards", "0"), 1, "num_shards >= 1"),
    # --- data_prep.train_tokenizer ---
    ("tokenizer: --vocab-size 0", lambda t: [TT, "--corpus", f"{t}/corpus", "--vocab-size", "0", "--out",
                                             f"{t}/t2"], 1, "--vocab-size 0: too small.*at least 109"),
    ("tokenizer: --vocab-size -5", lambda t: [TT, "--corpus", f"{t}/corpus", "--vocab-size", "-5", "--out",
                                              f"{t}/t2"], 1, "--vocab-size -5: too small"),
    ("tokenizer: --out equals --corpus", lambda t: TOK(t, f"{t}/corpus"), 1, NOT_WRITTEN),
    ("tokenizer: earlier tokenizer, no --overwrite", lambda t: TOK(t, f"{t}/tokenizer"), 1,
     "earlier output of train_tokenizer.*--overwrite"),
    ("tokenizer: --out is the shards", lambda t: TOK(t, f"{t}/shards"), 1, "output of build_mlm_shards"),
    ("tokenizer: --out is a plain file", lambda t: TOK(t, f"{t}/plain_file"), 1, "is a file, not a folder"),
    ("tokenizer: --corpus an empty folder", lambda t: [TT, "--corpus", f"{t}/empty_dir", "--vocab-size", "300",
                                                       "--out", f"{t}/t2"], 1, "empty_dir: directory holds no corpus"),
    ("tokenizer: --validation-fraction 2", lambda t: TOK(t, f"{t}/t2", "--validation-fraction", "2"), 1,
     "--validation-fraction 2.0: must be in"),
    # --- data_prep.arxiv_metadata ---
    ("metadata: --snapshot missing", lambda t: [META, "--snapshot", f"{t}/nope.json.gz", "--out", f"{t}/m"], 1,
     "nope.json.gz: no such file"),
    ("metadata: empty snapshot", lambda t: [META, "--snapshot", f"{t}/empty.jsonl.gz", "--out", f"{t}/m",
                                            "--quiet"], 1, "no physics paper in the snapshot"),
    ("metadata: --out is a plain file", lambda t: [META, "--snapshot", f"{t}/meta.jsonl.gz", "--out",
                                                   f"{t}/plain_file"], 1, "is a file, not a folder"),
    ("metadata: --out is a user's folder", lambda t: [META, "--snapshot", f"{t}/meta.jsonl.gz", "--out",
                                                      f"{t}/other"], 1, NOT_WRITTEN),
    # --- data_prep.build_corpus ---
    ("corpus: --out is the shards", lambda t: [CORP, "--meta", f"{t}/meta", "--out", f"{t}/shards"], 1,
     "output of build_mlm_shards"),
    ("corpus: --meta not a metadata folder", lambda t: [CORP, "--meta", f"{t}/corpus", "--out", f"{t}/c2"], 1,
     "--meta .*corpus: not a finished data_prep.arxiv_metadata folder"),
    # --- data_prep.pairs ---
    ("pairs: category --num-pairs 0", lambda t: PAIRS(t, f"{t}/p2", "--num-pairs", "0"), 2,
     "--num-pairs 0: must be >= 1"),
    ("pairs: category --num-pairs -5", lambda t: PAIRS(t, f"{t}/p2", "--num-pairs", "-5"), 2,
     "--num-pairs -5: must be >= 1"),
    ("pairs: citation --num-pairs 0", lambda t: [CIT, "citation", "--source", "paperscape", f"{t}/other",
                                                 "--out", f"{t}/p2", "--num-pairs", "0"], 2, "must be >= 1"),
    ("pairs: --meta missing", lambda t: [CAT, "category", "--meta", f"{t}/nope.gz", "--out", f"{t}/p2"], 1,
     "nope.gz: no such file"),
    ("pairs: --exclude is a folder", lambda t: PAIRS(t, f"{t}/p2", "--exclude", f"{t}/other"), 1,
     "--exclude .*other: not a file"),
    ("pairs: --exclude is binary", lambda t: PAIRS(t, f"{t}/p2", "--exclude", f"{t}/ids.bin"), 1,
     "ids.bin:1: not UTF-8"),
    ("pairs: --out is a user's folder", lambda t: PAIRS(t, f"{t}/other"), 1, NOT_WRITTEN),
    ("pairs: --out is the shards", lambda t: PAIRS(t, f"{t}/shards"), 1, "output of build_mlm_shards"),
    ("pairs: earlier pair set, other settings", lambda t: PAIRS(t, f"{t}/pairs", "--num-pairs", "20"), 1,
     "earlier output of pairs category.*--overwrite"),
    # --- eval.build_sets ---
    ("build_sets: --metadata missing", lambda t: SETS(t, f"{t}/nope.gz", f"{t}/e"), 1, "nope.gz: no such file"),
    ("build_sets: --metadata a folder without snapshots", lambda t: SETS(t, f"{t}/other", f"{t}/e"), 1,
     "holds no \\*.jsonl"),
    ("build_sets: --metadata empty", lambda t: SETS(t, f"{t}/empty.jsonl.gz", f"{t}/e"), 1,
     "no usable physics paper"),
    ("build_sets: --out is a user's folder", lambda t: SETS(t, f"{t}/meta.jsonl.gz", f"{t}/other"), 1, NOT_WRITTEN),
    ("build_sets: --clustering-per-class 0", lambda t: [*SETS(t, f"{t}/meta.jsonl.gz", f"{t}/e"),
                                                        "--clustering-per-class", "0"], 1, "sizes must be >= 1"),
    ("build_sets: --clustering-years backwards", lambda t: SETS(t, f"{t}/meta.jsonl.gz", f"{t}/e",
                                                                "--clustering-years", "2019-2015"), 1,
     "first year is after the last"),
    # --- physbert_jax.encode ---
    ("encode: --out is a folder", lambda t: ENCODE(t, f"{t}/bad.jsonl", f"{t}/other"), 1, "name a .npy file"),
    ("encode: --out without .npy", lambda t: ENCODE(t, f"{t}/bad.jsonl", f"{t}/emb"), 1, "would write .*emb.npy"),
    ("encode: invalid JSON line", lambda t: ENCODE(t, f"{t}/bad.jsonl", f"{t}/e.npy"), 1,
     "bad.jsonl:2: invalid JSON"),
    ("encode: not UTF-8", lambda t: ENCODE(t, f"{t}/latin1.txt", f"{t}/e.npy"), 1, "latin1.txt:1: not UTF-8"),
    ("encode: --max-length 0", lambda t: ENCODE(t, f"{t}/bad.jsonl", f"{t}/e.npy", "--max-length", "0"), 1,
     "--max-length 0"),
    ("encode: --step not a number", lambda t: ENCODE(t, f"{t}/bad.jsonl", f"{t}/e.npy", "--step", "x"), 1,
     "--step x"),
    ("encode: --input missing", lambda t: ENCODE(t, f"{t}/nope.txt", f"{t}/e.npy"), 1, "nope.txt: no such file"),
    # --- physbert_jax.convert, eval.run ---
    ("convert: truncated safetensors", lambda t: ["physbert_jax.convert", "from-hf", "--hf", f"{t}/bad-model",
                                                  "--out", f"{t}/imported"], 1,
     "bad-model/model.safetensors: not a readable safetensors file"),
    ("eval.run: truncated set file", lambda t: ["eval.run", "--model", "random", "--sets", f"{t}/bad-sets",
                                                "--tasks", "clustering", "--out", f"{t}/report"], 2,
     "clustering.jsonl.gz: truncated or corrupt gzip after line"),
    ("eval.run: --sets missing", lambda t: ["eval.run", "--model", "random", "--sets", f"{t}/nope", "--tasks",
                                            "clustering", "--out", f"{t}/report"], 2, "--sets .*nope: no such folder"),
    # --- physbert_jax.train ---
    ("train: --workdir is a file", lambda t: ["physbert_jax.train", "--config", "configs/mlm.py:tiny", "--workdir",
                                              f"{t}/plain_file"], 1, "is a file, not a folder"),
    ("train: negative learning rate", lambda t: ["physbert_jax.train", "--config", "configs/mlm.py:tiny",
                                                 "--workdir", f"{t}/run", f"--config.data.shards={t}/shards",
                                                 "--config.data.seq_len=64", "--config.optimizer.lr=-1e-4"], 1,
     r"config.optimizer.lr=-0.0001: out of range"),
]


@pytest.mark.parametrize("name,argv,rc,pattern", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(base, tmp_path, name, argv, rc, pattern):
  import re
  tree = tmp_path / "t"
  shutil.copytree(base, tree, symlinks=True)
  before = tree_state(tree)
  r = run(argv(str(tree)))
  out = r.stdout + r.stderr
  assert r.returncode == rc, f"{name}: exit {r.returncode}\n{out[-3000:]}"
  assert re.search(pattern, out, re.S), f"{name}: message does not match {pattern!r}\n{out[-3000:]}"
  assert "Traceback" not in out, f"{name}: a traceback reached the user\n{out[-3000:]}"
  after = tree_state(tree)
  changed = sorted(k for k in before if after.get(k) != before[k])
  assert not changed, f"{name}: changed or removed {changed}"


def test_table_size():
  """The issue asks for at least 40 kinds of bad input and fault across the programs."""
  assert len(ROWS) >= 40
  assert len({r[0] for r in ROWS}) == len(ROWS)
