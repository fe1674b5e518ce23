"""The speedrun's two training runs (launch/speedrun.sh): the paper's recipe at demo scale, on 2 CPU cores.

  python -m physbert_jax.train --config configs/speedrun.py:mlm,data/speedrun --workdir runs/speedrun/mlm
  python -m physbert_jax.train --config configs/speedrun.py:contrastive,data/speedrun,runs/speedrun \
      --workdir runs/speedrun/contrastive

The part after the variant names the speedrun's data folder (and for `contrastive` its runs folder): the shards,
pair sets and evaluation sets live there under fixed names. Steps and batch are the speedrun's; the model is
configs/mlm.py's tiny BERT with the sample's own 8,192-token vocabulary.
"""

import os

import ml_collections

from configs import contrastive, mlm


def get_config(arg: str = "mlm") -> ml_collections.ConfigDict:
  variant, *paths = arg.split(",")
  data = paths[0] if paths else "data/speedrun"
  runs = paths[1] if len(paths) > 1 else "runs/speedrun"
  if variant == "mlm":
    c = mlm.get_config("tiny")
    c.data.shards = os.path.join(data, "mlm128")  # ~32k sequences of 128 tokens from 18k abstracts
    c.total_steps = 600                          # ~0.6 epoch at 32: ~3 min on 2 cores
    c.eval_every = 200
    c.checkpoint.every_steps = 200
    c.log_every = 50
  elif variant == "contrastive":
    c = contrastive.get_config("tiny")
    c.init_from = os.path.join(runs, "mlm")
    # The paper's mix (category 0.4, citation 0.2, QA 0.4), title -> abstract pairs standing in for the QA pairs
    # when no LLM made any. Only the sets the speedrun built: citation pairs need citation data, QA pairs an LLM.
    mix = {"category": 2.0, "citation": 1.0, "qa": 1.0, "title-abstract": 1.0}
    c.data.sources = [{"path": os.path.join(data, "pairs", name), "weight": weight} for name, weight in mix.items()
                      if os.path.exists(os.path.join(data, "pairs", name, "manifest.json"))]
    c.data.global_batch_size = 32
    c.validation.sets = os.path.join(data, "evalsets")
    c.validation.folds = 5
    c.total_steps = 150
    c.eval_every = 50
    c.checkpoint.every_steps = 50
    c.log_every = 25
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/speedrun.py: use mlm,DATA or contrastive,DATA,RUNS")
  c.variant = f"speedrun-{variant}"
  c.model.vocab_size = 8192                      # launch/speedrun.sh trains the tokenizer with this size
  return c
