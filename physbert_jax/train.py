"""Training entrypoint: `python -m physbert_jax.train --config configs/mlm.py:tiny --workdir runs/tiny`.

Re-running the same command in the same workdir resumes (parameters, optimizer state, data position).
Init order: own checkpoint in workdir -> config.init_from's parameters -> random init.
SIGTERM (Slurm preemption, `scancel`, `--signal`) saves a checkpoint at the current step and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from physbert_jax import checkpointing, input_pipeline, metrics as metrics_lib, optimizer, sharding, steps
from physbert_jax.masking import max_predictions
from physbert_jax.model import Bert, BertConfig, count_params

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<experiment>.py:<variant>", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, TensorBoard and config.json go here")
# Test hook: SIGKILL the process right after the checkpoint of this step is committed (resume tests).
_KILL_AFTER_SAVE_ENV = "PHYSBERT_KILL_AFTER_SAVE_STEP"


class NonFiniteLossError(RuntimeError):
  pass


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuse to continue a workdir written by a different config: resuming would silently mix two runs."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    diff = _diff(saved, current)
    if diff:
      raise ValueError(f"{workdir} was started with a different config ({path}); differing keys: "
                       f"{', '.join(diff[:10])}. Use a new --workdir, or delete {workdir} to start over.")
  elif jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(current, f, indent=2)
    os.replace(tmp, path)


def _diff(a, b, prefix="") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
  return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def resolve_shards(config: ml_collections.ConfigDict) -> str:
  if config.data.shards == "demo":
    from data_prep import demo  # the demo corpus ships with the repo; built into shards on first use
    return demo.ensure_demo_data(config.data.cache_dir, seq_len=config.data.seq_len,
                                 vocab_size=config.model.vocab_size)
  return config.data.shards


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_workdir_config(workdir, config)
  model_cfg = BertConfig(**config.model)

  # ---- Mesh ------------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  sharding.check_batch_divides(config.data.global_batch_size, mesh, config.optimizer.grad_accum_steps)

  # ---- Input -----------------------------------------------------------------------------------------------
  data_dir = resolve_shards(config)
  loader, manifest = input_pipeline.make_mlm_loader(
      data_dir, split="train", seq_len=config.data.seq_len, global_batch_size=config.data.global_batch_size,
      seed=config.seed, worker_count=config.data.worker_count)
  special = manifest["special_ids"]
  copy_tokenizer(manifest, workdir)
  if manifest["vocab_size"] > model_cfg.vocab_size:
    raise ValueError(f"tokenizer of {data_dir} has {manifest['vocab_size']} tokens, config.model.vocab_size is "
                     f"{model_cfg.vocab_size}")
  train_records = manifest["splits"]["train"]["records"]
  steps_per_epoch = train_records // config.data.global_batch_size
  total_steps = config.total_steps or config.num_epochs * steps_per_epoch
  if total_steps <= 0:
    raise ValueError("nothing to train: set config.total_steps or config.num_epochs")
  data_iter = iter(loader)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # ---- Model & optimizer ---------------------------------------------------------------------------------
    model = Bert(model_cfg)
    tx, schedule = optimizer.make_optimizer(config.optimizer, total_steps)
    seq_len = config.data.seq_len
    k = min(max_predictions(seq_len, config.mlm.mask_rate), seq_len)

    def init_params(rng):
      dummy = jnp.zeros((1, seq_len), jnp.int32)
      return model.init({"params": rng}, dummy, dummy + 1, masked_positions=jnp.zeros((1, k), jnp.int32))["params"]

    state_sharding, abstract_state, init_state, new_state = steps.sharded_state_fns(init_params, tx, mesh, rules)

    # ---- Restore: own checkpoint -> init_from -> scratch ----------------------------------------------------
    manager = checkpointing.make_manager(workdir, config.checkpoint)
    start = manager.latest_step()
    root_rng = jax.random.key(config.seed)
    init_rng, train_rng, eval_rng = jax.random.split(root_rng, 3)
    if start is not None:
      state = checkpointing.restore(manager, start, abstract_state, data_iter)
      log(f"resumed from {workdir}/checkpoints/{start}")
    elif config.init_from:
      params, from_step = checkpointing.restore_params(config.init_from, abstract_state.params)
      state, start = new_state(params), 0
      log(f"initialised parameters from {config.init_from} step {from_step}")
    else:
      state, start = init_state(init_rng), 0
    log(f"model: {count_params(state.params) / 1e6:.1f}M parameters; mesh {dict(mesh.shape)}; "
        f"{total_steps} steps of {config.data.global_batch_size} x {seq_len} tokens "
        f"({train_records} train records, {steps_per_epoch} steps/epoch)")

    # ---- Step --------------------------------------------------------------------------------------------
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    train_step = jax.jit(
        steps.make_mlm_step(model, tx, schedule, mlm=config.mlm, special_ids=special,
                            vocab_size=manifest["vocab_size"], grad_accum_steps=config.optimizer.grad_accum_steps),
        in_shardings=(state_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated), donate_argnums=(0,))
    evaluate = make_evaluator(config, data_dir, manifest, model, mesh, special) if has_validation(manifest) else None

    # ---- Loop --------------------------------------------------------------------------------------------
    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    progress = metrics_lib.ProgressLine(total_steps, start)
    peak = metrics_lib.peak_flops(jax.devices()[0], config.peak_flops_per_device)
    flops_per_token = metrics_lib.train_flops_per_token(model_cfg, seq_len, config.mlm.mask_rate)
    tokens_per_step = config.data.global_batch_size * seq_len
    preempted = _install_sigterm_handler()
    kill_after = int(os.environ.get(_KILL_AFTER_SAVE_ENV, "-1"))
    pending: list[tuple[int, dict]] = []
    last = {}
    t_last, steps_timed = None, 0
    step = start
    while step < total_steps:
      batch = sharding.global_batch(next(data_iter), mesh)
      state, step_metrics = train_step(state, batch, train_rng)
      step += 1
      pending.append((step, step_metrics))
      if t_last is None:                     # the first step compiles: time from the end of it
        jax.block_until_ready(step_metrics)
        last, pending = _flush(pending, writer, {}), []
        t_last, steps_timed = time.time(), 0
      else:
        steps_timed += 1
      stop = preempted["flag"]
      save_now = step % config.checkpoint.every_steps == 0 or step == total_steps or stop
      if pending and (step % config.log_every == 0 or save_now):
        jax.block_until_ready(step_metrics)
        dt = (time.time() - t_last) / max(steps_timed, 1)
        speed = {"step_time_s": dt, "tokens_per_s": tokens_per_step / dt}
        if peak:
          speed["mfu"] = flops_per_token * speed["tokens_per_s"] / (peak * jax.device_count())
        last, pending = _flush(pending, writer, speed), []
        progress(step, last)
        t_last, steps_timed = time.time(), 0
      if evaluate and (step % config.eval_every == 0 or step == total_steps):
        eval_metrics = evaluate(state.params, eval_rng)
        writer.write(step, eval_metrics)
        progress(step, {**last, **eval_metrics})
        last.update(eval_metrics)
      if save_now:
        checkpointing.save(manager, step, state, data_iter, force=stop)
        if step == kill_after:
          manager.wait_until_finished()
          os.kill(os.getpid(), signal.SIGKILL)
      if stop:
        log(f"SIGTERM: saved checkpoint {step}, exiting")
        break
    manager.wait_until_finished()
    manager.close()
    writer.close()

  summary = {"step": step, "total_steps": total_steps, "preempted": bool(preempted["flag"]), **last}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    log("done: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))
  return summary


def copy_tokenizer(manifest: dict, workdir: str) -> None:
  """workdir/tokenizer: a run is self-contained for encode/convert, whatever happens to the data directory."""
  dst = os.path.join(workdir, "tokenizer")
  if jax.process_index() != 0 or os.path.isdir(dst):
    return
  tmp = dst + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(manifest["tokenizer"]["path"], tmp)
  os.replace(tmp, dst)


def has_validation(manifest: dict) -> bool:
  return manifest["splits"].get("validation", {}).get("records", 0) > 0


def make_evaluator(config, data_dir, manifest, model, mesh, special):
  """MLM loss/accuracy on the first eval_batches batches of the validation split, same masks every time."""
  eval_step = jax.jit(steps.make_mlm_eval_step(model, mlm=config.mlm, special_ids=special,
                                               vocab_size=manifest["vocab_size"]))
  batch_size = min(config.data.global_batch_size, manifest["splits"]["validation"]["records"])
  batch_size -= batch_size % max(jax.device_count(), 1)
  if batch_size <= 0:
    return None

  def evaluate(params, rng):
    loader, _ = input_pipeline.make_mlm_loader(
        data_dir, split="validation", seq_len=config.data.seq_len, global_batch_size=batch_size, seed=0,
        shuffle=False, num_epochs=1)
    totals = {"loss_sum": 0.0, "correct_sum": 0.0, "weight_sum": 0.0}
    for i, local in enumerate(loader):
      if i >= config.eval_batches:
        break
      sums = jax.device_get(eval_step(params, sharding.global_batch(local, mesh), jax.random.fold_in(rng, i)))
      totals = {k: totals[k] + float(sums[k]) for k in totals}
    n = max(totals["weight_sum"], 1.0)
    return {"eval_loss": totals["loss_sum"] / n, "eval_mlm_accuracy": totals["correct_sum"] / n}

  return evaluate


def _flush(pending, writer, speed) -> dict:
  """Write one metrics line per step; stop on the first non-finite loss, naming its step."""
  last = {}
  for step, m in jax.device_get(pending):
    scalars = {k: float(v) for k, v in m.items()}
    if not np.isfinite(scalars["loss"]) or not np.isfinite(scalars["grad_norm"]):
      raise NonFiniteLossError(f"step {step}: loss {scalars['loss']}, grad norm {scalars['grad_norm']} "
                               "is not finite; stopping (lower the lr, raise warmup, or check the data)")
    last = scalars
    writer.write(step, scalars if step != pending[-1][0] else {**scalars, **speed})
  return {**last, **speed}


def _install_sigterm_handler() -> dict:
  state = {"flag": False}

  def handler(signum, frame):
    state["flag"] = True
  signal.signal(signal.SIGTERM, handler)
  return state


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(f"[physbert_jax] {msg}", file=sys.stderr, flush=True)


def maybe_initialize_distributed() -> None:
  """Multi-host: jax.distributed picks up Slurm's variables (one process per node, srun) by itself."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


def main(argv):
  del argv
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required, e.g. "
                         "python -m physbert_jax.train --config configs/mlm.py:tiny --workdir runs/tiny")
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  maybe_initialize_distributed()
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (NonFiniteLossError, ValueError, FileNotFoundError) as e:   # config/data errors: the message is the fix
    sys.exit(f"[physbert_jax] error: {e}")


def check_overrides(argv: list[str]) -> None:
  """Name an unknown `--config.a.b=...` key and what exists beside it (ml_collections raises a bare KeyError)."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  if not spec:
    return
  path, _, variant = spec.partition(":")
  if not os.path.exists(path):
    sys.exit(f"--config {spec}: {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("_physbert_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    keys = arg[len("--config."):].split("=", 1)[0].split(".")
    node = config
    for i, key in enumerate(keys):
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        parent = "config." + ".".join(keys[:i]) if i else "config"
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "(not a dict)"
        sys.exit(f"unknown config key {'config.' + '.'.join(keys[:i + 1])} in {arg!r} ({path}); "
                 f"{parent} has: {known}")
      node = node[key]


if __name__ == "__main__":
  check_overrides(sys.argv[1:])
  app.run(main)
