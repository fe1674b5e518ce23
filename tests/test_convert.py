"""Reference tests of convert: a trained `tiny` run -> to-hf -> transformers / sentence-transformers, and back.

One short training run (2 steps of configs/mlm.py:tiny, ~20 s on CPU) gives a real workdir: config.json, tokenizer/,
a TrainState checkpoint with the MLM head and an optimizer state.
"""

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

from physbert_jax import convert, hf_names  # noqa: E402
from physbert_jax.encode import Encoder  # noqa: E402

TEXTS = ["Superconductivity in twisted bilayer graphene near the magic angle.",
         "We measure the branching fraction of B -> K* mu mu with the LHCb detector.",
         "Dark matter halos", "", "A " * 200]   # short, empty, and one truncated at the model's 128 positions


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  from configs import mlm
  from physbert_jax import train
  root = tmp_path_factory.mktemp("tiny")
  c = mlm.get_config("tiny")
  c.total_steps = 2
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  c.eval_batches = 0
  c.data.cache_dir = str(root / "cache")
  train.train_and_evaluate(c, str(root / "run"))
  return str(root / "run")


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("export") / "physbert-tiny")
  convert.main(["to-hf", "--workdir", tiny_run, "--out", out])
  return out


def _flat(params):
  return hf_names.flatten(params)


def test_export_folder_is_complete(exported):
  names = set(os.listdir(exported))
  assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
          "special_tokens_map.json", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
          "README.md", "1_Pooling", "encoder.json"} <= names
  from safetensors import safe_open
  with safe_open(os.path.join(exported, "model.safetensors"), framework="np") as f:
    assert f.metadata() == {"format": "pt"}
    assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(np.float32)}
  with open(os.path.join(exported, "tokenizer_config.json")) as f:
    assert json.load(f)["model_max_length"] == 128
  with open(os.path.join(exported, "1_Pooling", "config.json")) as f:
    pooling = json.load(f)
  # The pre-5.4 keys, which sentence-transformers 5.x reads.
  assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
  assert pooling["word_embedding_dimension"] == 128
  with open(os.path.join(exported, "modules.json")) as f:
    assert [m["type"] for m in json.load(f)] == ["sentence_transformers.models.Transformer",
                                                 "sentence_transformers.models.Pooling"]
  card = open(os.path.join(exported, "README.md")).read()
  assert "library_name: sentence-transformers" in card and '"variant": "tiny"' in card
  assert "End of training (summary.json)" in card


def test_one_encoder_record_written_by_train_and_export(tiny_run, exported, tmp_path):
  """encoder.json says how the run encodes; the export carries the same record; a workdir without one is refused
  with the fix, not read with guessed settings."""
  record = {"pooling": "mean", "max_length": 128, "normalize": False, "lowercase": False}
  for folder in (tiny_run, exported):
    with open(os.path.join(folder, "encoder.json")) as f:
      assert json.load(f) == record
  assert convert.load(tiny_run).encoder == convert.EncoderSettings(**record)
  old = tmp_path / "old-run"
  shutil.copytree(tiny_run, old)
  os.remove(old / "encoder.json")
  with pytest.raises(FileNotFoundError, match="encoder.json is missing .*rerun the run's train command"):
    convert.load(str(old))


def test_transformers_models_match_ours(tiny_run, exported):
  import jax.numpy as jnp
  from physbert_jax.model import Bert
  w = convert.load(tiny_run)
  assert "cls" in w.params                                  # the MLM run keeps its head -> BertForMaskedLM
  tok = transformers.AutoTokenizer.from_pretrained(exported)
  batch = tok(TEXTS[:3], padding=True, truncation=True, return_tensors="pt")
  mlm = transformers.BertForMaskedLM.from_pretrained(exported).eval()
  base = transformers.AutoModel.from_pretrained(exported).eval()
  assert isinstance(base, transformers.BertModel)
  with torch.no_grad():
    ref = mlm(**batch, output_hidden_states=True)
    ref_base = base(**batch).last_hidden_state.numpy()
  ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
  positions = np.tile(np.arange(ids.shape[1]), (len(ids), 1))
  hidden, logits = Bert(w.cfg).apply({"params": w.params}, jnp.asarray(ids, jnp.int32), jnp.asarray(mask),
                                     masked_positions=jnp.asarray(positions, jnp.int32))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(hidden)[real], ref.hidden_states[-1].numpy()[real], atol=1e-5)
  np.testing.assert_allclose(np.asarray(hidden)[real], ref_base[real], atol=1e-5)
  np.testing.assert_allclose(np.asarray(logits)[real], ref.logits.numpy()[real], atol=1e-4)


def test_sentence_transformers_equals_encoder(tiny_run, exported):
  st = sentence_transformers.SentenceTransformer(exported, device="cpu")
  assert st.max_seq_length == 128
  ref = st.encode(TEXTS, batch_size=2)
  from_run, from_export = Encoder.load(tiny_run), Encoder.load(exported)
  np.testing.assert_allclose(from_run.encode(TEXTS, show_progress=False), ref, atol=1e-5)
  np.testing.assert_allclose(from_export.encode(TEXTS, show_progress=False), ref, atol=1e-5)
  assert from_export.fingerprint == from_run.fingerprint   # same weights, same embeddings: one cache entry


def test_from_hf_of_to_hf_is_exact(tiny_run, exported, tmp_path):
  import jax
  from physbert_jax import checkpointing
  out = str(tmp_path / "imported")
  convert.main(["from-hf", "--hf", exported, "--out", out])
  original, back = _flat(convert.load(tiny_run).params), _flat(convert.load(out).params)
  assert original.keys() == back.keys()
  for k in original:
    np.testing.assert_array_equal(back[k], original[k], err_msg="/".join(k))
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["model"]["hidden_size"] == 128 and "pooling" not in config    # how it encodes: encoder.json alone
  with open(os.path.join(out, "encoder.json")) as f:
    assert json.load(f) == {"pooling": "mean", "max_length": 128, "normalize": False, "lowercase": False}
  # The import tells the truth: no training settings; its re-export's model card says where it came from.
  assert config["variant"] == "imported" and config["imported_from"] == os.path.abspath(exported)
  assert "optimizer" not in config and "data" not in config
  convert.main(["to-hf", "--workdir", out, "--out", str(tmp_path / "again")])
  card = open(tmp_path / "again" / "README.md").read()
  assert f"imported from `{os.path.abspath(exported)}`" in card and "| lr |" not in card
  # What `train` does with config.init_from=out.
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), convert.load(tiny_run).params)
  params, step = checkpointing.restore_params(out, abstract)
  assert step == 0
  np.testing.assert_array_equal(np.asarray(params["embeddings"]["word_embeddings"]["embedding"]),
                                original[("embeddings", "word_embeddings", "embedding")])


def test_mean_without_special_tokens_is_stated(tiny_run, tmp_path):
  out = str(tmp_path / "nospecial")
  w = convert.read_workdir(tiny_run)
  with pytest.warns(UserWarning, match="cannot be expressed in sentence-transformers"):
    convert.write_hf_folder(w, out, pooling="mean_no_special", workdir=tiny_run)
  assert "Pooling caveat" in open(os.path.join(out, "README.md")).read()
  enc = Encoder.load(out)
  assert enc.pooling == "mean_no_special"             # read back from encoder.json
  ours = enc.encode(TEXTS[:3], show_progress=False)
  st = sentence_transformers.SentenceTransformer(out, device="cpu").encode(TEXTS[:3])
  assert np.abs(ours - st).max() > 1e-3               # ST really pools [CLS]/[SEP] too: the caveat is real
  # By hand: mean over the tokens between [CLS] and [SEP] of transformers' hidden states.
  tok = transformers.AutoTokenizer.from_pretrained(out)
  model = transformers.AutoModel.from_pretrained(out).eval()
  for text, emb in zip(TEXTS[:3], ours):
    with torch.no_grad():
      h = model(**tok([text], return_tensors="pt")).last_hidden_state[0].numpy()
    np.testing.assert_allclose(emb, h[1:-1].mean(0), atol=1e-5)


# ---- errors ------------------------------------------------------------------------------------------------------

def _write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def test_non_bert_architecture_is_refused(tmp_path, exported):
  folder = tmp_path / "roberta"
  cfg = json.load(open(os.path.join(exported, "config.json")))
  _write_json(str(folder / "config.json"), {**cfg, "model_type": "roberta"})
  with pytest.raises(ValueError, match=r"roberta/config\.json.*'roberta' is not 'bert'"):
    convert.load(str(folder))


def test_pickled_checkpoint_is_never_loaded(tmp_path, exported):
  folder = tmp_path / "pickled"
  _write_json(str(folder / "config.json"), json.load(open(os.path.join(exported, "config.json"))))
  (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
  with pytest.raises(FileNotFoundError, match=r"no model\.safetensors; found pytorch_model\.bin, which is not read"):
    convert.load(str(folder))


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, exported):
  import shutil
  folder = tmp_path / "mismatch"
  shutil.copytree(exported, folder)
  cfg = json.load(open(folder / "config.json"))
  _write_json(str(folder / "config.json"), {**cfg, "intermediate_size": 256})
  with pytest.raises(ValueError, match=r"intermediate\.dense\.(weight|bias)' has shape \(512.*needs \(256"):
    convert.load(str(folder))


def test_missing_checkpoint_and_busy_out(tmp_path, tiny_run, exported):
  empty = tmp_path / "run-without-checkpoint"
  _write_json(str(empty / "config.json"), json.load(open(os.path.join(tiny_run, "config.json"))))
  with pytest.raises(FileNotFoundError, match=f"{empty}: no checkpoint"):
    Encoder.load(str(empty))
  with pytest.raises(FileNotFoundError, match="no checkpoint for step 7; it has steps \\[2\\]"):
    convert.read_workdir(tiny_run, step=7)
  with pytest.raises(SystemExit, match="holds an earlier output of convert to-hf"):
    convert.main(["to-hf", "--workdir", tiny_run, "--out", exported])
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    convert.load(str(tmp_path / "bert-base-uncased"))
