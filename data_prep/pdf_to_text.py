"""arXiv PDFs -> text, with Nougat on GPU or from the PDF's text layer on CPU, one part of the papers per task.

    python -m data_prep.pdf_to_text --pdfs pdf_dir/ --meta data/meta --engine nougat --model-dir nougat-base/ \
        --out data/text
    python -m data_prep.pdf_to_text --pdfs pdf_dir/ --meta data/meta --engine text-layer --out data/text

Engines, one interface (`pages(paper) -> list of page texts`, then nougat_markdown.paper_text):
  nougat      facebook/nougat-base through transformers (VisionEncoderDecoderModel + NougatProcessor; the
              nougat-ocr package pins timm 0.5.4 and transformers < 5 and cannot be installed beside them). Weights
              from --model-dir, never downloaded. Pages are rendered with pypdfium2 in worker processes and decoded
              on the GPU in batches of --batch-size pages that span papers. `pip install -e ".[nougat]"`.
  text-layer  pypdfium2's text extraction: CPU only, right for PDFs with a good text layer (most arXiv PDFs made
              by pdfLaTeX), poor on math.
Full arXiv: 1.25M PDFs, ~15M pages; Nougat-base decodes ~1.5 pages/s per A100 at batch 16 (its paper), i.e.
~2,800 GPU-hours, ~11 h on 256 GPUs; --max-pages bounds the long tail.

PDFs are found by file name anywhere under --pdfs: `2101.00001v2.pdf` (new ids), `hep-th9901001v1.pdf` or
`hep-th_9901001.pdf` (old ids, as in arXiv's bulk S3 archives); the highest version wins.

Every paper is opened and read in a separate process that is killed after --timeout seconds, so a corrupt or
hanging PDF costs one paper, not the task. A paper without a PDF, or whose PDF fails, gets text null and the reason
in "error"; build_corpus then uses its abstract. Output (--out): text-KKKKK-of-NNNNN.jsonl.gz with one line per
paper of part K, in metadata order: {"id", "text" (str or null), "error" (null or reason), "engine", "pages",
"dropped": {captions, references, headers, loops, missing: counts}}; report-*.json as every stage (stage.py).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import time
from typing import Callable, Iterator

from data_prep import arxiv_metadata, nougat_markdown, stage
from data_prep.build_corpus import own_records
from data_prep.corpus_io import Skipped
from physbert_jax import outputs

TIMEOUT_S = 120  # Per paper, for opening and reading/rendering it; a normal 20-page paper takes < 5 s.
MAX_PAGES = 50  # arXiv papers beyond 50 pages are mostly theses and proceedings; their first 50 pages are enough.
_NEW_ID = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
_OLD_ID = re.compile(r"^([a-z\-]+(?:\.[A-Z]{2})?)[_/]?(\d{7})(v\d+)?$")


def pdf_id(filename: str) -> tuple[str, int] | None:
  """A PDF file name -> (arXiv id, version), or None if the name is not an arXiv id."""
  stem = filename[:-4] if filename.lower().endswith(".pdf") else None
  if stem is None:
    return None
  for pattern, make in ((_NEW_ID, lambda m: m.group(1)), (_OLD_ID, lambda m: f"{m.group(1)}/{m.group(2)}")):
    m = pattern.match(stem)
    if m:
      version = m.groups()[-1]
      return make(m), int(version[1:]) if version else 0
  return None


def index_pdfs(pdf_dir: str) -> dict[str, str]:
  """arXiv id -> path of its highest-version PDF under `pdf_dir`."""
  best: dict[str, tuple[int, str]] = {}
  for root, dirs, names in os.walk(pdf_dir):
    dirs.sort()
    for name in sorted(names):
      parsed = pdf_id(name)
      if parsed and parsed[1] >= best.get(parsed[0], (-1, ""))[0]:
        best[parsed[0]] = (parsed[1], os.path.join(root, name))
  return {k: p for k, (_, p) in best.items()}


# --- Reading one PDF, in a child process -----------------------------------------------------------------------


def read_text_layer(path: str, max_pages: int) -> list[str]:
  import pypdfium2 as pdfium
  doc = pdfium.PdfDocument(path)
  try:
    pages = []
    for i in range(min(len(doc), max_pages)):
      page = doc[i]
      textpage = page.get_textpage()
      pages.append(textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n"))
      textpage.close()
      page.close()
    return pages
  finally:
    doc.close()


def render_pages(path: str, max_pages: int, height: int) -> list:
  """Pages as RGB PIL images `height` pixels tall (Nougat's input height; its processor pads the width)."""
  import pypdfium2 as pdfium
  doc = pdfium.PdfDocument(path)
  try:
    images = []
    for i in range(min(len(doc), max_pages)):
      page = doc[i]
      scale = height / page.get_height()  # Points -> pixels.
      images.append(page.render(scale=scale).to_pil().convert("RGB"))
      page.close()
    return images
  finally:
    doc.close()


def _child(conn, fn: Callable, args: tuple) -> None:
  try:
    result = ("ok", fn(*args))
  except Exception as e:  # Sent back as the paper's error; the parent goes on with the next paper.
    result = ("error", f"{type(e).__name__}: {e}")
  conn.send(result)
  conn.close()


def isolated(jobs: Iterator[tuple[object, Callable, tuple]], timeout: float, workers: int):
  """Run fn(*args) for each (key, fn, args) in its own forked process, `workers` at a time, results in order.

  Yields (key, ("ok", value) | ("error", reason)); a job still running `timeout` s after it started is killed.
  Fork, not spawn: a child starts in milliseconds with the modules already imported; it never touches the GPU.
  """
  ctx = multiprocessing.get_context("fork")
  running: collections.deque = collections.deque()

  def start(key, fn, args):
    if fn is None:  # Nothing to run (no PDF): `args` is the result, kept in order with the others.
      running.append((key, None, args, None))
      return
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()
    running.append((key, proc, recv, time.monotonic()))

  def finish():
    key, proc, recv, started = running.popleft()
    if proc is None:
      return key, recv
    try:
      if recv.poll(max(0.0, started + timeout - time.monotonic())):
        result = recv.recv()
      else:
        result = ("timeout", f"no result after {timeout:g} s; killed")
    except EOFError:  # The child died without a word (a crash inside the PDF library).
      result = ("error", "reader process died")
    if proc.is_alive():
      proc.kill()
    proc.join()
    recv.close()
    if result[0] == "error" and proc.exitcode not in (0, None, -9):
      result = ("error", f"{result[1]} (exit code {proc.exitcode})")
    return key, result

  for key, fn, args in jobs:
    start(key, fn, args)
    if len(running) >= workers:
      yield finish()
  while running:
    yield finish()


# --- The Nougat engine -----------------------------------------------------------------------------------------


class NougatEngine:
  """Page images -> Nougat markdown, in batches, on one device."""

  def __init__(self, model, processor, device: str = "cpu", max_new_tokens: int = 3584, dtype=None):
    import torch
    self.torch = torch
    self.model = model.to(device, dtype=dtype).eval()
    self.processor = processor
    self.device, self.dtype = device, dtype or torch.float32
    self.max_new_tokens = max_new_tokens  # Nougat's training length; most pages end far earlier.
    size = processor.image_processor.size
    self.height = size["height"]

  @classmethod
  def from_dir(cls, model_dir: str, device: str | None = None, **kw) -> "NougatEngine":
    import torch
    from transformers import NougatProcessor, VisionEncoderDecoderModel
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = VisionEncoderDecoderModel.from_pretrained(model_dir, local_files_only=True)
    processor = NougatProcessor.from_pretrained(model_dir, local_files_only=True)
    # bf16 on GPU: half the memory and ~2x the batch; Nougat was trained in bf16.
    return cls(model, processor, device, dtype=torch.bfloat16 if device.startswith("cuda") else None, **kw)

  def markdown(self, images: list) -> list[str]:
    if not images:
      return []
    pixels = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
    tok = self.processor.tokenizer
    with self.torch.inference_mode():
      out = self.model.generate(pixels, min_length=1, max_new_tokens=self.max_new_tokens, do_sample=False,
                                num_beams=1, bad_words_ids=[[tok.unk_token_id]])
    return tok.batch_decode(out, skip_special_tokens=True)


# --- One part --------------------------------------------------------------------------------------------------


def convert_part(pdf_dir: str, meta_dir: str, out_dir: str, index: int, count: int, engine: str,
                 nougat: NougatEngine | None = None, batch_size: int = 16, timeout: float = TIMEOUT_S,
                 max_pages: int = MAX_PAGES, workers: int = 2, quiet: bool = False) -> dict:
  skipped = Skipped()  # Papers that fall back to their abstract, with the reason.
  counts = collections.Counter()
  dropped = collections.Counter()
  pdfs = index_pdfs(pdf_dir)
  out = os.path.join(out_dir, stage.part_name("text", index, count, ".jsonl.gz"))
  if engine == "nougat" and nougat is None:
    raise ValueError("engine nougat needs a NougatEngine (--model-dir)")
  reader = (read_text_layer, (max_pages,)) if engine == "text-layer" else (render_pages, (max_pages, nougat.height))

  def jobs():
    for paper in own_records(meta_dir, arxiv_metadata.PAPERS, index, count, skipped):
      path = pdfs.get(paper["id"])
      if path is None:
        yield (paper["id"], None), None, ("error", "no PDF")
      else:
        yield (paper["id"], path), reader[0], (path, *reader[1])

  bar = stage.progress(None, f"pdf_to_text {index}/{count}", " papers", quiet)
  pending: list = []  # (id, path, result) waiting for the GPU, in metadata order.
  with stage.jsonl_gz_writer(out) as writer:

    def flush():
      if engine == "nougat":
        flat = [(i, img) for i, (_, _, (status, pages)) in enumerate(pending) if status == "ok" for img in pages]
        texts: dict[int, list[str]] = collections.defaultdict(list)
        for b in range(0, len(flat), batch_size):  # Batches span papers, so the GPU never sees a half batch
          chunk = flat[b:b + batch_size]           # except at the end of a part.
          for (i, _), md in zip(chunk, nougat.markdown([img for _, img in chunk])):
            texts[i].append(md)
      for i, (pid, path, (status, pages)) in enumerate(pending):
        if engine == "nougat" and status == "ok":
          pages = texts[i]
        record = {"id": pid, "text": None, "error": None, "engine": engine, "pages": None, "dropped": {}}
        if status == "ok":
          text, notes = nougat_markdown.paper_text(pages)
          record.update(pages=len(pages), dropped=notes)
          dropped.update(notes)
          counts["pages"] += len(pages)
          if text.strip():
            record["text"] = text
            counts["papers_with_text"] += 1
            counts["characters"] += len(text)
          else:
            status, pages = "error", "no text on any page (scanned PDF without a text layer?)"
        if status != "ok":
          reason = pages.split(":")[0] if status == "error" and path else status
          record["error"] = pages
          skipped.add(os.path.relpath(path, pdf_dir) if path else "-", None,
                      "no PDF" if path is None else f"PDF {reason}", doc_id=pid, detail=pages)
          counts["fallback_to_abstract"] += 1
        counts["papers"] += 1
        writer.write(record)
        bar.update(1)
      pending.clear()

    queued_pages = 0
    for (pid, path), result in isolated(jobs(), timeout, workers):
      pending.append((pid, path, result))
      queued_pages += len(result[1]) if result[0] == "ok" and engine == "nougat" else 0
      if engine == "text-layer" or queued_pages >= 8 * batch_size:
        flush()
        queued_pages = 0
    flush()
  bar.close()
  counts_out = dict(counts)
  counts_out["dropped"] = dict(sorted(dropped.items()))
  return {"counts": counts_out, "skipped": skipped, "outputs": [os.path.basename(out)]}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--pdfs", required=True, help="directory searched recursively for <arXiv id>[vN].pdf")
  p.add_argument("--meta", required=True, help="directory written by data_prep.arxiv_metadata")
  p.add_argument("--engine", choices=("nougat", "text-layer"), default="nougat")
  p.add_argument("--model-dir", default=None, help="local Nougat checkpoint (config, weights, processor files)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--batch-size", type=int, default=16, help="pages per generate() call; 16 fits bf16 on 40 GB")
  p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds to open and read one PDF")
  p.add_argument("--max-pages", type=int, default=MAX_PAGES, help="pages read per paper")
  p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                 help="PDF reader processes (rendering keeps the GPU fed)")
  stage.add_shard_flags(p)
  args = p.parse_args(argv)
  count, indices = stage.resolve_shards(args.num_shards, args.shard_index)
  if not args.merge:
    if args.engine == "nougat" and not args.model_dir:
      raise SystemExit("--engine nougat needs --model-dir (a local copy of facebook/nougat-base)")
    nougat = NougatEngine.from_dir(args.model_dir) if args.engine == "nougat" else None
    settings = {"engine": args.engine, "model_dir": args.model_dir, "max_pages": args.max_pages,
                "meta": os.path.abspath(args.meta), "pdfs": os.path.abspath(args.pdfs)}
    stage.run_parts("pdf_to_text", args.out, settings, count, indices,
                    lambda k, n: convert_part(args.pdfs, args.meta, args.out, k, n, args.engine, nougat,
                                              args.batch_size, args.timeout, args.max_pages, args.workers,
                                              args.quiet),
                    force=args.force)
  if args.merge or len(indices) == count:
    report = stage.merge_reports(args.out, count, "pdf_to_text")
    print(stage.summary_line("pdf_to_text", report))
    print(stage.skipped_summary(report["skipped"]))


if __name__ == "__main__":
  with outputs.user_errors():   # bad input or a full disk: one line naming the file, not a traceback
    main()
