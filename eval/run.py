"""Run the PhysBERT benchmark for one or more models and write the report.

    python -m eval.run --model runs/contrastive --model path/to/any-bert-or-st-folder \
        --sets evalsets/ --tasks all --out report/

--model takes our workdirs, exported folders and local Hugging Face / sentence-transformers BERT folders (all
through physbert_jax.encode.Encoder), with the pooling the folder declares; `PATH#POOLING` or --pooling overrides
it, `WORKDIR@STEP` picks a checkpoint, and `random` adds a chance-level row. --tasks: all, or a comma list of clustering, citation, retrieval, subdomain (= the three domains) and
subdomain-<domain>. Embeddings are cached under --cache by (model fingerprint, set file hash), so adding a model
to a report encodes only that model. Runs offline.

Writes --out/results.json, table.md, table.csv, pca-<model>.png (the paper's Figure 2) and, for a training
workdir, curves-<model>.png (its losses and validation metrics over steps). Exit status 2 with a
message naming the file for a malformed or empty set or a model folder that cannot be loaded; a task whose set
was not built is reported as skipped and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # evaluation never downloads: models are local folders
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from eval import report as report_lib  # noqa: E402
from physbert_jax.evaluation import sets, tasks  # noqa: E402


class ModelError(ValueError):
  """A model folder that cannot be evaluated; the message names the folder or file."""


def parse_tasks(spec: str) -> list[str]:
  if spec == "all":
    return list(tasks.TASKS)
  out = []
  for name in (s.strip() for s in spec.split(",") if s.strip()):
    expanded = [t for t in tasks.TASKS if t.startswith("subdomain-")] if name == "subdomain" else [name]
    for t in expanded:
      if t not in tasks.TASKS:
        raise SystemExit(f"--tasks: unknown task {t!r}; known: all, subdomain, {', '.join(tasks.TASKS)}")
      if t not in out:
        out.append(t)
  return out


def check_model_folder(path: str) -> None:
  """Fail early, naming the file, on folders Encoder cannot read: not a folder, or a non-BERT HF config."""
  if not os.path.isdir(path):
    raise ModelError(f"{path}: model folder not found")
  config = os.path.join(path, "config.json")
  if not os.path.exists(config):
    return  # our workdirs keep their config elsewhere; Encoder.load decides
  with open(config) as f:
    try:
      cfg = json.load(f)
    except json.JSONDecodeError as e:
      raise ModelError(f"{config}: not JSON ({e})") from None
  model_type = cfg.get("model_type")
  if model_type is not None and model_type != "bert":
    raise ModelError(f"{config}: model_type {model_type!r} is not BERT-family; eval runs BERT encoders "
                     "(bert: BERT, SciBERT, MiniLM, bge, E5, SPECTER2, PhysBERT)")


def parse_model_spec(spec: str) -> tuple[str, int | str | None, str | None]:
  """PATH[@STEP][#POOLING] -> (path, step, pooling). STEP: a checkpoint step of a workdir, or 'best'."""
  path, _, pooling = spec.partition("#")
  step = None
  head, at, tail = path.rpartition("@")
  if at and (tail.isdigit() or tail == "best"):
    path, step = head, int(tail) if tail.isdigit() else tail
  return path, step, pooling or None


class ChanceEncoder:
  """`--model random`: a random vector per distinct text, so each task's chance level sits in the table.

  Small sets inflate V-measure (few papers per cluster); this row shows by how much.
  """
  name = "random (chance)"
  fingerprint = "random-gaussian-384-v1"

  def encode(self, texts, batch_size=64, show_progress=True):
    import hashlib
    import numpy as np
    seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
    return np.stack([np.random.default_rng(s).standard_normal(384, np.float32) for s in seeds]) if seeds else \
        np.zeros((0, 384), np.float32)


def load_encoder(spec: str, pooling: str | None, max_length: int, dtype: str):
  if spec == "random":
    return ChanceEncoder()
  path, step, own_pooling = parse_model_spec(spec)
  check_model_folder(path)
  from physbert_jax.encode import Encoder  # here, so eval's library and tests do not need the model stack
  try:
    enc = Encoder.load(path, pooling=own_pooling or pooling, dtype=dtype, max_length=max_length, step=step)
  except (OSError, ValueError, KeyError) as e:
    raise ModelError(f"{path}: cannot load as an encoder: {e}") from e
  parts = os.path.abspath(path).split(os.sep)
  if parts[-1] in ("model", "exported", "hf", "st"):  # a generic folder name says nothing in a table
    enc.name = "/".join(parts[-2:]) + (f"@{step}" if step is not None else "")
  return enc


def workdir_of(spec: str) -> str:
  """The folder of a --model spec PATH[@STEP][#POOLING]."""
  path = spec.split("#")[0]
  head, at, step = path.rpartition("@")
  return head if at and (step.isdigit() or step == "best") else path


def sets_info(sets_dir: str) -> dict:
  manifest = sets.read_manifest(sets_dir)
  path = os.path.join(sets_dir, sets.MANIFEST)
  built = manifest.get("built", {})
  sizes = {}
  if built:
    sizes = {"clustering": sum(built["clustering"].values()),
             "citation pairs": built["citation"].get("positives", 0) + built["citation"].get("negatives", 0),
             "retrieval queries": built["retrieval_queries"],
             "subdomain eval": sum(built["subdomain_eval"].values())}
  return {"dir": os.path.abspath(sets_dir), "seed": manifest.get("seed"), "sizes": sizes,
          "manifest_sha256": sets.sha256_file(path) if os.path.exists(path) else None,
          "sources": manifest.get("sources", {}), "capped": manifest.get("capped", []),
          "retrieval_note": manifest.get("notes", {}).get("retrieval", "")}


def evaluate(encoders, task_names: list[str], ctx: tasks.Context, out: str, command: str = "",
             log=print, validate: bool = True) -> dict:
  """Every task for every encoder; the report is rewritten after each model so a crash keeps what finished."""
  for t in task_names if validate else ():
    tasks.validate(ctx, t)
  os.makedirs(out, exist_ok=True)
  report = {"command": command, "tasks": task_names, "seed": ctx.seed, "folds": ctx.folds,
            "sets": sets_info(ctx.sets_dir), "versions": report_lib.versions(), "models": []}
  names = set()
  for spec, encoder in encoders:
    name = encoder.name
    while name in names:
      name += "'"
    names.add(name)
    entry = {"name": name, "path": spec, "fingerprint": encoder.fingerprint, "tasks": {}}
    report["models"].append(entry)
    for t in task_names:
      t0 = time.time()
      try:
        entry["tasks"][t] = tasks.run(ctx, encoder, t)
        log(f"{name} {t}: {100 * entry['tasks'][t]['main']:.2f} ({time.time() - t0:.0f}s)")
      except tasks.TaskSkipped as e:
        entry["tasks"][t] = {"skipped": str(e)}
        log(f"{name} {t}: skipped: {e}")
      entry["tasks"][t]["seconds"] = round(time.time() - t0, 1)
    if "main" in entry["tasks"].get("clustering", {}):
      emb, labels = tasks.labelled_embeddings(ctx, encoder, sets.CLUSTERING)  # cached by the task
      figure = f"pca-{report_lib.slug(name)}.png"
      report_lib.pca_figure(emb, labels, os.path.join(out, figure), f"{name}: clustering set, PCA")
      entry["figure"] = figure
    metrics = os.path.join(workdir_of(spec), "metrics.jsonl")
    curves = f"curves-{report_lib.slug(name)}.png"
    if os.path.isfile(metrics) and report_lib.curves_figure(metrics, os.path.join(out, curves),
                                                            f"{name}: training curves"):
      entry["curves"] = curves
    report_lib.write(report, out)
  report_lib.write(report, out)
  return report


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", action="append", required=True,
                 help="PATH[@STEP][#POOLING]: a workdir (STEP: a checkpoint step or 'best'), an exported or "
                      "HF/ST folder; or 'random' for the chance row")
  p.add_argument("--sets", required=True, help="directory written by eval.build_sets")
  p.add_argument("--tasks", default="all")
  p.add_argument("--out", required=True)
  p.add_argument("--cache", help="embedding cache directory (default: OUT/embeddings)")
  p.add_argument("--pooling", help="pooling for every model (default: what each folder declares)")
  p.add_argument("--max-length", type=int, default=512)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--seed", type=int, default=0, help="fold split and KMeans initialisation")
  p.add_argument("--curves", action="append", default=[], metavar="WORKDIR",
                 help="also plot this training run's curves (curves-<run>.png), without evaluating it")
  p.add_argument("--trained-pairs", nargs="*", default=[], metavar="PAIR_SET",
                 help="pair sets the models were fine-tuned on (data/pairs/category): clustering is also reported "
                      "on the classes they teach and on the others, apart")
  args = p.parse_args(argv)
  try:
    from physbert_jax.pair_pipeline import trained_classes
    trained = trained_classes(args.trained_pairs) if args.trained_pairs else None
  except (OSError, ValueError) as e:
    print(f"error: --trained-pairs: {e}", file=sys.stderr)
    return 2
  ctx = tasks.Context(args.sets, args.cache or os.path.join(args.out, "embeddings"), seed=args.seed,
                      batch_size=args.batch_size, trained_classes=trained)
  command = "python -m eval.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  if not os.path.isdir(args.sets):
    print(f"error: --sets {args.sets}: no such folder; build the sets with `python -m eval.build_sets`",
          file=sys.stderr)
    return 2
  try:
    task_names = parse_tasks(args.tasks)
    for t in task_names:
      tasks.validate(ctx, t)  # a malformed set fails now, before models load and hours of encoding
    encoders = [(m, load_encoder(m, args.pooling, args.max_length, args.dtype)) for m in args.model]
    report = evaluate(encoders, task_names, ctx, args.out, command, validate=False)
    for run in args.curves:
      metrics = os.path.join(workdir_of(run), "metrics.jsonl")
      if not os.path.isfile(metrics):
        raise ModelError(f"--curves {run}: no {metrics}; give a training workdir")
      name = os.path.basename(os.path.abspath(workdir_of(run)))
      figure = f"curves-{report_lib.slug(name)}.png"
      report_lib.curves_figure(metrics, os.path.join(args.out, figure), f"{name}: training curves")
      report.setdefault("curves", []).append({"name": name, "path": run, "curves": figure})
    report_lib.write(report, args.out)
  except (sets.SetError, ModelError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report_lib.markdown(report).split("## Secondary")[0])
  print(f"wrote {args.out}/results.json, table.md, table.csv")
  if not any("main" in r for m in report["models"] for r in m["tasks"].values()):
    print("error: every task was skipped (reasons above): nothing was measured", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
