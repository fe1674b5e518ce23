"""Reference tests of the encoder: all-MiniLM-L6-v2 imported with from-hf against SentenceTransformer.encode on real
arXiv abstracts; batching, order, dtype, fingerprints, the CLI and its errors.

Data from clitools.DATA ($PHYSBERT_DATA, else ../shared/data); tests that need it are skipped with the reason
when absent.
The 1,000-abstract parity run takes ~1.5 min on 2 shared cores and is marked slow; the default run checks 48.
"""

import gzip
import json
import os
import shutil

import numpy as np
import pytest

from physbert_jax import convert
from physbert_jax.encode import BUCKETS, Encoder, main
from physbert_jax.pair_pipeline import bucket_for, bucket_lengths
from clitools import DATA, needs_data

ARXIV = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(ARXIV)


def abstracts(n: int) -> list[str]:
  out = []
  with gzip.open(ARXIV, "rt", encoding="utf-8") as f:
    for line in f:
      out.append(json.loads(line)["abstract"])
      if len(out) == n:
        return out
  return out


@pytest.fixture(scope="module")
def imported(minilm, tmp_path_factory):
  return convert.import_hf(minilm, str(tmp_path_factory.mktemp("minilm") / "run"))


@pytest.fixture(scope="module")
def encoder(imported):
  return Encoder.load(imported)


def _parity(minilm, encoder, n):
  st = pytest.importorskip("sentence_transformers")
  texts = abstracts(n)
  assert len(texts) == n
  ours = encoder.encode(texts, show_progress=False)
  ref = st.SentenceTransformer(minilm, device="cpu").encode(texts, batch_size=64)
  assert ours.shape == ref.shape == (n, 384) and ours.dtype == np.float32
  cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
  worst = int(cos.argmin())
  assert cos.min() >= 0.99999, f"abstract {worst}: cosine {cos[worst]}"
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)   # the folder's Normalize module
  return texts


@needs_data
def test_minilm_parity_on_abstracts(minilm, encoder):
  assert encoder.max_length == 256 and encoder.pooling == "mean" and encoder.normalize   # what the folder declares
  texts = _parity(minilm, encoder, 48)
  lengths = [len(e.ids) for e in encoder._tokenizer.encode_batch(texts)]
  assert max(lengths) == 256 and min(lengths) < 128   # truncated ones and short ones both covered


@needs_data
@pytest.mark.slow
def test_minilm_parity_on_1000_abstracts(minilm, encoder):
  _parity(minilm, encoder, 1000)


@needs_data
def test_batching_does_not_change_embeddings(encoder):
  texts = [t[:300] for t in abstracts(5)[::-1]] + ["", "Short.", "Graphene."]
  full = encoder.encode(texts, batch_size=64, show_progress=False)
  small = encoder.encode(texts, batch_size=3, show_progress=False)     # other buckets, padded tail batch
  np.testing.assert_allclose(small, full, atol=2e-6)
  one = np.stack([encoder.encode([t], show_progress=False)[0] for t in texts[-3:]])
  np.testing.assert_allclose(one, full[-3:], atol=2e-6)                  # and input order is kept
  assert encoder.encode([], show_progress=False).shape == (0, 384)


def test_bucket_lengths():
  bucket_length = lambda n, max_length: bucket_for(n, bucket_lengths(max_length, BUCKETS))   # what encode pads to
  assert [bucket_length(n, 256) for n in (1, 16, 17, 250, 256)] == [16, 16, 32, 256, 256]
  assert [bucket_length(n, 512) for n in (257, 500)] == [288, 512]
  assert bucket_length(100, 100) == 100      # a max length that is not a bucket is its own


def test_fingerprint_identifies_weights_and_settings(minilm, imported, encoder):
  same = Encoder.load(minilm)                 # the HF folder itself: same weights, tokenizer, settings
  assert same.fingerprint == encoder.fingerprint and same.name == "model"
  assert Encoder.load(imported, pooling="cls").fingerprint != encoder.fingerprint
  assert Encoder.load(imported, max_length=128).fingerprint != encoder.fingerprint
  assert Encoder.load(imported, dtype="bfloat16").fingerprint != encoder.fingerprint
  assert Encoder.load(imported, max_length=1024).max_length == 256      # never past what the folder declares


def test_bfloat16_is_close(imported, encoder):
  texts = ["Quantum error correction with surface codes.", "Turbulent convection in the solar interior."]
  bf16 = Encoder.load(imported, dtype="bfloat16").encode(texts, show_progress=False)
  assert bf16.dtype == np.float32
  cos = (bf16 * encoder.encode(texts, show_progress=False)).sum(1)   # both unit length
  assert cos.min() > 0.99


def test_cli_txt_and_jsonl(imported, encoder, tmp_path):
  texts = ["Neutrino oscillations at long baselines.", "Topological insulators.", ""]
  (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
  with gzip.open(tmp_path / "t.jsonl.gz", "wt") as f:
    f.writelines(json.dumps({"abstract": t}) + "\n" for t in texts)
  expected = encoder.encode(texts, show_progress=False)
  main(["--model", imported, "--input", str(tmp_path / "t.txt"), "--out", str(tmp_path / "a.npy")])
  main(["--model", imported, "--input", str(tmp_path / "t.jsonl.gz"), "--field", "abstract", "--out",
        str(tmp_path / "b.npy"), "--batch-size", "2"])
  np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected, atol=2e-6)
  np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected, atol=2e-6)
  with pytest.raises(SystemExit, match=r"t\.jsonl\.gz:1: no string field 'text'"):
    main(["--model", imported, "--input", str(tmp_path / "t.jsonl.gz"), "--out", str(tmp_path / "c.npy")])


def test_errors_name_the_path(minilm, imported, tmp_path, encoder):
  with pytest.raises(TypeError, match="wrap a single text"):
    encoder.encode("one text")
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    Encoder.load("sentence-transformers/all-MiniLM-L6-v2")
  dense = tmp_path / "with-dense"
  shutil.copytree(minilm, dense)
  with open(dense / "modules.json", "w") as f:
    json.dump([{"name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}], f)
  with pytest.raises(ValueError, match=r"with-dense/modules\.json: module 'sentence_transformers\.models\.Dense'"):
    Encoder.load(str(dense))
  no_ckpt = tmp_path / "fresh-run"
  shutil.copytree(imported, no_ckpt,
                  ignore=shutil.ignore_patterns("checkpoints"))
  os.makedirs(no_ckpt / "checkpoints")
  with pytest.raises(FileNotFoundError, match=f"{no_ckpt}: no checkpoint"):
    Encoder.load(str(no_ckpt))
