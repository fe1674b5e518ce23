"""The text side of synthetic question/answer pairs: chunks, the prompt, parsing completions, filters.

Chunks (paper: 1,000 characters): paragraphs are split into sentences (a '.', '!' or '?' followed by space and a
capital, digit, '$', '\\' or bracket, except after common abbreviations and initials), and sentences are packed
greedily into chunks of at most `max_chars`; a sentence longer than that is cut at spaces. A last chunk shorter
than `min_chars` is dropped (a reference list's tail, a lone heading). An arXiv abstract (~1,000 characters) is
usually one chunk; a full paper (~40k characters) ~45.

Parsing: instruct models answer in JSON when asked (a list, an object wrapping a list, JSON lines, inside ```json
fences, or cut off by the token limit: every complete object is kept), and otherwise in numbered or labelled text
("1. Question: ... Answer: ...", "Q1: ... A1: ...", "**Question 1:** ...", "1. What ...? <answer>"). Both are read.
A numbered list of bare questions (small models write them) gives no pair: the text after its last question (a
heading, a JSON attempt, the next number cut by the token limit) is not an answer.

Filters, each counted by reason: length bounds on question and answer; the question must end with '?', must not
refer to "the passage/text" (a search query has no passage) and must not contain the answer; the answer must be
grounded in the chunk (>= `min_grounding` of its content words occur in the chunk, and every number in it does);
duplicate questions (normalised: lowercase, words only) within a part are dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from typing import Iterable

PROMPT_VERSION = 1   # bump when SYSTEM/USER change: it is part of the settings that decide reuse of completions
SYSTEM = "You are a physicist who writes precise exam questions about research papers."
USER = """Here is a passage from a physics paper:

<passage>
{chunk}
</passage>

Write three question-answer pairs about this passage.
- Each question must be answerable only from the information in this passage, and specific enough that this \
passage is where one would find the answer.
- Each question must make sense on its own, to someone who has not seen the passage: never write "the passage", \
"the text" or "this paper".
- Each answer is short (a phrase or one sentence) and taken from the passage, in its words where possible.

Reply with only a JSON list, in this form:
[{{"question": "...", "answer": "..."}}, {{"question": "...", "answer": "..."}}, {{"question": "...", "answer": "..."}}]"""


def conversation(chunk: str) -> list[dict]:
  return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(chunk=chunk)}]


# --- Chunks ----------------------------------------------------------------------------------------------------

_ABBREV = frozenset(
    "e.g i.e et al etc fig figs eq eqs eqn ref refs sec secs tab vs cf approx resp no nos vol pp dr prof mr mrs "
    "ms st ch thm def prop lem cor viz ca. resp".split())
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9$\\])")


def sentences(paragraph: str) -> list[str]:
  out, start = [], 0
  for m in _BOUNDARY.finditer(paragraph):
    before = paragraph[start:m.start() + 1].rstrip(".!?\"')]")
    last = before.split()[-1].lower() if before.split() else ""
    if last in _ABBREV or last.endswith(("e.g", "i.e")) or (len(last) == 1 and last.isalpha()):
      continue  # "et al. Smith", "Fig. 3", "A. Einstein": not the end of a sentence.
    out.append(paragraph[start:m.end()].strip())
    start = m.end()
  if paragraph[start:].strip():
    out.append(paragraph[start:].strip())
  return out


def _pieces(sentence: str, max_chars: int) -> list[str]:
  """A sentence cut at spaces into pieces of at most max_chars (a space-free run longer than that is cut hard)."""
  pieces, cur = [], ""
  for word in sentence.split():
    while len(word) > max_chars:
      if cur:
        pieces.append(cur)
        cur = ""
      pieces.append(word[:max_chars])
      word = word[max_chars:]
    if cur and len(cur) + 1 + len(word) > max_chars:
      pieces.append(cur)
      cur = word
    else:
      cur = f"{cur} {word}" if cur else word
  return pieces + ([cur] if cur else [])


def chunks(text: str, max_chars: int = 1000, min_chars: int = 200) -> list[str]:
  out, cur = [], ""
  for paragraph in text.split("\n"):
    for s in sentences(" ".join(paragraph.split())):
      for piece in _pieces(s, max_chars) if len(s) > max_chars else [s]:
        if cur and len(cur) + 1 + len(piece) > max_chars:
          out.append(cur)
          cur = piece
        else:
          cur = f"{cur} {piece}" if cur else piece
  if cur:
    out.append(cur)
  if out and len(out[-1]) < min_chars:
    out.pop()
  return out


# --- Parsing ---------------------------------------------------------------------------------------------------

_Q_KEYS = ("question", "q", "query")
_A_KEYS = ("answer", "a", "response")


def _qa_items(value) -> list[dict]:
  """QA dicts in a decoded JSON value: a list of objects, an object wrapping one, or one object."""
  if isinstance(value, list):
    return [x for v in value for x in _qa_items(v) if isinstance(v, dict)]
  if not isinstance(value, dict):
    return []
  low = {str(k).lower().strip(): v for k, v in value.items()}
  q = next((low[k] for k in _Q_KEYS if isinstance(low.get(k), str)), None)
  a = next((low[k] for k in _A_KEYS if isinstance(low.get(k), (str, int, float))), None)
  if q is not None and a is not None:
    return [{"question": q, "answer": str(a)}]
  for v in value.values():   # {"pairs": [...]}, {"qa_pairs": [...]}, ...
    if isinstance(v, list):
      items = _qa_items(v)
      if items:
        return items
  return []


def _parse_json(text: str) -> list[dict]:
  decoder, items, i = json.JSONDecoder(), [], 0
  while True:
    starts = [j for j in (text.find("[", i), text.find("{", i)) if j >= 0]
    if not starts:
      return items
    j = min(starts)
    try:
      value, end = decoder.raw_decode(text, j)
    except json.JSONDecodeError:
      i = j + 1   # A truncated list: its complete objects are found one by one.
      continue
    items += _qa_items(value)
    i = end


_MARK = re.compile(
    r"(?:^|(?<=\s))(?:[-*#>]+\s*)?(?:\d+\s*[.):]\s*)?"
    r"(?:(?P<word>question|answer)\s*\d*\s*[:.)\u2013-]|(?P<num>[qa])\d+\s*[:.)\u2013-]|(?P<bare>[qa])\s*[:)])",
    re.IGNORECASE | re.MULTILINE)
_NUMBERED = re.compile(r"(?m)^\s*(\d+)\s*[.)]\s+")
# A question label at the start of a line: "Question:", "Question 2:", "**Question 2:**", "Q2:", "Q:".
_Q_LABEL = re.compile(r"^[ \t*#>-]*(?:question|q)[ \t]*\d*[ \t]*\**[ \t]*[:.)]", re.IGNORECASE | re.MULTILINE)


def _strip(s: str) -> str:
  s = " ".join(s.split())
  return s.strip(" \"'`*_").strip()


def _parse_labelled(text: str) -> list[dict]:
  marks = [(m.start(), m.end(), (m.group("word") or m.group("num") or m.group("bare"))[0].lower())
           for m in _MARK.finditer(text)]
  items, question = [], None
  for k, (_, end, kind) in enumerate(marks):
    body = _strip(text[end:marks[k + 1][0] if k + 1 < len(marks) else len(text)])
    if kind == "q":
      question = body
    elif question is not None:
      items.append({"question": question, "answer": body})
      question = None
  return items


def _parse_numbered(text: str) -> list[dict]:
  """'1. What is X?\\n X is Y.' with no labels: the question is the item up to its first '?'."""
  marks = list(_NUMBERED.finditer(text))
  items = []
  for k, m in enumerate(marks):
    last = k + 1 == len(marks)
    part = text[m.end():len(text) if last else marks[k + 1].start()]
    cut = re.search(r"\n\s*(\d+)\s*[.)]?\s*$", part) if last else None
    if cut and str(int(m.group(1)) + 1).startswith(cut.group(1)):
      part = part[:cut.start()]   # The token limit cut the next item in its number ("12. X?\n13", "29. X?\n3").
    if last and len(marks) > 1 and not items:
      break   # A list of bare questions: what follows the last one (a heading, a JSON attempt) is not its answer.
    q, mark, rest = part.partition("?")
    # A question label in front of the question is not part of it; one after it opens the next block of a list
    # ("4. What is X?\n\nQuestion:\n1. ..."), not this question's answer.
    q = q[_Q_LABEL.match(q).end():] if _Q_LABEL.match(q) else q
    label = _Q_LABEL.search(rest)
    rest = rest[:label.start()] if label else rest
    if mark and rest.strip():
      items.append({"question": _strip(q + "?"), "answer": _strip(rest)})
  return items


def parse_completion(text: str) -> tuple[list[dict], str]:
  """(the question/answer dicts in an LLM's reply, the format that gave them: "json", "labelled", "numbered",
  or "none")."""
  text = re.sub(r"(?s)<think>.*?</think>", "", text)
  for fmt, parse in (("json", _parse_json), ("labelled", _parse_labelled), ("numbered", _parse_numbered)):
    items = [{"question": _strip(i["question"]), "answer": _strip(i["answer"])} for i in parse(text)]
    items = [i for i in items if i["question"] and i["answer"]]
    if items:
      return items, fmt
  return [], "none"


# --- Filters ---------------------------------------------------------------------------------------------------

_STOP = frozenset(
    "a an the of in on at to for from by with and or but is are was were be been being this that these those it its "
    "as which who whom what when where why how than then there their they them we our us he she his her not no "
    "into onto over under between about can could may might will would should do does did has have had also such "
    "via using used use both each all any some more most very".split())
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PASSAGE = re.compile(r"\b(?:the|this|given) (?:passage|text|excerpt|paragraph|chunk|article)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Bounds:
  min_question_chars: int = 15
  max_question_chars: int = 300
  min_answer_chars: int = 2
  max_answer_chars: int = 400
  min_grounding: float = 0.6   # share of the answer's content words found in the chunk


def _stem(w: str) -> str:
  return w[:5]   # Crude, on purpose: "measured" ~ "measurement", "magnetic" ~ "magnetization".


def grounding(answer: str, chunk_words: set[str]) -> float | None:
  words = [w for w in _WORD.findall(answer.lower()) if w not in _STOP]
  if not words:
    return None
  return sum(_stem(w) in chunk_words for w in words) / len(words)


def question_key(q: str) -> str:
  return " ".join(_WORD.findall(q.lower()))


def reject_reason(qa: dict, chunk: str, chunk_words: set[str], seen: set[str], bounds: Bounds) -> str | None:
  q, a = qa["question"], qa["answer"]
  if not bounds.min_question_chars <= len(q) <= bounds.max_question_chars:
    return "question length"
  if not bounds.min_answer_chars <= len(a) <= bounds.max_answer_chars:
    return "answer length"
  if not q.endswith("?"):
    return "not a question"
  if _PASSAGE.search(q):
    return "refers to the passage"
  if len(a) > 3 and question_key(a) and f" {question_key(a)} " in f" {question_key(q)} ":
    return "question contains the answer"
  if any(n not in chunk for n in _NUMBER.findall(a)):
    return "answer number not in chunk"   # The commonest hallucination: a made-up value.
  g = grounding(a, chunk_words)
  if g is None or g < bounds.min_grounding:
    return "answer not grounded"
  if question_key(q) in seen:
    return "duplicate question"
  return None


def filter_pairs(items: Iterable[dict], chunk: str, seen: set[str], bounds: Bounds,
                 reasons: collections.Counter) -> list[dict]:
  """The items that pass; each rejection counted in `reasons`; kept questions added to `seen`."""
  chunk_words = {_stem(w) for w in _WORD.findall(chunk.lower())}
  kept = []
  for qa in items:
    why = reject_reason(qa, chunk, chunk_words, seen, bounds)
    if why:
      reasons[why] += 1
      continue
    seen.add(question_key(qa["question"]))
    kept.append(qa)
  return kept
