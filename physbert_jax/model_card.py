"""The model card (README.md) of an exported folder: what the model is, how it encodes, how it was trained (or that
it was imported), and what the run recorded about its quality."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

from physbert_jax import hf_names

if TYPE_CHECKING:
  from physbert_jax.convert import EncoderSettings, Weights


_POOLING_TEXT = {
    "mean": "mean of the last hidden states over all real tokens, [CLS] and [SEP] included (sentence-transformers' "
            "`mean`)",
    "cls": "the last hidden state of [CLS] (sentence-transformers' `cls`)",
    "mean_no_special": "mean of the last hidden states over real tokens **excluding [CLS] and [SEP]**",
}


def model_card(w: Weights, settings: EncoderSettings, name: str, workdir: str | None) -> str:
  cfg, pooling = w.cfg, settings.pooling
  n_params = sum(int(np.prod(a.shape)) for a in hf_names.flatten(w.params).values())
  lines = [
      "---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
      "tags: [sentence-transformers, feature-extraction, sentence-similarity, bert, physics, physbert-jax]",
      "language: [en]", "---", "", f"# {name}", "",
      f"A BERT text-embedding model exported by physbert-jax from `{w.source}`"
      + (f" (step {w.step})." if w.step is not None else "."), "",
      f"- Architecture: BERT, {cfg.num_layers} layers, hidden size {cfg.hidden_size}, {cfg.num_heads} heads, "
      f"{n_params / 1e6:.1f}M parameters, vocabulary {cfg.vocab_size}"
      + (", with its MLM head (`BertForMaskedLM`)" if "cls" in w.params else ""),
      f"- Embedding: {cfg.hidden_size} dimensions; pooling: {_POOLING_TEXT[pooling]}; "
      f"{'L2-normalised' if settings.normalize else 'not normalised'}; "
      f"inputs truncated to {settings.max_length} tokens", "",
  ]
  if pooling == "mean_no_special":
    lines += ["> **Pooling caveat.** sentence-transformers has no pooling mode that leaves out [CLS] and [SEP]. "
              "`1_Pooling/config.json` therefore says plain `mean`: `SentenceTransformer(...).encode` includes "
              "those two tokens and gives embeddings that differ slightly from the trained ones. For the exact "
              "embeddings use `physbert_jax.encode` (it reads `encoder.json`) or the transformers snippet "
              "below.", ""]
  pool_code = ("emb = out.last_hidden_state[:, 0]" if pooling == "cls" else
               "mask = batch['attention_mask'].clone()\n"
               + ("n = mask.sum(1)                                  # real tokens; [SEP] is the last\n"
                  "mask[:, 0] = 0; mask[torch.arange(len(mask)), n - 1] = 0   # leave out [CLS], [SEP]\n"
                  if pooling == "mean_no_special" else "")
               + "emb = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)")
  lines += [
      "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer",
      f"model = SentenceTransformer('path/to/{name}')",
      "emb = model.encode(['Superconductivity in twisted bilayer graphene.'])", "```", "", "```python",
      "import torch", "from transformers import AutoModel, AutoTokenizer",
      f"tok, model = AutoTokenizer.from_pretrained('path/to/{name}'), AutoModel.from_pretrained('path/to/{name}')",
      f"batch = tok(['Superconductivity in twisted bilayer graphene.'], padding=True, truncation=True, "
      f"max_length={settings.max_length}, return_tensors='pt')",
      "with torch.no_grad():", "  out = model(**batch)", *pool_code.split("\n"), "```", "",
      "The `pooler` weights of `BertModel` are not part of this model (transformers initialises them randomly); "
      "use the pooling above.", "",
      "```bash", f"python -m physbert_jax.encode --model path/to/{name} --input texts.txt --out emb.npy", "```", ""]
  if w.train_config and w.train_config.get("imported_from"):
    lines += ["## Training", "", f"None here: imported from `{w.train_config['imported_from']}` "
              "(`python -m physbert_jax.convert from-hf`), weights unchanged.", ""]
  elif w.train_config:
    c = w.train_config
    rows = [("variant", c.get("variant")), ("sequence length", c.get("data", {}).get("seq_len")),
            ("global batch", c.get("data", {}).get("global_batch_size")), ("steps", c.get("total_steps") or
            f"{c.get('num_epochs')} epochs"), ("lr", c.get("optimizer", {}).get("lr")),
            ("init from", c.get("init_from") or "scratch"), ("data", c.get("data", {}).get("shards"))]
    lines += ["## Training", "", "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
              "<details><summary>Full training config (config.json)</summary>", "", "```json",
              json.dumps(c, indent=2), "```", "</details>", ""]
  lines += ["## Evaluation", ""]
  results = _eval_results(workdir) if workdir else []
  for title, body in results:
    lines += [f"### {title}", "", body, ""]
  if not results:
    lines += ["No evaluation results were found in the run directory at export time.", ""]
  return "\n".join(lines)


def _eval_results(workdir: str) -> list[tuple[str, str]]:
  """What the run recorded: best.json (contrastive selection), eval report tables, the final training summary."""
  out = []
  for rel, title in (("best.json", "Checkpoint selection (best.json)"), ("eval/table.md", "Benchmark"),
                     ("summary.json", "End of training (summary.json)")):
    path = os.path.join(workdir, rel)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        text = f.read().strip()
      out.append((title, text if rel.endswith(".md") else f"```json\n{text}\n```"))
  return out
