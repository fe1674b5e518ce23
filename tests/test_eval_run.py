"""eval.run as a pipeline, with a deterministic bag-of-words encoder standing in for a model (no weights needed):
report files, skipped tasks, the embedding cache, and clear errors on bad input."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest

from eval import run
from physbert_jax.evaluation import sets, tasks


class BagOfWords:
  """Hashed word counts: deterministic, fast, and similar texts get similar vectors."""
  name = "bow"

  def __init__(self, dims: int = 64):
    self.calls, self.dims, self.fingerprint = 0, dims, f"bow-v1-{dims}"

  def encode(self, texts, batch_size=64, show_progress=True):
    self.calls += 1
    out = np.zeros((len(texts), self.dims), np.float32)
    for i, t in enumerate(texts):
      for w in t.lower().split():
        out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dims] += 1
    return out


TOPICS = {"astro-ph": "galaxy star redshift cosmology halo", "hep": "quark gluon collider boson lattice",
          "cond-mat": "phonon lattice superconductor spin electron"}


def _doc(topic, i):
  words = TOPICS[topic].split()
  return " ".join(words[(i + k) % len(words)] for k in range(6)) + f" paper{i}"


@pytest.fixture
def sets_dir(tmp_path):
  d = tmp_path / "sets"
  lab = [{"id": f"{t}/{i}", "text": _doc(t, i), "label": t} for t in TOPICS for i in range(20)]
  sets.write_rows(str(d / sets.CLUSTERING), lab)
  sets.write_rows(str(d / sets.subdomain_file("hep")),
                  [{"id": f"h{i}", "text": _doc("hep", i) + (" quark" if i % 2 else " lattice"),
                    "label": "hep-ph" if i % 2 else "hep-lat"} for i in range(20)])
  pairs = [{"id1": f"a{i}", "id2": f"b{i}", "text1": _doc("hep", i), "text2": _doc("hep", i + 1), "label": 1}
           for i in range(10)]
  pairs += [{"id1": f"a{i}", "id2": f"c{i}", "text1": _doc("hep", i), "text2": _doc("astro-ph", i), "label": 0}
            for i in range(10)]
  sets.write_rows(str(d / sets.CITATION), pairs)
  sets.write_rows(str(d / sets.RETRIEVAL_QUERIES),
                  [{"id": r["id"], "text": r["text"].split(" paper")[0] + f" paper{i % 20}", "relevant": [r["id"]]}
                   for i, r in enumerate(lab)])
  sets.write_rows(str(d / sets.RETRIEVAL_CORPUS), [{"id": r["id"], "text": r["text"]} for r in lab])
  (d / sets.MANIFEST).write_text(json.dumps({"seed": 7, "capped": ["subdomain eval: cond-mat has 0 < 1000"]}))
  return d


def best_threshold_accuracy(sets_dir, enc) -> float:
  """The citation task by brute force: cosine of each pair, every cut between the sorted scores tried."""
  rows = sets.load_rows(str(sets_dir / sets.CITATION), "pairs")
  a, b = (enc.encode([r[k] for r in rows]) for k in ("text1", "text2"))
  cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  labels = np.array([r["label"] for r in rows]) == 1
  return max(float(np.mean((cos > t) == labels)) for t in [-np.inf, *cos])


@pytest.mark.parametrize("dims", [2, 64])
def test_citation_accuracy_is_the_best_threshold_by_brute_force(sets_dir, tmp_path, dims):
  ctx = tasks.Context(str(sets_dir), str(tmp_path / "embeddings"))
  expected = best_threshold_accuracy(sets_dir, BagOfWords(dims))
  assert tasks.citation(ctx, BagOfWords(dims))["accuracy"] == pytest.approx(expected)
  assert expected < 1 if dims == 2 else expected == 1   # 2 hashed dimensions blur the topics; 64 separate them


def test_report_files_skips_and_cache(sets_dir, tmp_path):
  out = tmp_path / "report"
  ctx = tasks.Context(str(sets_dir), str(out / "embeddings"))
  enc = BagOfWords()
  rep = run.evaluate([("fake/path", enc)], list(tasks.TASKS), ctx, str(out), log=lambda *_: None)
  res = rep["models"][0]["tasks"]
  assert res["clustering"]["v_measure"] > 0.5 and res["clustering"]["k"] == 3
  assert res["citation"]["accuracy"] == pytest.approx(best_threshold_accuracy(sets_dir, BagOfWords()))
  assert res["retrieval"]["ndcg@10"] > 0.3
  assert "not found" in res["subdomain-cond-mat"]["skipped"] and "main" in res["subdomain-hep"]
  saved = json.loads((out / "results.json").read_text())
  assert saved["sets"]["seed"] == 7 and saved["versions"]["numpy"] == np.__version__
  md = (out / "table.md").read_text()
  assert "| bow |" in md and "skipped" in md and "Information retrieval (nDCG@10)" in md
  rows = list(csv.DictReader(open(out / "table.csv")))
  assert float(rows[0]["clustering"]) == pytest.approx(100 * res["clustering"]["v_measure"], abs=1e-3)
  assert rows[0]["avg"] and rows[0]["subdomain_avg"] == ""  # a skipped subdomain leaves no average
  assert (out / "pca-bow.png").stat().st_size > 1000
  calls = enc.calls
  run.evaluate([("fake/path", enc)], list(tasks.TASKS), ctx, str(out), log=lambda *_: None)
  assert enc.calls == calls  # every set came from the cache


def test_citation_without_data_is_skipped_with_reason(sets_dir, tmp_path):
  os.remove(sets_dir / sets.CITATION)
  (sets_dir / sets.MANIFEST).write_text(json.dumps(
      {"capped": ["citation: no --citations given; the citation set is not built"]}))
  ctx = tasks.Context(str(sets_dir), str(tmp_path / "emb"))
  rep = run.evaluate([("x", BagOfWords())], ["clustering", "citation"], ctx, str(tmp_path / "r"),
                     log=lambda *_: None)
  assert rep["models"][0]["tasks"]["citation"]["skipped"].startswith("citation: no --citations given")
  assert "main" in rep["models"][0]["tasks"]["clustering"]
  assert "skipped" in (tmp_path / "r" / "table.md").read_text()


@pytest.mark.parametrize("bad, message", [
    ({"id": "x1", "text": "some abstract"}, "missing 'label'"),
    ({"id": "x1", "text": "", "label": "hep"}, "missing 'text'"),
])
def test_bad_set_file_names_file_and_line(sets_dir, tmp_path, capsys, bad, message):
  path = sets_dir / sets.CLUSTERING
  sets.write_rows(str(path), [{"id": "ok", "text": "fine", "label": "hep"}, bad])
  rc = run.main(["--model", str(tmp_path), "--sets", str(sets_dir), "--tasks", "clustering",
                 "--out", str(tmp_path / "r")])
  err = capsys.readouterr().err
  assert rc == 2 and str(path) in err and "line 2" in err and message in err


def test_empty_set_is_an_error_naming_the_file(sets_dir):
  path = sets_dir / sets.RETRIEVAL_CORPUS
  sets.write_rows(str(path), [])
  with pytest.raises(sets.SetError, match=f"{path}: no rows"):
    tasks.validate(tasks.Context(str(sets_dir), "unused"), "retrieval")


def test_non_bert_model_folder_is_an_error_naming_config(sets_dir, tmp_path, capsys):
  model = tmp_path / "gpt"
  model.mkdir()
  (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  rc = run.main(["--model", str(model), "--sets", str(sets_dir), "--out", str(tmp_path / "r")])
  err = capsys.readouterr().err
  assert rc == 2 and str(model / "config.json") in err and "not BERT-family" in err
  rc = run.main(["--model", str(tmp_path / "nowhere"), "--sets", str(sets_dir), "--out", str(tmp_path / "r")])
  assert rc == 2 and "model folder not found" in capsys.readouterr().err


def test_parse_tasks():
  assert run.parse_tasks("all") == list(tasks.TASKS)
  assert run.parse_tasks("clustering,subdomain") == ["clustering"] + [f"subdomain-{d}" for d in sets.SUBDOMAINS]
  with pytest.raises(SystemExit, match="unknown task 'nope'"):
    run.parse_tasks("nope")


def test_model_spec_and_chance_row():
  assert run.parse_model_spec("runs/x") == ("runs/x", None, None)
  assert run.parse_model_spec("runs/x@300#cls") == ("runs/x", 300, "cls")
  assert run.parse_model_spec("runs/x@best") == ("runs/x", "best", None)
  assert run.parse_model_spec("a@b/model#mean") == ("a@b/model", None, "mean")
  enc = run.load_encoder("random", None, 512, "float32")
  a, b = enc.encode(["x", "y"]), enc.encode(["x"])
  assert a.shape == (2, 384) and np.array_equal(a[0], b[0]) and not np.array_equal(a[0], a[1])


def test_clustering_split_by_trained_classes_and_knn(sets_dir, tmp_path):
  """With the classes the pairs teach, clustering is also scored on those and on the others apart (each equal to
  v_measure_folds on that subset), and 10-NN accuracy per class is reported; the report table shows them."""
  from physbert_jax.evaluation import scores as metrics
  enc = BagOfWords()
  ctx = tasks.Context(str(sets_dir), str(tmp_path / "cache"), seed=0, trained_classes=frozenset({"hep", "astro-ph",
                                                                                                 "gr-qc"}))
  out = tasks.clustering(ctx, enc)
  rows = list(sets.read_rows(str(sets_dir / sets.CLUSTERING), "labelled"))
  emb = enc.encode([r["text"] for r in rows])
  labels = np.array([r["label"] for r in rows])
  sel = np.isin(labels, ["hep", "astro-ph"])
  assert out["v_measure_trained"] == pytest.approx(metrics.v_measure_folds(emb[sel], labels[sel], 10, 0)["v_measure"])
  assert out["classes_trained"] == ["astro-ph", "hep"]
  assert "v_measure_untrained" not in out             # one class left: nothing to cluster
  knn = metrics.knn_accuracy(emb, labels)
  assert out["knn_accuracy"] == knn["knn_accuracy"] and out["knn_per_class"] == knn["knn_per_class"]
  report = {"tasks": ["clustering"], "models": [{"name": "bow", "path": "bow", "fingerprint": enc.fingerprint,
                                                "tasks": {"clustering": out}}],
            "sets": {"dir": str(sets_dir)}, "versions": {}, "command": ""}
  from eval import report as report_lib
  md = report_lib.markdown(report)
  assert "## Clustering by class" in md and "| hep * |" in md and "| cond-mat |" in md


def test_training_curves_figure(tmp_path):
  """A workdir's metrics.jsonl -> a PNG of its losses and validation metrics; a file without losses draws nothing."""
  from eval import report as report_lib
  from eval.run import workdir_of
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text("".join(json.dumps(r) + "\n" for r in [
      {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "val_clustering": 0.4, "val_mean": 0.5},
      {"step": 3, "loss": 1.2}, {"step": 4, "loss": 1.0, "val_clustering": 0.5, "val_mean": 0.6}]))
  png = tmp_path / "curves.png"
  assert report_lib.curves_figure(str(metrics), str(png), "run")
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  metrics.write_text(json.dumps({"step": 1, "val_mean": 0.5}) + "\n")
  assert not report_lib.curves_figure(str(metrics), str(tmp_path / "none.png"), "run")
  assert not (tmp_path / "none.png").exists()
  assert workdir_of("runs/x@best#cls") == workdir_of("runs/x@12") == workdir_of("runs/x") == "runs/x"
  assert workdir_of("folder@v2") == "folder@v2"
