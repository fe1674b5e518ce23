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
import sys
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from physbert_jax import (checkpointing, contrastive, grid, metrics as metrics_lib, mlm, multihost, optimizer, outputs,
                          sharding, steps)
from physbert_jax.model import Bert, BertConfig, count_params

OBJECTIVES = {"mlm": mlm.objective, "contrastive": contrastive.objective}   # config.objective -> steps.Objective

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<experiment>.py:<variant>", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, TensorBoard and config.json go here")


class NonFiniteLossError(RuntimeError):
  pass


def check_workdir_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuse to continue a workdir written by a different config: resuming would silently mix two runs."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir} is a file, not a folder; choose a folder path")
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  exists = os.path.exists(path)
  multihost.barrier("config.json checked")      # every process looked before process 0 writes it
  if exists:
    with open(path) as f:
      saved = json.load(f)
    diff = _diff(saved, current)
    if diff:
      raise ValueError(f"{workdir} was started with a different config ({path}); differing keys: "
                       f"{', '.join(diff[:10])}. Use a new --workdir, or delete {workdir} to start over.")
  else:
    multihost.once("config.json", lambda: outputs.write_json(path, current))


def _diff(a, b, prefix="") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
  return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size")


def check_init_architecture(config: ml_collections.ConfigDict) -> None:
  """config.init_from must hold the architecture config.model describes; name every field that differs."""
  path = os.path.join(config.init_from, "config.json")
  if not os.path.exists(path):
    return                                   # restore_params names what is missing
  with open(path) as f:
    theirs = json.load(f).get("model", {})
  differ = [k for k in ARCHITECTURE_KEYS if k in theirs and theirs[k] != config.model[k]]
  if differ:
    diff = "; ".join(f"{k}: {theirs[k]} there, {config.model[k]} here" for k in differ)
    fix = " ".join(f"--config.model.{k}={theirs[k]}" for k in differ)
    raise ValueError(f"config.init_from={config.init_from} is another architecture ({diff}); "
                     f"set config.model to match, e.g. {fix}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_workdir_config(workdir, config)
  if config.init_from:
    check_init_architecture(config)

  # ---- Mesh ------------------------------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  sharding.check_batch_divides(config.data.global_batch_size, mesh, config.optimizer.grad_accum_steps)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # ---- Input and model: what the objective (mlm | contrastive) needs -----------------------------------
    model = Bert(BertConfig(**config.model))
    if config.objective not in OBJECTIVES:
      raise ValueError(f"config.objective={config.objective!r}: use {' or '.join(OBJECTIVES)}")
    objective = OBJECTIVES[config.objective](config, model, mesh, workdir)
    check_tokenizer_fits(model.cfg, objective.tokenizer_dir)
    multihost.once("tokenizer", lambda: copy_tokenizer(objective.tokenizer_dir, workdir))
    multihost.once("encoder.json", lambda: objective.encoder.write(workdir))
    total_steps = steps.total_steps(config, objective.steps_per_epoch)
    tx, schedule = optimizer.make_optimizer(config.optimizer, total_steps)
    state_sharding, abstract_state, init_state, new_state = steps.sharded_state_fns(objective.init_params, tx, mesh,
                                                                                     rules)

    # ---- Restore: own checkpoint -> init_from -> scratch ----------------------------------------------------
    manager = checkpointing.make_manager(workdir, config.checkpoint, best_metric=objective.best_metric)
    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    state, start = checkpointing.restore_latest_intact(manager, abstract_state, log)
    if start is not None and start >= total_steps:     # a rerun of a finished run: nothing to train or rewrite
      manager.close()
      log(f"{workdir} is complete ({start} of {total_steps} steps); nothing to do")
      return _read_summary(workdir) or {"step": start, "total_steps": total_steps, "preempted": False}
    if start is not None:
      log(f"resumed from {workdir}/checkpoints/{start}")
    elif config.init_from:
      params, from_step = checkpointing.restore_params(config.init_from, abstract_state.params)
      state, start = new_state(params), 0
      log(f"initialised parameters from {config.init_from} step {from_step}")
    else:
      state, start = init_state(init_rng), 0
    log(f"model: {count_params(state.params) / 1e6:.1f}M parameters; mesh {dict(mesh.shape)}; {total_steps} steps; "
        f"{objective.describe}")

    # ---- Step --------------------------------------------------------------------------------------------
    replicated = sharding.replicated(mesh)
    train_step = jax.jit(objective.make_step(tx, schedule),
                         in_shardings=(state_sharding, sharding.batch_sharding(mesh), replicated),
                         out_shardings=(state_sharding, replicated), donate_argnums=(0,))

    # ---- Loop --------------------------------------------------------------------------------------------
    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    progress = metrics_lib.ProgressLine(total_steps, start)
    peak = metrics_lib.peak_flops(jax.devices()[0], config.peak_flops_per_device)
    eval_every = _eval_every(config, objective.steps_per_epoch)
    stop_signal = multihost.StopSignal(mesh)
    pending: list[tuple[int, dict]] = []
    last = {}
    t_last, steps_timed, cost = None, 0, np.zeros(2)
    shapes_seen = set()
    step, stop = start, False
    data_iter = objective.batches(start)          # batch s is a function of (seed, s): a resume reads on from here
    while step < total_steps:
      local = next(data_iter)
      shape = tuple(sorted((k, v.shape) for k, v in local.items()))
      if shape not in shapes_seen:           # length-bucketed pair batches: one compilation per new shape
        if shapes_seen:
          log(f"step {step + 1}: new batch shape {dict(shape)}, compiling")
        shapes_seen.add(shape)
      batch = sharding.global_batch(local, mesh)
      state, step_metrics = train_step(state, batch, train_rng)
      step += 1
      pending.append((step, step_metrics))
      if t_last is None:                     # the first step compiles: time from the end of it
        jax.block_until_ready(step_metrics)
        last, pending = _write_metrics_stop_on_nan(pending, writer, {}), []
        t_last, steps_timed, cost = time.time(), 0, np.zeros(2)
      else:
        steps_timed += 1
        cost += objective.batch_cost(local)
      stop = stop_signal()                  # every process stops after the same step
      evaluate_now = objective.evaluate is not None and (step % eval_every == 0 or step == total_steps)
      save_now = step % config.checkpoint.every_steps == 0 or step == total_steps or stop or (
          evaluate_now and objective.best_metric is not None)   # a candidate for "best" must exist on disk
      if pending and (step % config.log_every == 0 or save_now):
        jax.block_until_ready(step_metrics)
        elapsed = time.time() - t_last
        tokens, flops = cost * jax.process_count() / max(elapsed, 1e-9)     # every process's batch, per second
        speed = {"step_time_s": elapsed / max(steps_timed, 1), "tokens_per_s": tokens,
                 "examples_per_s": config.data.global_batch_size * steps_timed / max(elapsed, 1e-9)}
        if peak:
          speed["mfu"] = flops / (peak * jax.device_count())
        last, pending = _write_metrics_stop_on_nan(pending, writer, speed), []
        progress(step, last)
        t_last, steps_timed, cost = time.time(), 0, np.zeros(2)
      eval_metrics = None
      if evaluate_now:
        eval_metrics = objective.evaluate(state.params, step)
        writer.write(step, eval_metrics)
        progress(step, {**last, **eval_metrics})
        last.update(eval_metrics)
      if save_now:
        manager.wait_until_finished()            # the previous async save's bytes are on disk: measure what is free
        checkpointing.check_space(workdir, state, step)
        checkpointing.save(manager, step, state, force=stop, metrics=eval_metrics)
        if eval_metrics and objective.best_metric:
          checkpointing.record_best(workdir, step, eval_metrics, objective.best_metric)
      if stop:
        log(f"SIGTERM: saved checkpoint {step}, exiting")
        break
    manager.wait_until_finished()
    manager.close()
    writer.close()

  summary = {"step": step, "total_steps": total_steps, "preempted": stop, **last}
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "summary.json"), summary)
    log("done: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))
  return summary


def _read_summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _eval_every(config, steps_per_epoch: int) -> int:
  """config.eval_every steps, or (when config.evals_per_epoch > 0) that many evaluations per epoch (paper: 3)."""
  per_epoch = config.get("evals_per_epoch", 0)
  if per_epoch:
    return max(steps_per_epoch // per_epoch, 1)
  return config.eval_every


def check_tokenizer_fits(model_cfg: BertConfig, tokenizer_dir: str) -> None:
  from tokenizers import Tokenizer
  path = os.path.join(tokenizer_dir, "tokenizer.json")
  size = Tokenizer.from_file(path).get_vocab_size()
  if size > model_cfg.vocab_size:
    raise ValueError(f"{path} has {size} tokens, config.model.vocab_size is {model_cfg.vocab_size}")


def copy_tokenizer(tokenizer_dir: str, workdir: str) -> None:
  """workdir/tokenizer: a run is self-contained for encode/convert, whatever happens to the data directory."""
  dst = os.path.join(workdir, "tokenizer")
  if os.path.isdir(dst):
    return
  tmp = os.path.join(outputs.staging_dir(dst), "t")   # a fresh folder: never a path someone else may own
  shutil.copytree(tokenizer_dir, tmp)
  os.replace(tmp, dst)
  shutil.rmtree(os.path.dirname(tmp), ignore_errors=True)   # the now-empty staging folder, ours


def _write_metrics_stop_on_nan(pending, writer, speed) -> dict:
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


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(f"[physbert_jax] {msg}", file=sys.stderr, flush=True)


def main(argv):
  del argv
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required, e.g. "
                         "python -m physbert_jax.train --config configs/mlm.py:tiny --workdir runs/tiny")
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  try:
    multihost.initialize()
    if FLAGS.config.get("grid"):          # e.g. configs/subdomain.py: every combination is one ordinary run
      grid.run_grid(FLAGS.config, FLAGS.workdir, train_and_evaluate)
    else:
      train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Exception as e:
    if outputs.is_disk_full(e):
      sys.exit(f"[physbert_jax] error: no space left on the device under {FLAGS.workdir}; free space and rerun the "
               f"same command: it resumes from the last complete checkpoint ({' '.join(str(e).split())[:300]})")
    if isinstance(e, (NonFiniteLossError, ValueError, FileNotFoundError)):   # config/data errors: the message is
      sys.exit(f"[physbert_jax] error: {e}")                                # the fix
    raise


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
