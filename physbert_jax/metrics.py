"""Training feedback: model FLOPs and MFU, and one writer for console, workdir/metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

from physbert_jax import outputs

# Dense bf16 peak per device (no sparsity), from the vendors' datasheets. Override: config.peak_flops_per_device.
PEAK_BF16_FLOPS = {
    "a100": 312e12,
    "h100": 989e12,   # SXM; the PCIe card is 756e12
    "h200": 989e12,
    "gh200": 989e12,
    "b200": 2250e12,
}


def peak_flops(device: jax.Device, override: float = 0.0) -> float | None:
  if override:
    return override
  kind = device.device_kind.lower()
  if "h100" in kind and "pcie" in kind:
    return 756e12
  for name, flops in sorted(PEAK_BF16_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name in kind:
      return flops
  return None   # CPU or unknown: MFU is not reported


def train_flops_per_token(model_cfg, seq_len: int, mask_rate: float) -> float:
  """Forward + backward FLOPs per token (x3 forward), counting matmuls only (PaLM appendix B convention).

  Per layer: QKV + output projections 4H^2, FFN 2HF multiply-adds; attention scores and values 2 L H.
  MLM head (dense H^2 + tied decoder HV) only on the masked fraction, as our step computes it.
  """
  h, f, n = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers
  per_layer = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * seq_len * h
  head = mask_rate * 2 * (h * h + h * model_cfg.vocab_size)
  return 3.0 * (n * per_layer + head)


class MetricWriter:
  """Writes scalars to metrics.jsonl (every line has `step`) and TensorBoard; only process 0 writes."""

  def __init__(self, workdir: str, resume_step: int = 0):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not self.active:
      return
    if os.path.exists(self.path):
      self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _truncate_after(self, step: int) -> None:
    """A resumed run replays the steps after its checkpoint: drop their old lines so each step appears once."""
    with open(self.path) as f:
      lines = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with outputs.atomic_path(self.path) as tmp, open(tmp, "w") as f:
      f.writelines(lines)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self.tb.add_scalar(k, float(v), step)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class ProgressLine:
  """One console line per log interval: step, losses, throughput, MFU and ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total, self.start, self.t0 = total_steps, start_step, time.time()

  def __call__(self, step: int, scalars: dict[str, float]) -> None:
    if jax.process_index() != 0:
      return
    done = step - self.start
    elapsed = time.time() - self.t0
    eta = elapsed / max(done, 1) * (self.total - step)
    parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"]
    for k in ("loss", "mlm_accuracy", "accuracy", "eval_loss", "val_mean", "lr", "grad_norm", "tokens_per_s",
              "examples_per_s", "step_time_s", "mfu"):
      if k in scalars and not math.isnan(scalars[k]):
        v = scalars[k]
        parts.append(f"{k} {v:.3g}" if k != "tokens_per_s" else f"{k} {v:,.0f}")
    parts.append(f"eta {_fmt(eta)}")
    print(" | ".join(parts), file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
