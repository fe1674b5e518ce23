"""data_prep.pdf_to_text: real PDFs made with reportlab through the text layer, broken and hanging PDFs,
Nougat markdown post-processing, and the nougat engine wired end to end with a tiny random model."""

from __future__ import annotations

import gzip
import json
import os
import time

import pytest

pytest.importorskip("pypdfium2", reason="pip install -e '.[nougat]' (pypdfium2) for the PDF stage")
reportlab = pytest.importorskip("reportlab", reason="reportlab makes the test PDFs: pip install reportlab")

from data_prep import nougat_markdown, pdf_to_text, stage  # noqa: E402

NOUGAT_PAGE = r"""# Superconductivity in Twisted Bilayers

###### Abstract

We study pairing in twisted bilayer graphene near the magic angle \(\theta\approx 1.1^{\circ}\).

## 1 Introduction

The critical temperature scales as \[T_{c}\propto\exp(-1/\lambda)\] for weak coupling.

Figure 1: Phase diagram of the bilayer. The dashed line marks \(T_{c}\).

\begin{table}
\begin{tabular}{c c} \(n\) & \(T_c\) \\ 1 & 2 \end{tabular}
\end{table}
Table 1: Measured critical temperatures.

The flat bands host strong correlations. The flat bands host strong correlations. The flat bands host strong correlations. The flat bands host strong correlations.
"""
NOUGAT_PAGE_2 = r"""## 2 Results

We find a dome of superconductivity.
We find a dome of superconductivity.
We find a dome of superconductivity.
We find a dome of superconductivity.

[MISSING_PAGE_FAIL:2]

## References

* [1] Y. Cao _et al._, Nature **556**, 43 (2018).
* [2] R. Bistritzer and A. H. MacDonald, PNAS **108**, 12233 (2011).

## Appendix A Derivation

The gap equation follows from \(\Delta=g\sum_k \Delta/2E_k\).
"""


def test_nougat_markdown_keeps_sections_and_drops_the_rest():
  text, notes = nougat_markdown.paper_text([NOUGAT_PAGE, NOUGAT_PAGE_2])
  lines = text.split("\n")
  assert lines[0] == "Superconductivity in Twisted Bilayers" and "1 Introduction" in lines
  assert r"\[T_{c}\propto\exp(-1/\lambda)\]" in text  # Math kept as text.
  assert "Phase diagram" not in text and "Measured critical" not in text and "tabular" not in text
  assert text.count("The flat bands host strong correlations.") == 1
  assert lines.count("We find a dome of superconductivity.") == 1
  assert "Cao" not in text and "Bistritzer" not in text and "References" not in text
  assert "Appendix A Derivation" in text and r"\(\Delta=g\sum_k \Delta/2E_k\)" in text  # After the references.
  assert "MISSING_PAGE" not in text
  assert notes["captions"] == 3 and notes["loops"] == 2 and notes["missing"] == 1 and notes["references"] == 3


def test_running_headers_and_page_numbers_are_dropped():
  pages = [f"Phys. Rev. B 99, 1234 ({2019})\nBody text of page {i} about phonons.\n{i}" for i in range(1, 5)]
  text, notes = nougat_markdown.paper_text(pages)
  assert text.split("\n") == [f"Body text of page {i} about phonons." for i in range(1, 5)]
  assert notes["headers"] == 8


def make_pdf(path, pages: list[list[str]]) -> str:
  from reportlab.pdfgen import canvas
  c = canvas.Canvas(str(path), pagesize=(612, 792), invariant=1)  # invariant: no timestamp, reproducible.
  for n, lines in enumerate(pages, start=1):
    c.setFont("Helvetica", 10)
    c.drawString(72, 760, "Journal of Test Physics 12 (2024)")
    for i, line in enumerate(lines):
      c.drawString(72, 720 - 14 * i, line)
    c.drawString(300, 40, str(n))
    c.showPage()
  c.save()
  return str(path)


def write_meta(meta_dir, ids: list[str]) -> str:
  os.makedirs(meta_dir, exist_ok=True)
  with stage.jsonl_gz_writer(os.path.join(meta_dir, "papers-00000-of-00001.jsonl.gz")) as w:
    for pid in ids:
      w.write({"id": pid, "title": f"Title {pid}", "abstract": f"Abstract of {pid}.", "categories": "quant-ph",
               "primary_category": "quant-ph", "class": "quant-ph"})
  stage.write_json(os.path.join(meta_dir, "report.json"), {"parts": 1, "outputs": ["papers-00000-of-00001.jsonl.gz"]})
  return str(meta_dir)


def read_text(out: str) -> dict[str, dict]:
  with gzip.open(os.path.join(out, "text-00000-of-00001.jsonl.gz"), "rt") as f:
    return {r["id"]: r for r in map(json.loads, f)}


def test_text_layer_with_broken_missing_and_hanging_pdfs(tmp_path, monkeypatch):
  pdfs = tmp_path / "pdfs" / "1401"
  pdfs.mkdir(parents=True)
  make_pdf(pdfs / "1401.00001v2.pdf", [["1 Introduction", "Entanglement entropy of a spin chain."],
                                       ["2 Results", "The area law holds.", "References", "[1] A. Kitaev."]])
  make_pdf(pdfs / "1401.00001v1.pdf", [["old version"]])
  make_pdf(pdfs / "hep-th9901001.pdf", [["Strings on a circle."]])
  (pdfs / "1401.00002.pdf").write_bytes(b"%PDF-1.4\n this is not a PDF body \x00\x01")  # corrupt
  make_pdf(pdfs / "1401.00004.pdf", [["This one hangs."]])
  meta = write_meta(tmp_path / "meta", ["1401.00001", "1401.00002", "1401.00003", "hep-th/9901001", "1401.00004"])
  real = pdf_to_text.read_text_layer

  def maybe_hang(path, max_pages):
    if "00004" in path:
      time.sleep(60)  # A PDF that makes the reader spin; killed after --timeout.
    return real(path, max_pages)

  monkeypatch.setattr(pdf_to_text, "read_text_layer", maybe_hang)  # Children are forked: they see the patch.
  out = str(tmp_path / "text")
  pdf_to_text.main(["--pdfs", str(tmp_path / "pdfs"), "--meta", meta, "--engine", "text-layer", "--out", out,
                    "--timeout", "3", "--workers", "2", "--quiet"])
  got = read_text(out)
  assert list(got) == ["1401.00001", "1401.00002", "1401.00003", "hep-th/9901001", "1401.00004"]  # Meta order.
  one = got["1401.00001"]
  assert one["pages"] == 2 and one["error"] is None
  assert one["text"].split("\n") == ["1 Introduction", "Entanglement entropy of a spin chain.", "2 Results",
                                     "The area law holds."]  # v2 chosen; header, page numbers, references dropped
  # One page: a running header cannot be told from text (it repeats nowhere); the page number still goes.
  assert got["hep-th/9901001"]["text"] == "Journal of Test Physics 12 (2024)\nStrings on a circle."
  assert got["1401.00002"]["text"] is None and "PdfiumError" in got["1401.00002"]["error"]
  assert got["1401.00003"]["error"] == "no PDF"
  assert got["1401.00004"]["text"] is None and "no result after 3 s" in got["1401.00004"]["error"]
  report = stage.read_json(os.path.join(out, "report.json"))
  assert report["counts"]["fallback_to_abstract"] == 3 and report["counts"]["papers_with_text"] == 2
  reasons = {e["id"]: (e["reason"], e["file"]) for e in report["skipped"]["entries"]}
  assert reasons == {"1401.00002": ("PDF PdfiumError", "1401/1401.00002.pdf"), "1401.00003": ("no PDF", "-"),
                     "1401.00004": ("PDF timeout", "1401/1401.00004.pdf")}


def tiny_nougat():
  """A randomly initialised Nougat-shaped model (Donut-Swin encoder, MBart decoder) and processor; no download."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("PIL")
  from transformers import (DonutSwinConfig, MBartConfig, NougatProcessor, NougatTokenizer,
                            VisionEncoderDecoderConfig, VisionEncoderDecoderModel)
  from transformers.models.nougat.image_processing_pil_nougat import NougatImageProcessorPil
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "[START_REF]": 4}
  for c in "abcdefghijklmnopqrstuvwxyz#\u0120\u010a":  # \u0120 = byte-level space, \u010a = newline
    vocab.setdefault(c, len(vocab))
  processor = NougatProcessor(image_processor=NougatImageProcessorPil(size={"height": 64, "width": 48}),
                              tokenizer=NougatTokenizer(vocab=vocab, merges=[]))
  enc = DonutSwinConfig(image_size=[64, 48], patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                        window_size=4)
  dec = MBartConfig(vocab_size=len(vocab), d_model=16, decoder_layers=1, decoder_attention_heads=1,
                    decoder_ffn_dim=16, max_position_embeddings=64, is_decoder=True, add_cross_attention=True,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2)
  cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
  cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 0, 1, 2
  torch.manual_seed(0)
  model = VisionEncoderDecoderModel(cfg)
  with torch.no_grad():  # Random weights emit <s> forever; make the special tokens unlikely so text comes out.
    model.decoder.lm_head.weight[:5] = 0
    model.decoder.lm_head.weight[5:] *= 50
  return model, processor


def test_nougat_engine_batches_pages_across_papers(tmp_path):
  model, processor = tiny_nougat()
  engine = pdf_to_text.NougatEngine(model, processor, device="cpu", max_new_tokens=6)
  pdfs = tmp_path / "pdfs"
  pdfs.mkdir()
  make_pdf(pdfs / "2001.00001.pdf", [["Page one."], ["Page two."], ["Page three."]])
  make_pdf(pdfs / "2001.00002.pdf", [["Only page, with a large black box."]])
  meta = write_meta(tmp_path / "meta", ["2001.00001", "2001.00002", "2001.00003"])
  calls = []
  real = engine.markdown
  engine.markdown = lambda images: calls.append(len(images)) or real(images)
  out = str(tmp_path / "text")
  part = pdf_to_text.convert_part(str(pdfs), meta, out, 0, 1, "nougat", engine, batch_size=3, quiet=True)
  assert calls == [3, 1]  # 4 pages of two papers in batches of 3: the first batch spans both papers.
  got = read_text(out)
  assert got["2001.00001"]["pages"] == 3 and got["2001.00002"]["pages"] == 1
  assert got["2001.00003"]["error"] == "no PDF"
  # Random weights may decode a page to nothing: such a paper falls back too, and says why.
  empty = [r for r in got.values() if r["text"] is None and r["error"] != "no PDF"]
  assert all(r["error"].startswith("no text on any page") for r in empty)
  assert part["counts"]["fallback_to_abstract"] == 1 + len(empty)
  # Batching does not change a page's output: decode each page alone and compare.
  images = pdf_to_text.render_pages(str(pdfs / "2001.00001.pdf"), 50, engine.height)
  assert images[0].height == 64
  alone = [real([img])[0] for img in images]
  batched = real(images)
  assert alone == batched
  expected, _ = nougat_markdown.paper_text(batched)
  assert (got["2001.00001"]["text"] or None) == (expected or None)
