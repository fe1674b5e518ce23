"""Contrastive fine-tuning: what turns the MLM model into PhysBERT (paper Sec. 3.2; clustering V 49.1 -> 90.3).

  python -m physbert_jax.train --config configs/contrastive.py:base --workdir runs/contrastive   # from runs/mlm512
  python -m physbert_jax.train --config configs/contrastive.py:tiny --workdir runs/contrastive-tiny  # CPU, minutes
  python -m physbert_jax.train --config configs/contrastive.py:minilm --workdir runs/minilm-ft      # from runs/minilm

`minilm` fine-tunes an existing sentence encoder (all-MiniLM-L6-v2, imported with
`python -m physbert_jax.convert from-hf --hf <folder> --out runs/minilm`) on category + citation pairs: the recipe for
adapting any BERT-family model to physics without pre-training one.

Pairs come from `python -m data_prep.pairs {category,citation,synthetic-qa}`; validation sets from
`python -m eval.build_sets` (its ids.txt is what the pair builders exclude). The paper: lr 2e-4, batch 256 per GPU,
temperature 0.05, weight decay 0.01, 2 epochs, evaluated 3x per epoch, best checkpoint over the three metrics kept.

Absolute numbers in the paper are for its corpus (~1.2M physics papers): 2M category pairs over the classes with
>= 5,000 papers (21 on the full arXiv). The pair builders scale both to the corpus they read by default
(data_prep.taxonomy.scaled: 487 papers a class on the 116,738-paper sample, which keeps 30 of its 35 classes);
`python -m data_prep.pairs category --min-class-papers 5000 --num-pairs 2000000` is the paper's setting. With the
absolute threshold the sample taught 8 classes, and MiniLM fine-tuned on them got worse on held-out physics while
its validation (the same 8 classes) said better (docs/LOG.md, 2026-12-01). So the validation clustering set holds
every class the corpus supports (eval.build_sets' default), and the validator also logs V-measure on the classes
the pairs teach and on the others (`val_clustering_trained`, `val_clustering_untrained`) and 10-NN accuracy.
"""

import ml_collections

from configs import mlm


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg not in ("base", "tiny", "minilm"):
    raise ValueError(f"unknown variant {arg!r} of configs/contrastive.py: use base, tiny or minilm")
  c = mlm.get_config("base" if arg == "base" else "tiny")   # same model, mesh and checkpoint settings
  c.variant = arg
  c.objective = "contrastive"
  del c.mlm

  c.data = ml_collections.ConfigDict()
  c.data.sources = [                            # pair sets and mixing weights: the paper's 2M / 1M / 2M pairs
      {"path": "data/pairs/category", "weight": 0.4},
      {"path": "data/pairs/citation", "weight": 0.2},
      {"path": "data/pairs/qa", "weight": 0.4},
  ]
  c.data.one_source_per_batch = True           # each batch from one pair set, by weight (sentence-transformers'
                                                # default); False mixes the sets within every batch
  c.data.tokenizer = ""                         # "": init_from's workdir/tokenizer
  c.data.max_length = 256                       # abstracts and 1,000-char chunks fit; titles are far shorter
  c.data.length_buckets = (32, 64, 128)         # each text group padded to the smallest bucket (or max_length)
                                                # that holds its longest text; () pads everything to max_length
  c.data.global_batch_size = 2048               # 8 GPUs x 256 (the paper's per-GPU batch), all negatives global
  c.data.worker_count = 4

  c.contrastive = ml_collections.ConfigDict()
  c.contrastive.temperature = 0.05              # the paper's; = sentence-transformers' scale 20
  c.contrastive.symmetric = False               # MultipleNegativesRankingLoss, anchor -> positive only
  c.contrastive.hard_negatives = False          # the paper's pairs carry none
  c.contrastive.mask_duplicates = True          # a duplicate text in the batch is not a negative
  c.contrastive.mask_same_label = True          # nor a same-class abstract for category pairs: it is as right an
                                                # answer as the positive (docs/LOG.md, 2026-12-01)
  c.contrastive.grad_cache_chunks = 1           # >1: GradCache, same gradient in 1/n of the activation memory

  c.optimizer.lr = 2e-4                         # the paper's
  c.optimizer.b2 = 0.999                        # sentence-transformers' AdamW defaults for fine-tuning
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01               # the paper's
  c.optimizer.warmup_steps = 250                # ~5% of 2 epochs over 5M pairs at 2,048
  c.optimizer.decay = "linear"

  c.num_epochs = 2                              # the paper's
  c.total_steps = 0
  c.evals_per_epoch = 3                         # the paper's; each eval is also a checkpoint
  c.validation = ml_collections.ConfigDict()
  c.validation.sets = "evalsets"                # eval.build_sets output; "" disables validation
  c.validation.tasks = ("clustering", "citation", "retrieval")   # val_mean = their mean picks the best checkpoint
  c.validation.batch_size = 128
  c.validation.folds = 10
  c.checkpoint.every_steps = 1_000
  c.checkpoint.keep = 2
  c.checkpoint.keep_every = 0
  c.pooling = "mean"                            # mean over real tokens, as sentence-transformers trains it
  c.init_from = "runs/mlm512"                   # phase-2 MLM weights; its MLM head is dropped

  if arg in ("tiny", "minilm"):
    # CPU demonstrations: pairs from a metadata sample, validated on evalsets/ (README section 3's commands).
    c.data.worker_count = 0
    c.num_epochs = 0
    c.total_steps = 300
    c.evals_per_epoch = 0
    c.eval_every = 100
    c.validation.batch_size = 64
    c.checkpoint.every_steps = 100
  if arg == "tiny":
    # A tiny MLM start, category pairs only.
    c.data.max_length = 128
    c.data.sources = [{"path": "data/pairs/category", "weight": 1.0}]
    c.data.global_batch_size = 64
    c.optimizer.lr = 2e-4
    c.optimizer.warmup_steps = 20
    c.init_from = "runs/tiny"
  elif arg == "minilm":
    # all-MiniLM-L6-v2's architecture; the weights come from init_from. It was trained at 128 tokens but encodes
    # at 256 (its sentence-transformers setting): abstracts average ~200 tokens, and training and exporting at 128
    # cut them, which cost 1.8 V-measure points on held-out physics (docs/LOG.md, 2026-12-01). So 256 here too.
    c.model.update(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536,
                   max_position_embeddings=512, dtype="float32", hidden_dropout=0.1, attention_dropout=0.0)
    c.data.sources = [                          # the paper's 0.4 / 0.2 / 0.4 mix, with title -> abstract pairs in
        {"path": "data/pairs/category", "weight": 2.0},    # the place of the (LLM-made) QA pairs: topic similarity
        {"path": "data/pairs/citation", "weight": 1.0},    # from categories, specificity from citations, query ->
        {"path": "data/pairs/title-abstract", "weight": 1.0},   # passage from titles; without the last, retrieval
    ]                                                      # fell 97.75 -> 91.12 (docs/LOG.md, 2026-11-29, 12-01)
    c.data.global_batch_size = 32
    c.optimizer.lr = 5e-5                       # a trained encoder: small steps
    c.optimizer.warmup_steps = 30
    c.total_steps = 200                         # the best of 300 was at step 200 (docs/LOG.md); ~12 s a step here
    c.init_from = "runs/minilm"
  return c
