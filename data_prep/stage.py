"""What every data_prep stage shares: a sharded, restartable map over papers, as a Slurm array runs it.

    python -m data_prep.<stage> ... --num-shards 256 --shard-index 17     # one part; or under `sbatch --array=0-255`
    python -m data_prep.<stage> ... --num-shards 256 --merge              # after all parts: check and summarise

Sharding. A paper belongs to part `shard_of(id, N)` (sha256 of the arXiv id, mod N) in every stage, so the copies
of one id always meet in the same part (de-duplication inside a part is global) and a paper's metadata, PDF text
and corpus document carry the same part number. `--num-shards/--shard-index` default to Slurm's
SLURM_ARRAY_TASK_COUNT/SLURM_ARRAY_TASK_ID; outside an array the default is one part, or every part in turn.

Restart. Every output file is written to a temp name in its directory and renamed when complete, and a part's
report (`report-KKKKK-of-NNNNN.json`) is renamed into place last, so it marks the part as done. A rerun skips parts
whose report exists and was made with the same settings, and redoes the rest from scratch: output bytes depend only
on the inputs and settings (gzip without timestamps, no timings in files), so a part killed half-way and rerun is
byte-identical to one that never died. `--merge` refuses to summarise until every part's report is there.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import sys
import time
from typing import Any, Iterator

from tqdm import tqdm

from data_prep import corpus_io
from data_prep.corpus_io import Skipped
from physbert_jax import outputs

GZIP_LEVEL = 6  # zlib's default: ~4.5x on arXiv JSON; level 9 saves ~3% more and takes twice as long.


def hash64(text: str) -> int:
  """A stable 64-bit number for a text (sha256's first 8 bytes, little-endian; not Python's salted hash): every
  seeded choice in data_prep and eval (shards, splits, pair draws, chunk order) is one of these."""
  return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def shard_of(paper_id: str, num_shards: int) -> int:
  """The part a paper belongs to, in every stage."""
  return hash64(paper_id) % num_shards


def part_name(prefix: str, index: int, count: int, suffix: str) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}{suffix}"


def report_path(out_dir: str, index: int, count: int) -> str:
  return os.path.join(out_dir, part_name("report", index, count, ".json"))


# --- Command line ----------------------------------------------------------------------------------------------


def add_shard_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--num-shards", type=int, default=None,
                 help="parts to split the work into (default: $SLURM_ARRAY_TASK_COUNT, else 1)")
  p.add_argument("--shard-index", type=int, default=None,
                 help="the part to run (default: $SLURM_ARRAY_TASK_ID, else every part in turn)")
  p.add_argument("--merge", action="store_true", help="check that every part is done and write report.json")
  p.add_argument("--force", action="store_true", help="redo parts that are already done")
  p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_shards(num_shards: int | None, shard_index: int | None) -> tuple[int, list[int]]:
  """(N, the part indices this process runs), Slurm array variables filling in what the command line left out."""
  env = os.environ
  if num_shards is None:
    num_shards = int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
  if shard_index is None and "SLURM_ARRAY_TASK_ID" in env:
    # Arrays may start at any index (--array=1-256); count from SLURM_ARRAY_TASK_MIN.
    shard_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
  if num_shards < 1:
    raise ValueError(f"--num-shards {num_shards}: need at least 1")
  if shard_index is not None and not 0 <= shard_index < num_shards:
    raise ValueError(f"--shard-index {shard_index} is outside 0..{num_shards - 1} (--num-shards {num_shards})")
  return num_shards, list(range(num_shards)) if shard_index is None else [shard_index]


def progress(total: int | None, desc: str, unit: str, quiet: bool):
  # mininterval: a bar that redraws ten times a second fills Slurm's log files.
  return tqdm(total=total, desc=desc, unit=unit, disable=quiet or None, mininterval=5.0, file=sys.stderr)


# --- Atomic outputs --------------------------------------------------------------------------------------------


atomic_path = outputs.atomic_path   # one implementation; kept under this name for the stages


@contextlib.contextmanager
def jsonl_gz_writer(path: str) -> Iterator[Any]:
  """Write JSON lines to `path` (gzip, no timestamp or name in the header, so reruns are byte-identical)."""
  with atomic_path(path) as tmp, open(tmp, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz:
      with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text:
        yield _JsonLines(text)


class _JsonLines:
  def __init__(self, f):
    self.f = f
    self.count = 0

  def write(self, obj: dict) -> None:
    self.f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    self.count += 1


def write_json(path: str, obj: Any) -> None:
  outputs.write_json(path, obj, sort_keys=True)


def read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# --- Reading JSON lines that may be damaged --------------------------------------------------------------------


def iter_json_lines(path: str, skipped: Skipped, name: str | None = None) -> Iterator[tuple[int, dict]]:
  """Yield (line number, object) from a .jsonl or .jsonl.gz / .json.gz file; damage goes to `skipped`.

  A line that is not UTF-8, not JSON or not an object is skipped and recorded; a truncated or corrupt gzip stream
  ends the file with one record saying after which line (nothing after it can be read), and the caller goes on.
  """
  name = name or path
  for lineno, raw in corpus_io.read_lines(path, name, skipped):
    if not raw.strip():
      continue
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      skipped.add(name, lineno, "not UTF-8", detail=f"byte {e.start} of the line")
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      skipped.add(name, lineno, "invalid JSON", detail=f"{e.msg} at column {e.colno}")
      continue
    if not isinstance(obj, dict):
      skipped.add(name, lineno, "not a JSON object")
      continue
    yield lineno, obj


# --- Parts and their reports -----------------------------------------------------------------------------------


def part_is_done(out_dir: str, index: int, count: int, settings: dict) -> bool:
  """Is part `index` complete, made with these settings, with every output file it lists still present?"""
  path = report_path(out_dir, index, count)
  try:
    report = read_json(path)
  except (OSError, ValueError):
    return False
  if report.get("settings") != settings:
    return False
  return all(os.path.exists(os.path.join(out_dir, f)) for f in report.get("outputs", []))


def merge_reports(out_dir: str, count: int, stage: str) -> dict:
  """Check that all `count` parts are done; sum their counters into `out_dir`/report.json and return it."""
  missing = [i for i in range(count) if not os.path.exists(report_path(out_dir, i, count))]
  if missing:
    shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
    raise FileNotFoundError(
        f"{out_dir}: {len(missing)} of {count} parts are not done (indices {shown}); rerun them with "
        f"--num-shards {count} --shard-index K (or resubmit the array with --array=<those indices>)")
  parts = [read_json(report_path(out_dir, i, count)) for i in range(count)]
  settings = {json.dumps(p["settings"], sort_keys=True) for p in parts}
  if len(settings) > 1:
    raise ValueError(f"{out_dir}: parts were made with different settings; rerun with --force")
  merged = {"stage": stage, "parts": count, "settings": parts[0]["settings"], "counts": {},
            "skipped": {"count": 0, "by_reason": {}, "entries": []}, "outputs": []}
  for p in parts:
    _add_counts(merged["counts"], p["counts"])
    merged["skipped"]["count"] += p["skipped"]["count"]
    for reason, n in p["skipped"]["by_reason"].items():
      merged["skipped"]["by_reason"][reason] = merged["skipped"]["by_reason"].get(reason, 0) + n
    merged["skipped"]["entries"] += p["skipped"]["entries"][:1000 - len(merged["skipped"]["entries"])]
    merged["outputs"] += p["outputs"]
  merged["skipped"]["by_reason"] = dict(sorted(merged["skipped"]["by_reason"].items()))
  write_json(os.path.join(out_dir, "report.json"), merged)
  return merged


def _add_counts(into: dict, counts: dict) -> None:
  for k, v in counts.items():
    if isinstance(v, dict):
      _add_counts(into.setdefault(k, {}), v)
    else:
      into[k] = into.get(k, 0) + v


def summary_line(stage: str, report: dict) -> str:
  counts = ", ".join(f"{k} {v:,}" for k, v in report["counts"].items() if isinstance(v, int))
  return f"{stage}: {counts}; skipped {report['skipped']['count']:,}"


def skipped_summary(skipped_json: dict, show: int = 10) -> str:
  """The report's skipped section as text: counts by reason, then the first entries with file, line and id."""
  s = Skipped()
  s.count, s.entries = skipped_json["count"], skipped_json["entries"]
  s.by_reason.update(skipped_json["by_reason"])
  return s.summary(show)


# --- The driver every stage's main() calls ---------------------------------------------------------------------


def claim_part_dir(out_dir: str, stage: str) -> None:
  """Make `out_dir` this stage's part folder, or refuse it: a folder holding anything this stage did not write
  (its marker says whose), or a plain file, is never written into."""
  # Parts are written into the folder, not renamed over it: a symbolic link to a folder (scratch space) is fine.
  # This stage's own parts are reused or redone (overwrite=True); anything else is never written into.
  outputs.check_out(os.path.realpath(out_dir), stage, overwrite=True)
  os.makedirs(out_dir, exist_ok=True)
  if not os.path.exists(os.path.join(out_dir, outputs.MARKER)):
    outputs.mark(out_dir, stage)


def run_parts(stage: str, out_dir: str, settings: dict, num_shards: int, indices: list[int], run_part,
              force: bool = False) -> None:
  """Run `run_part(index, num_shards) -> {"counts", "skipped", "outputs"}` for each part not already done.

  The part's report (settings, counts, skipped with file/line/id, output file names) is written last, atomically:
  it is the part's completion mark. `out_dir` must be new, empty or this stage's own (its marker; the parts of an
  array share it): anything else there is refused before any part runs (physbert_jax.outputs).
  """
  claim_part_dir(out_dir, stage)
  for k in indices:
    if not force and part_is_done(out_dir, k, num_shards, settings):
      print(f"{stage}: part {k} of {num_shards} already done ({report_path(out_dir, k, num_shards)}); skipping")
      continue
    start = time.time()
    part = run_part(k, num_shards)
    report = {"stage": stage, "part": k, "parts": num_shards, "settings": settings, "counts": part["counts"],
              "skipped": part["skipped"].to_json(), "outputs": part["outputs"]}
    if "extra" in part:
      report["extra"] = part["extra"]
    write_json(report_path(out_dir, k, num_shards), report)
    print(f"{summary_line(stage, report)} [part {k} of {num_shards}, {time.time() - start:.1f}s]")
    if part["skipped"].count:
      print(part["skipped"].summary())
