"""build_corpus on the real unarXive full text and sample abstracts; array-mode MLM shards read by the training
input pipeline; text cleanup; restart."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from data_prep import arxiv_metadata, build_corpus, build_mlm_shards, demo, stage, unarxive
from data_prep.train_tokenizer import train_tokenizer
from physbert_jax import records
from clitools import DATA, needs_data

UNARXIVE = os.path.join(DATA, "arxiv", "fulltext", "unarXive_data_sample.tar.gz")
SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(UNARXIVE, SNAPSHOT)


def test_clean_text():
  assert build_corpus.clean_text("ﬁeld  of\u00a0a \x07spin\r\n\n\n  chain ") == "field of a spin\nchain"
  assert build_corpus.clean_text("$\\alpha_s$ ～ 0.1") == "$\\alpha_s$ ~ 0.1"  # NFKC; LaTeX kept
  assert build_corpus.clean_abstract("A\n  title", "  Line one\n  line two.\n") == "A title\nLine one line two."


@needs_data
def test_unarxive_full_text_and_abstract_fallback_through_the_corpus(tmp_path):
  u = str(tmp_path / "u")
  unarxive.main(["--src", UNARXIVE, "--out", u, "--quiet"])
  # Metadata: the 49 unarXive papers plus 200 sample abstracts, one of them twice.
  with gzip.open(SNAPSHOT, "rb") as f:
    sample = [next(f) for _ in range(200)]
  snap = tmp_path / "snap.jsonl.gz"
  with gzip.open(snap, "wb") as f:
    f.write(gzip.decompress(open(os.path.join(u, "metadata.jsonl.gz"), "rb").read()))
    f.writelines(sample + sample[:1])
  meta, corpus = str(tmp_path / "meta"), str(tmp_path / "corpus")
  arxiv_metadata.main(["--snapshot", str(snap), "--out", meta, "--num-shards", "2", "--quiet"])
  build_corpus.main(["--meta", meta, "--text", os.path.join(u, "text"), "--out", corpus, "--num-shards", "3",
                     "--quiet"])
  docs = [json.loads(l) for k in range(3) for l in gzip.open(build_corpus.corpus_path(corpus, k, 3), "rt")]
  ids = [d["id"] for d in docs]
  assert len(ids) == len(set(ids))
  full = [d for d in docs if d["source"] == "fulltext"]
  assert len(full) == 27 and all(d["id"].startswith("2212.") for d in full)  # The physics unarXive papers.
  assert all(len(d["text"]) > 1000 and not any(f"{{{{{k}:" in d["text"] for k in ("formula", "cite", "figure"))
             for d in full)  # Placeholders resolved or dropped, also in section headings.
  assert any("$" in d["text"] for d in full)  # Formulas kept as LaTeX.
  abstracts = [d for d in docs if d["source"] == "abstract"]
  assert abstracts and all("\n  " not in d["text"] for d in abstracts)
  assert set(docs[0]) == {"id", "categories", "source", "text"}
  report = stage.read_json(os.path.join(corpus, "report.json"))
  assert report["counts"]["documents_fulltext"] == 27
  assert report["counts"]["abstract_fallback_reasons"] == {"no text": len(abstracts)}
  assert report["skipped"]["by_reason"] == {"text without physics metadata": 22}
  meta_report = stage.read_json(os.path.join(meta, "report.json"))
  assert meta_report["skipped"]["by_reason"] == {"duplicate id": 1}


def test_array_mode_shards_are_complete_restartable_and_readable(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  with open(os.path.join(demo.DEMO_CORPUS, "abstracts.jsonl")) as f:
    lines = f.readlines()
  for k in range(3):
    with gzip.open(corpus / f"corpus-{k:05d}-of-00003.jsonl.gz", "wt") as f:
      f.writelines(lines[k::3])
  (corpus / "corpus-00001-of-00003.jsonl.gz").write_bytes(
      (corpus / "corpus-00001-of-00003.jsonl.gz").read_bytes()[:-30])  # truncated gzip
  tok = train_tokenizer([str(corpus)], vocab_size=1500, out_dir=str(tmp_path / "tok"), verbose=False)
  out = str(tmp_path / "mlm")
  args = ["--corpus", str(corpus), "--tokenizer", tok, "--seq-len", "32", "--out", out, "--num-shards", "3",
          "--validation-fraction", "0.2"]
  for k in (0, 2):
    build_mlm_shards.main(args + ["--shard-index", str(k)])
  with pytest.raises(SystemExit, match="indices 1"):      # one line naming the missing part, no traceback
    build_mlm_shards.main(args + ["--merge"])
  build_mlm_shards.main(args + ["--shard-index", "1"])
  build_mlm_shards.main(args + ["--merge"])
  manifest = records.read_manifest(out)
  assert len(manifest["splits"]["train"]["shards"]) == 3
  report = stage.read_json(os.path.join(out, "report.json"))
  assert report["skipped"]["by_reason"] == {"truncated or corrupt gzip": 1}
  docs = report["counts"]["documents"]
  assert 40 < docs["train"] + docs["validation"] < 60  # The truncated part lost its tail, nothing else.
  before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
  os.remove(os.path.join(out, "train-00001-of-00003.array_record"))  # A lost output: the part is redone.
  build_mlm_shards.main(args + ["--shard-index", "1"])
  build_mlm_shards.main(args + ["--merge"])
  assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before

  from physbert_jax.input_pipeline import mlm_batches
  batches, _ = mlm_batches(out, split="train", seq_len=32, global_batch_size=8, seed=0)
  batch = batches[0]
  assert batch["input_ids"].shape == (8, 32) and np.all(batch["input_ids"][:, 0] == 2)
