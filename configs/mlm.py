"""MLM pre-training, the PhysBERT recipe: BERT-base from scratch, RoBERTa-style dynamic masking, no NSP.

  python -m physbert_jax.train --config configs/mlm.py:tiny    --workdir runs/tiny     # CPU, about 2 minutes
  python -m physbert_jax.train --config configs/mlm.py:base    --workdir runs/mlm128   # paper phase 1: 4 epochs @128
  python -m physbert_jax.train --config configs/mlm.py:base512 --workdir runs/mlm512   # phase 2: 6 epochs @512
  python -m physbert_jax.train --config configs/mlm.py:tiny --workdir runs/t --config.optimizer.lr=3e-4

Paper (Hellert et al. 2024, Sec. 3): 32 nodes x 4 A100, Adam, lr 1e-4, 15% masking, 4 epochs at 128 then 6 at 512.
"""

import ml_collections

from physbert_jax.model import BertConfig


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.objective = "mlm"
  c.seed = 0

  # Model: BERT-base (the paper). Field names are BertConfig's.
  c.model = ml_collections.ConfigDict(vars(BertConfig()).copy())
  c.model.dtype = "bfloat16"                   # activations; parameters, softmax and loss stay fp32
  c.model.attention_dropout = 0.0              # flash attention has no dropout on probabilities (MosaicBERT too)
  # None: XLA picks; "cudnn", "xla" or "cpu" from the command line (a placeholder, so a str override type-checks).
  c.model.attention_impl = ml_collections.config_dict.placeholder(str)

  c.data = ml_collections.ConfigDict()
  c.data.shards = "data/mlm128"                # a build_mlm_shards output dir, or a builder "module:function"
  c.data.seq_len = 128
  c.data.global_batch_size = 4096              # 128 A100 x 32; the paper does not give its batch size
  c.data.worker_count = 4                      # Grain worker processes per host (0: in the main process)
  c.data.cache_dir = "data/demo"               # where data_prep.demo's builder writes

  c.mlm = ml_collections.ConfigDict()
  c.mlm.mask_rate = 0.15                       # BERT/RoBERTa
  c.mlm.mask_token_frac = 0.8                  # of the chosen: 80% [MASK],
  c.mlm.random_token_frac = 0.1                # 10% random token, 10% unchanged

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 1e-4                        # the paper's
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.98                        # RoBERTa: more stable than 0.999 with large batches
  c.optimizer.eps = 1e-6                       # RoBERTa
  c.optimizer.weight_decay = 0.01              # BERT/RoBERTa; not on biases and LayerNorm
  c.optimizer.clip_norm = 1.0                  # global-norm clipping (0 disables)
  c.optimizer.warmup_steps = 10_000            # RoBERTa-base 10k warmup (~6% of the 4-epoch run)
  c.optimizer.decay = "linear"                 # linear | cosine | constant after warmup
  c.optimizer.end_lr_factor = 0.0              # final lr = lr x this
  c.optimizer.grad_accum_steps = 1             # micro-batches per step (same gradient, less memory)

  # Length of the run: num_epochs over the train split, unless total_steps > 0.
  c.num_epochs = 4
  c.total_steps = 0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                             # -1: all remaining devices
  c.mesh.fsdp = 1                              # >1 shards parameters + optimizer state (BERT-base fits without)
  c.mesh.rules = [                             # logical axis -> mesh axes
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),                       # with fsdp=1 this is replication
      ("act_embed", None), ("length", None), ("vocab", None), ("mlp", None), ("heads", None),
  ]

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 2_000             # ~20 min of 128 A100: the most a preemption loses
  c.checkpoint.keep = 3
  c.checkpoint.keep_every = 20_000             # kept forever, for learning-curve evaluations
  c.checkpoint.async_save = True

  c.log_every = 50
  c.eval_every = 5_000                         # MLM loss on the validation split, if the shards have one
  c.eval_batches = 20
  c.pooling = "mean"                           # how `encode`/`convert` pool this run's token states
  c.init_from = ""                             # another workdir whose params start this run (phase 2)
  c.peak_flops_per_device = 0.0                # 0: look up the device (A100/H100/H200 bf16); else override

  if arg == "base":
    pass
  elif arg == "base512":
    c.data.shards = "data/mlm512"
    c.data.seq_len = 512
    c.data.global_batch_size = 1024            # same tokens per step as phase 1
    c.num_epochs = 6                           # the paper's phase 2
    c.optimizer.warmup_steps = 2_000
    c.init_from = "runs/mlm128"                # phase 1's weights; a fresh optimizer
  elif arg == "tiny":
    # CPU in about 2 minutes: a 2-layer, 128-wide BERT on the demo corpus shipped in data_prep/demo_corpus.
    c.model.update(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
                   max_position_embeddings=128, dtype="float32", hidden_dropout=0.1, attention_dropout=0.0)
    c.data.shards = "data_prep.demo:shards_for"   # built from the shipped corpus on first use
    c.data.global_batch_size = 32              # divisible by 8: runs unchanged on 8 devices
    c.data.worker_count = 0
    c.optimizer.lr = 1e-3                      # small models take (and need) larger steps
    c.optimizer.warmup_steps = 20
    c.num_epochs = 0
    c.total_steps = 200
    c.checkpoint.every_steps = 100
    c.checkpoint.keep_every = 0
    c.log_every = 20
    c.eval_every = 100
    c.eval_batches = 2
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/mlm.py: use tiny, base or base512")
  return c
