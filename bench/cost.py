"""GPU-hours of the paper's full run, from FLOPs and a throughput: measured (bench/gpu.py's JSON lines) or assumed.

  python bench/cost.py                                      # assumed MFU (ASSUMED_MFU), marked as an estimate
  python bench/cost.py --measured bench/results/gpu-nvidia-h200.jsonl   # the H200's measured MLM MFU

Prints the Markdown table docs/COST.md holds. The run (paper Sec. 3): BERT-base MLM, 4 epochs at 128 tokens then
6 at 512 over ~8G tokens (41 GB of text at ~5 characters a token), then 2 epochs of contrastive training over 5M
pairs (2M category abstract pairs, 1M citation title pairs, 2M question -> 1,000-character passage pairs).
FLOPs: physbert_jax.metrics.train_flops_per_token (matmuls, forward + backward; the MLM head on the masked 15%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from physbert_jax.metrics import PEAK_BF16_FLOPS, train_flops_per_token  # noqa: E402
from physbert_jax.model import BertConfig  # noqa: E402

CORPUS_TOKENS = 8e9
MLM_PHASES = ((128, 4), (512, 6))                 # (sequence length, epochs)
PAIR_TOKENS = {"category": (2e6, 2 * 256), "citation": (1e6, 2 * 32), "qa": (2e6, 32 + 256)}   # pairs, padded
CONTRASTIVE_EPOCHS = 2                                                                     # tokens a pair
ASSUMED_MFU = 0.40          # an estimate, not a measurement: MLPerf-class BERT training reaches about 45-50%
GPUS = {"A100": PEAK_BF16_FLOPS["a100"], "H100": PEAK_BF16_FLOPS["h100"], "H200": PEAK_BF16_FLOPS["h200"]}
PAPER_GPUS = 128            # 32 nodes x 4 A100


def run_flops(cfg: BertConfig | None = None) -> dict[str, float]:
  cfg = cfg or BertConfig(vocab_size=30523)
  mlm = sum(CORPUS_TOKENS * epochs * train_flops_per_token(cfg, seq, 0.15) for seq, epochs in MLM_PHASES)
  contrastive = CONTRASTIVE_EPOCHS * sum(
      pairs * tokens * train_flops_per_token(cfg, tokens // 2, 0.0) for pairs, tokens in PAIR_TOKENS.values())
  return {"mlm": mlm, "contrastive": contrastive}


def measured_mfu(path: str) -> float:
  """The best MLM MFU at seq 128 that bench/gpu.py measured."""
  lines = [json.loads(x) for x in open(path) if x.strip()]
  mfus = [x["mfu"] for x in lines if x.get("check") == "mlm_step" and x.get("seq_len") == 128 and x.get("mfu")]
  if not mfus:
    raise SystemExit(f"{path}: no mlm_step line at seq 128 with an MFU (run bench/gpu.py on a GPU first)")
  return max(mfus)


def table(mfu: float, source: str) -> str:
  f = run_flops()
  total = f["mlm"] + f["contrastive"]
  rows = [f"FLOPs: MLM {f['mlm']:.3g}, contrastive {f['contrastive']:.3g}, total {total:.3g}; MFU {mfu:.0%} "
          f"({source}).", "", "| GPU | peak bf16 TFLOP/s | MLM GPU-hours | contrastive GPU-hours | total GPU-hours |"
          " wall time on 128 GPUs |", "|---|---:|---:|---:|---:|---:|"]
  for name, peak in GPUS.items():
    hours = {k: v / (peak * mfu) / 3600 for k, v in f.items()}
    all_hours = sum(hours.values())
    rows.append(f"| {name} | {peak / 1e12:.0f} | {hours['mlm']:,.0f} | {hours['contrastive']:,.0f} | "
                f"{all_hours:,.0f} | {all_hours / PAPER_GPUS:.1f} h |")
  return "\n".join(rows)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--measured", default=None, help="bench/gpu.py's JSON lines: use their MLM MFU at seq 128")
  args = p.parse_args(argv)
  if args.measured:
    print(table(measured_mfu(args.measured), f"measured: {args.measured}"))
  else:
    print(table(ASSUMED_MFU, "ESTIMATE: assumed, not measured"))


if __name__ == "__main__":
  main()
