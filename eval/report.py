"""The report: results.json, the paper's Table 1 as Markdown and CSV, and Figure 2 (PCA of clustering embeddings).

Numbers in the tables are percentages (x100), as in the paper; results.json keeps the raw fractions and every
secondary metric. A skipped task shows as "skipped" in the tables with its reason in a footnote and in results.json.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
import re
import subprocess

import numpy as np

from physbert_jax.evaluation import tasks

MAIN_TASKS = ("clustering", "citation", "retrieval")
SUB_TASKS = tuple(t for t in tasks.TASKS if t.startswith("subdomain-"))
TITLES = {"clustering": "Category clustering (V-measure)", "citation": "Citation classification (accuracy)",
          "retrieval": "Information retrieval (nDCG@10)",
          **{t: f"{t[len('subdomain-'):]} (V-measure)" for t in SUB_TASKS}}
PACKAGES = ("jax", "flax", "numpy", "scikit-learn", "torch", "transformers", "sentence-transformers",
            "physbert-jax")


def versions() -> dict:
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    out["physbert-jax commit"] = (commit + ("+dirty" if dirty else "")) or None
  except (OSError, subprocess.SubprocessError):
    out["physbert-jax commit"] = None
  return out


def _cell(result: dict | None, with_std: bool = False) -> str:
  if result is None:
    return "-"
  if "skipped" in result:
    return "skipped"
  cell = f"{100 * result['main']:.2f}"
  if with_std and "v_measure_std" in result:
    cell += f" ± {100 * result['v_measure_std']:.2f}"
  return cell


def _average(results: dict, columns) -> float | None:
  """Mean over the columns that ran; None when any column is missing (an average of fewer tasks misleads)."""
  vals = [results.get(t) for t in columns]
  if any(v is None or "skipped" in v for v in vals):
    return None
  return float(np.mean([v["main"] for v in vals]))


def table_rows(report: dict, columns) -> list[list[str]]:
  rows = []
  for model in report["models"]:
    avg = _average(model["tasks"], columns)
    rows.append([model["name"]] + [_cell(model["tasks"].get(t), with_std=True) for t in columns] +
                ["-" if avg is None else f"{100 * avg:.2f}"])
  return rows


def markdown(report: dict) -> str:
  ran = report["tasks"]
  lines = ["# PhysBERT benchmark report", ""]
  for title, group in (("Table 1: physics tasks", MAIN_TASKS), ("Subdomain clustering", SUB_TASKS)):
    columns = [t for t in group if t in ran]
    if not columns:
      continue
    lines += [f"## {title}", "", "| Model | " + " | ".join(TITLES[t] for t in columns) + " | Avg. |",
              "|---|" + "---:|" * (len(columns) + 1)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(report, columns)]
    lines.append("")
  lines.append("Percentages. Clustering: mean ± std over stratified folds. Avg. is over the columns of the table, "
               "shown only when all of them ran.")
  skipped = [(m["name"], t, r["skipped"]) for m in report["models"] for t, r in m["tasks"].items() if "skipped" in r]
  if skipped:
    lines += ["", "Skipped:"] + [f"- {name}, {t}: {why}" for name, t, why in skipped]
  lines += ["", "## Secondary metrics", "", "| Model | Citation AP | Retrieval MRR@10 | Retrieval recall@100 |",
            "|---|---:|---:|---:|"]
  for m in report["models"]:
    c, r = m["tasks"].get("citation", {}), m["tasks"].get("retrieval", {})
    fmt = lambda d, k: f"{100 * d[k]:.2f}" if k in d else "-"
    lines.append(f"| {m['name']} | {fmt(c, 'average_precision')} | {fmt(r, 'mrr@10')} | {fmt(r, 'recall@100')} |")
  lines += _class_sections(report)
  s = report["sets"]
  lines += ["", "## Provenance", "",
            f"- sets: `{s['dir']}` (seed {s.get('seed')}, manifest sha256 {s.get('manifest_sha256')})",
            "- sizes: " + ", ".join(f"{k} {v}" for k, v in s.get("sizes", {}).items())]
  for name, src in s.get("sources", {}).items():
    for item in (src if isinstance(src, list) else [src]):
      lines.append(f"- source {name}: `{item['path']}` sha256 {item['sha256'][:16]}…")
  lines.append(f"- retrieval: {s.get('retrieval_note', '')}")
  for m in report["models"]:
    lines.append(f"- model {m['name']}: `{m['path']}` fingerprint {m['fingerprint']}")
  lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
  lines.append(f"- command: `{report['command']}`")
  figures = [m for m in report["models"] if m.get("figure")]
  if figures:
    lines += ["", "## Figure 2: PCA of clustering-set embeddings", ""]
    lines += [f"![{m['name']}]({m['figure']})" for m in figures]
  curves = [m for m in report["models"] + report.get("curves", []) if m.get("curves")]
  if curves:
    lines += ["", "## Training curves", ""]
    lines += [f"![{m['name']}]({m['curves']})" for m in curves]
  return "\n".join(lines) + "\n"


def _class_sections(report: dict) -> list[str]:
  """Clustering split by what the models were trained on, and 10-NN class accuracy per class: V-measure over all
  classes can rise while untaught classes dissolve (docs/LOG.md, 2026-12-01)."""
  results = [(m["name"], m["tasks"].get("clustering", {})) for m in report["models"]]
  results = [(n, r) for n, r in results if "knn_accuracy" in r]
  if not results:
    return []
  fmt = lambda r, k: f"{100 * r[k]:.2f}" + (f" ± {100 * r[k + '_std']:.2f}" if k + "_std" in r else "") \
      if k in r else "-"
  lines = ["", "## Clustering by class", "",
           "| Model | V-measure, all classes | V-measure, classes in the training pairs | V-measure, classes not in "
           "them | 10-NN accuracy |", "|---|---:|---:|---:|---:|"]
  lines += [f"| {n} | {fmt(r, 'v_measure')} | {fmt(r, 'v_measure_trained')} | {fmt(r, 'v_measure_untrained')} | "
            f"{fmt(r, 'knn_accuracy')} |" for n, r in results]
  trained = next((set(r["classes_trained"]) for _, r in results if "classes_trained" in r), set())
  classes = sorted(results[0][1]["knn_per_class"])
  lines += ["", "10-NN class accuracy per class (* = in the training pairs):", "",
            "| Class | " + " | ".join(n for n, _ in results) + " |", "|---|" + "---:|" * len(results)]
  for c in classes:
    lines.append(f"| {c}{' *' if c in trained else ''} | " +
                 " | ".join(f"{100 * r['knn_per_class'].get(c, float('nan')):.1f}" for _, r in results) + " |")
  return lines


def write_csv(report: dict, path: str) -> None:
  columns = [t for t in tasks.TASKS if t in report["tasks"]]
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["model"] + columns + [f"{t}_std" for t in columns if tasks.MAIN_METRIC[t] == "v_measure"] +
               ["avg", "subdomain_avg"])
    for m in report["models"]:
      res = m["tasks"]
      main = [f"{100 * res[t]['main']:.4f}" if "main" in res.get(t, {}) else "" for t in columns]
      std = [f"{100 * res[t]['v_measure_std']:.4f}" if "v_measure_std" in res.get(t, {}) else ""
             for t in columns if tasks.MAIN_METRIC[t] == "v_measure"]
      avgs = [_average(res, [t for t in g if t in columns]) if any(t in columns for t in g) else None
              for g in (MAIN_TASKS, SUB_TASKS)]
      w.writerow([m["name"]] + main + std + ["" if a is None else f"{100 * a:.4f}" for a in avgs])


def slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def pca_figure(embeddings: np.ndarray, labels: np.ndarray, path: str, title: str) -> None:
  """The paper's Figure 2: the clustering set projected on its first two principal components, one color a class."""
  import matplotlib
  matplotlib.use("Agg")  # files only; no display on clusters
  import matplotlib.pyplot as plt
  from sklearn.decomposition import PCA

  xy = PCA(n_components=2, random_state=0).fit_transform(np.asarray(embeddings, dtype=np.float32))
  classes = sorted(set(labels.tolist()))
  cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
  fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
  for i, c in enumerate(classes):
    sel = labels == c
    ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=cmap(i % cmap.N), label=c, rasterized=True)
  ax.set_title(title)
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2 if len(classes) > 12 else 1)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def curves_figure(metrics_path: str, path: str, title: str) -> bool:
  """A training run's curves from its metrics.jsonl: the training loss with the held-out loss (MLM: eval_loss),
  and the validation metrics over steps (contrastive: val_*; MLM: masked-token accuracy). False if there is none."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  series: dict[str, list[tuple[int, float]]] = {}
  with open(metrics_path) as f:
    for line in f:
      row = json.loads(line)
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          series.setdefault(k, []).append((row["step"], v))
  if "loss" not in series:
    return False
  right = sorted(k for k in series if k.startswith("val_")) or [
      k for k in ("mlm_accuracy", "eval_mlm_accuracy", "accuracy") if k in series]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
  for ax, keys, label in ((axes[0], [k for k in ("loss", "eval_loss") if k in series], "loss"),
                          (axes[1], right, "metric")):
    for k in keys:
      steps, values = zip(*series[k])
      ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    if keys:
      ax.legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True


def write(report: dict, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(report, f, indent=2)
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(markdown(report))
  write_csv(report, os.path.join(out, "table.csv"))
