"""Pages of extracted text (Nougat markdown, or a PDF's text layer) -> the paper's running text.

Kept: section headings (without the '#'), paragraphs, lists, math as LaTeX text (\\(...\\), \\[...\\], $...$).
Dropped, and counted in the returned notes:
  captions     lines "Figure 3: ...", "Fig. 2.", "Table 1 ...", "FIG. 4 ..." and \\begin{table|figure}...\\end{...}
  references   from a "References"/"Bibliography" heading to the next heading (Nougat), or to the end (text layer,
               which has no heading markers)
  headers      running headers/footers: a page's first or last line that repeats on other pages, bare page
               numbers ("12", "- 12 -", "Page 12")
  loops        Nougat's degenerate repetition: a line repeated 3+ times in a row, or a word sequence repeated
               3+ times in a row inside a line (kept once)
  missing      Nougat's [MISSING_PAGE_FAIL:n] / [MISSING_PAGE_EMPTY:n] markers
"""

from __future__ import annotations

import collections
import re

_CAPTION = re.compile(r"^\s*(\*\*)?(fig\.?|figure|table|tab\.)\s*[ivx\d]+[a-z]?\s*[:.|)\-\u2013]?", re.IGNORECASE)
_FLOAT = re.compile(r"\\begin\{(table|figure)\*?\}.*?\\end\{\1\*?\}", re.DOTALL)
_TABULAR = re.compile(r"\\begin\{tabular\}.*?\\end\{tabular\}", re.DOTALL)
_MISSING = re.compile(r"\[MISSING_PAGE_(FAIL|EMPTY|POST)(:\d+)?\]")
_REFS = re.compile(r"^\s*(#+\s*)?([\dIVX]+\.?\s*)?(references|bibliography|literature cited|reference list)\s*:?\s*$",
                   re.IGNORECASE)
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_PAGE_NUMBER = re.compile(r"^\s*(page\s*)?[-\u2013]?\s*\d{1,4}\s*[-\u2013]?\s*(of\s*\d+)?\s*$", re.IGNORECASE)
MIN_REPEATS = 3  # A sequence seen 3 times in a row is a loop; twice happens in real text ("very very").
MAX_PERIOD = 60  # Longest repeated word sequence looked for.


def _squash_word_loops(line: str, notes: collections.Counter) -> str:
  words = line.split(" ")
  if len(words) < 2 * MIN_REPEATS:
    return line
  out, i, n = [], 0, len(words)
  while i < n:
    for p in range(1, min(MAX_PERIOD, (n - i) // MIN_REPEATS) + 1):
      unit = words[i:i + p]
      k = 1
      while words[i + k * p:i + (k + 1) * p] == unit:
        k += 1
      # One-word units need more repeats: "1 1 1" is a matrix row, not a loop.
      if k >= (MIN_REPEATS if p > 1 else 2 * MIN_REPEATS):
        out += unit
        i += k * p
        notes["loops"] += 1
        break
    else:
      out.append(words[i])
      i += 1
  return " ".join(out)


def clean_page(page: str, notes: collections.Counter) -> list[str]:
  """One page -> its kept lines (headers and references are handled across pages, in `paper_text`)."""
  page, n = _MISSING.subn("", page)
  notes["missing"] += n
  page, n = _FLOAT.subn("\n", page)
  notes["captions"] += n
  page, n = _TABULAR.subn("\n", page)
  notes["captions"] += n
  lines: list[str] = []
  previous, run = None, 0
  for line in page.split("\n"):
    line = line.rstrip()
    if not line.strip():
      previous, run = None, 0
      lines.append("")
      continue
    if _CAPTION.match(line):
      notes["captions"] += 1
      continue
    key = " ".join(line.split())
    run = run + 1 if key == previous else 1
    previous = key
    if run >= 2:  # Consecutive duplicates: keep the first; from the 3rd on it is counted as a loop.
      notes["loops"] += run == MIN_REPEATS
      continue
    lines.append(_squash_word_loops(line, notes))
  return lines


def _edge_lines(pages: list[list[str]]) -> set[str]:
  """Running headers/footers: first/last non-empty lines seen on at least 2 pages (and half of them)."""
  if len(pages) < 2:
    return set()
  seen: collections.Counter[str] = collections.Counter()
  for lines in pages:
    body = [" ".join(l.split()) for l in lines if l.strip()]
    seen.update(set(body[:2] + body[-2:]))  # Exact text: page-varying lines are caught by _PAGE_NUMBER.
  return {l for l, c in seen.items() if c >= max(2, len(pages) // 2)}


def paper_text(pages: list[str]) -> tuple[str, dict]:
  """All pages of one paper -> (text, notes: how many of each dropped thing)."""
  notes: collections.Counter[str] = collections.Counter()
  cleaned = [clean_page(p, notes) for p in pages]
  edges = _edge_lines(cleaned)
  out: list[str] = []
  in_refs = False
  for lines in cleaned:
    lines = [" ".join(l.split()) for l in lines]
    lines = [l for l in lines if l]
    is_edge = lambda t: bool(_PAGE_NUMBER.match(t)) or t in edges
    top = 0  # Peel headers off the top and footers off the bottom, as long as they look like one.
    while top < len(lines) and top < 3 and is_edge(lines[top]):
      top += 1
    bottom = len(lines)
    while bottom > top and len(lines) - bottom < 3 and is_edge(lines[bottom - 1]):
      bottom -= 1
    notes["headers"] += top + len(lines) - bottom
    for line in lines[top:bottom]:
      text = line
      if _REFS.match(text):
        in_refs = True
        notes["references"] += 1
        continue
      if in_refs:
        if _HEADING.match(line):
          in_refs = False  # An appendix after the references.
        else:
          notes["references"] += 1
          continue
      text = _HEADING.sub("", text).replace("**", "")
      out.append(text)
  return "\n".join(out), dict(sorted(notes.items()))
