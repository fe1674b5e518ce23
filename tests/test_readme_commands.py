"""README sections 3 (contrastive fine-tuning) and 5 (benchmark) run as written, on a cut of the shipped arXiv sample.

The commands are read from README.md itself, so the README cannot drift from the code. Sections 1 and 2 give the
inputs section 3 names (data/meta, data/corpus, runs/mlm512); their lines run as written too. What a 2-core CPU
machine cannot run is named below with the reason and the test that covers it instead; BERT-base training lines run
as written plus SHRINK (a 1-layer BERT, 2 steps; MiniLM 2 steps), the only words the test adds.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from clitools import REPO
from test_pairs_qa_generate import endpoint  # noqa: F401  (a fixture: an OpenAI-compatible chat server)

pytestmark = pytest.mark.slow

SAMPLE = os.path.join(REPO, "data_prep", "arxiv_sample")
RECORDS = 4000                   # of the shipped 19,000: every stage still sees ~20 classes
NOT_HERE = {                     # command prefix -> why it does not run here, and what tests it instead
    "python -m data_prep.pdf_to_text": "needs PDFs (tests/test_data_prep_pdf.py)",
    "python -m data_prep.pairs citation --source s2-api": "needs Semantic Scholar's API (tests/test_pairs_s2.py runs "
                                                           "this command against a local stand-in)",
    "python -m physbert_jax.train --config configs/mlm.py:tiny": "section 2's demo lines (tests/test_resume.py)",
}
# BERT-base at 2,048-4,096 sequences a step does not fit 2 CPU cores; the same code path at toy size does. The
# imported MiniLM keeps its architecture and runs 2 steps (its config's 200 take ~40 min here).
STEPS = ["--config.total_steps=2", "--config.data.global_batch_size=8", "--config.data.worker_count=0"]
SHRINK = {"configs/mlm.py:base": ["--config.model.hidden_size=32", "--config.model.num_layers=1",
                                  "--config.model.num_heads=2", "--config.model.intermediate_size=64", *STEPS]}
SHRINK["configs/contrastive.py:base"] = SHRINK["configs/subdomain.py:"] = [*SHRINK["configs/mlm.py:base"],
                                                                           "--config.validation.batch_size=64"]
SHRINK["configs/contrastive.py:minilm"] = [*STEPS, "--config.validation.batch_size=64"]


def readme_commands(section: str) -> list[str]:
  """The shell lines of README section `section` ("3", ...): every ```bash block, continuations joined, comments
  dropped."""
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  body = re.search(rf"^### {section}\. .*?(?=^### |^## )", text, re.M | re.S).group(0)
  lines = []
  for block in re.findall(r"```bash\n(.*?)```", body, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = " ".join(re.sub(r"\s+#.*$", "", line).split())    # one space between words, as shlex reads them
      if line:
        lines.append(line)
  return lines


def cut_sample(cwd) -> None:
  """The inputs the README names, from the shipped sample: Kaggle's snapshot file name and a Paperscape folder."""
  with gzip.open(os.path.join(SAMPLE, "metadata.jsonl.gz"), "rt", encoding="utf-8") as f:
    lines = list(itertools.islice(f, RECORDS))
  with gzip.open(cwd / "arxiv-metadata-oai-snapshot.json.gz", "wt", encoding="utf-8") as f:
    f.writelines(lines)
  os.symlink(os.path.join(SAMPLE, "citations"), cwd / "citations")
  os.symlink(os.path.join(REPO, "configs"), cwd / "configs")   # --config paths are relative, as from the repo root


def run_as_written(line: str, cwd, env, placeholders: dict[str, str]) -> str | None:
  """Runs one README line (None when it cannot run here), asserting it succeeds; returns its output."""
  for prefix, why in NOT_HERE.items():
    if line.startswith(prefix):
      print(f"not run here: {line[:70]}... ({why})")
      return None
  if line.startswith("sbatch "):
    return None                  # section 1's Slurm forms of the same commands (tests/test_slurm_data_prep.py)
  for placeholder, value in placeholders.items():
    line = line.replace(placeholder, value)
  argv = shlex.split(line)
  assert argv[0] == "python", line
  argv += next((extra for config, extra in SHRINK.items() if f"--config {config}" in line), [])
  r = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, f"README line failed: {line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
  return r.stdout + r.stderr


def test_readme_sections_3_and_5_run_as_written(tmp_path, minilm, endpoint):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_FLAGS"))}
  env.update(PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
  cut_sample(tmp_path)
  # The QA line as the README gives its alternative: `--engine openai-endpoint URL` instead of an 8-GPU vLLM.
  qa = {"--engine vllm --model meta-llama/Meta-Llama-3-70B-Instruct --tensor-parallel-size 8":
        f"--engine openai-endpoint {endpoint.url} --num-pairs 300",
        "path/to/all-MiniLM-L6-v2": minilm}
  ran = []
  for section in ("1", "2", "3"):
    for line in readme_commands(section):
      if run_as_written(line, tmp_path, env, qa) is not None:
        ran.append(line)
  assert any("eval.build_sets --metadata data/meta" in line for line in ran)
  for name in ("category", "citation", "title-abstract", "qa"):
    assert (tmp_path / "data" / "pairs" / name / "manifest.json").exists(), name
  for run in ("mlm512", "contrastive", "minilm-ft"):
    assert (tmp_path / "runs" / run / "summary.json").exists(), run
  grid = json.loads((tmp_path / "runs" / "sub-cm" / "grid.json").read_text())
  assert len(grid["runs"]) == 4 and grid["best_run"], grid

  # Section 5 on its own, as a user benchmarking someone's models does: the snapshot, Paperscape, two models.
  bench = tmp_path / "bench"
  bench.mkdir()
  for name in ("arxiv-metadata-oai-snapshot.json.gz", "citations"):
    os.symlink(tmp_path / name, bench / name)
  os.makedirs(bench / "runs")
  os.symlink(tmp_path / "runs" / "contrastive", bench / "runs" / "contrastive")
  for line in readme_commands("5"):
    assert run_as_written(line, bench, env, qa) is not None
  results = json.loads((bench / "report" / "results.json").read_text())
  assert len(results["models"]) == 2
  for model in results["models"]:
    for task in ("clustering", "citation", "retrieval"):
      assert "main" in model["tasks"][task], (model["name"], task)
  assert (bench / "report" / "table.md").exists()
