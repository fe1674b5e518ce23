"""The paper's subdomain fine-tuning protocol (Sec. 4.2) for cond-mat (10 subcategories), astro-ph (7), hep (4).

  python -m physbert_jax.train --config configs/subdomain.py:cond-mat --workdir runs/sub-cm
  python -m physbert_jax.train --config configs/subdomain.py:hep --workdir runs/sub-hep --config.init_from=runs/x

One command runs the whole grid: lr {1e-4, 2e-4} x batch {16, 32}, each 1 epoch over the domain's training pairs
(eval.build_sets' pair set train/subdomain-<domain>/, disjoint from its evaluation abstracts) with linear decay,
evaluated 3 times on the domain's clustering set; workdir/grid.json reports every run and the best V-measure.
Each grid point is an ordinary run in workdir/lr<lr>-bs<batch>/ (resumable, exportable with convert --best).
"""

import ml_collections

from configs import contrastive

DOMAINS = ("cond-mat", "astro-ph", "hep")


def get_config(arg: str = "cond-mat") -> ml_collections.ConfigDict:
  domain, _, size = arg.partition(":")
  if domain not in DOMAINS:
    raise ValueError(f"unknown domain {domain!r} of configs/subdomain.py: use {', '.join(DOMAINS)}")
  c = contrastive.get_config("tiny" if size == "tiny" else "base")
  c.variant = arg
  c.subdomain = domain
  c.data.sources = [{"path": f"evalsets/train/subdomain-{domain}", "weight": 1.0}]   # eval.build_sets writes it
  c.data.global_batch_size = 16                # set per grid point
  c.num_epochs = 1                             # the paper's
  c.total_steps = 0
  c.evals_per_epoch = 3                        # the paper's
  c.optimizer.decay = "linear"
  c.optimizer.warmup_steps = 0                 # 1 epoch of a few thousand steps: no warmup, as the paper's sweep
  c.validation.sets = "evalsets"
  c.validation.tasks = (f"subdomain-{domain}",)
  c.init_from = "runs/contrastive"             # PhysBERT; any workdir (or a from-hf import) works
  c.grid = [                                   # the paper's grid: every combination is one run
      ("optimizer.lr", [1e-4, 2e-4]),
      ("data.global_batch_size", [16, 32]),
  ]
  if size == "tiny":
    c.init_from = "runs/contrastive-tiny"
  return c
