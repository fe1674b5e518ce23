"""Synthetic QA text handling: chunks of real abstracts, parsing realistic and malformed LLM replies, filters."""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import os

import pytest

from data_prep.pairs import qa_text
from clitools import DATA, needs_data

SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(SNAPSHOT)

CHUNK = ("We report the observation of superconductivity at 7.2 K in thin films of niobium nitride grown by "
         "pulsed laser deposition. The critical field follows the Werthamer-Helfand-Hohenberg model. Fig. 3 "
         "shows the resistive transition measured by Smith et al. in 2019. The coherence length is 4.5 nm.")


@needs_data
def test_chunks_of_real_abstracts_respect_size_and_sentences():
  with gzip.open(SNAPSHOT, "rt", encoding="utf-8") as f:
    abstracts = [json.loads(line)["abstract"] for line in itertools.islice(f, 400)]
  doc = "\n".join(abstracts[:40])   # a long document: paragraphs are abstracts
  pieces = qa_text.chunks(doc, 1000, 200)
  assert len(pieces) > 20 and all(200 <= len(c) <= 1000 for c in pieces)
  # Nothing is lost or reordered but whitespace (the dropped tail aside).
  flat = " ".join(doc.split())
  assert flat.startswith(" ".join(pieces))
  # Most chunks end a sentence (the exceptions are sentences longer than a chunk, cut at spaces).
  ends = collections.Counter(c.rstrip("\"')]")[-1] in ".!?" for c in pieces)
  assert ends[True] >= 0.9 * len(pieces)
  # Abstracts are about one chunk each.
  counts = [len(qa_text.chunks(a)) for a in abstracts]
  assert 0.9 < sum(counts) / len(counts) < 1.6


def test_sentence_splitting_keeps_abbreviations_and_initials():
  s = qa_text.sentences("As shown by A. Einstein et al. In 1905, Fig. 2 and Eq. (3) agree, i.e. Both hold. "
                        "Is it 3.5 eV? Yes! \"Quoted.\" Next $x$ term.")
  assert s == ["As shown by A. Einstein et al. In 1905, Fig. 2 and Eq. (3) agree, i.e. Both hold.",
               "Is it 3.5 eV?", "Yes!", "\"Quoted.\"", "Next $x$ term."]
  assert all(len(c) <= 50 for c in qa_text.chunks("word " * 200 + "x" * 120, 50, 1))


QA = [("What temperature does niobium nitride become superconducting at?", "7.2 K"),
      ("Which model describes the critical field?", "The Werthamer-Helfand-Hohenberg model"),
      ("What is the coherence length of the films?", "4.5 nm")]
JSON_LIST = json.dumps([{"question": q, "answer": a} for q, a in QA], indent=2)

REPLIES = {
    "json": JSON_LIST,
    "json_preamble": "Here are three question-answer pairs based on the passage:\n\n" + JSON_LIST + "\n\nLet me know!",
    "json_fenced": "```json\n" + JSON_LIST + "\n```",
    "json_wrapped": json.dumps({"qa_pairs": [{"Question": q, "Answer": a} for q, a in QA]}),
    "json_lines": "\n".join(json.dumps({"q": q, "a": a}) for q, a in QA),
    "labelled": "\n\n".join(f"{i}. Question: {q}\n   Answer: {a}" for i, (q, a) in enumerate(QA, 1)),
    "bold": "\n\n".join(f"**Question {i}:** {q}\n**Answer {i}:** {a}" for i, (q, a) in enumerate(QA, 1)),
    "q1a1": "\n".join(f"Q{i}: {q}\nA{i}: {a}" for i, (q, a) in enumerate(QA, 1)),
    "inline": "\n".join(f"Q: {q} A: {a}" for q, a in QA),
    "numbered": "\n".join(f"{i}. {q}\n   {a}" for i, (q, a) in enumerate(QA, 1)),
    "think": "<think>The passage is about NbN. {\"question\": \"x?\"}</think>\n" + JSON_LIST,
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_parse_realistic_formats(name):
  items, fmt = qa_text.parse_completion(REPLIES[name])
  assert [(i["question"], i["answer"]) for i in items] == QA
  assert fmt == {"labelled": "labelled", "bold": "labelled", "q1a1": "labelled", "inline": "labelled",
                 "numbered": "numbered"}.get(name, "json")


def test_parse_truncated_and_malformed():
  cut = JSON_LIST[:JSON_LIST.rindex('"answer"')]   # the token limit hit inside the third object
  items, fmt = qa_text.parse_completion(cut)
  assert fmt == "json" and [i["question"] for i in items] == [q for q, _ in QA[:2]]
  for bad in ("", "I'm sorry, but I can't help with that.", "[1, 2, 3]", '{"q1": "What?", "a1": "x"}',
              "[\"What is X?\", \"Y\"]", "Question: What is X?", "{'question': 'What is X?', 'answer': 'Y'}"):
    assert qa_text.parse_completion(bad) == ([], "none"), bad
  items, _ = qa_text.parse_completion('[{"question": "What is X?", "answer": 5}, {"question": "", "answer": "y"}]')
  assert items == [{"question": "What is X?", "answer": "5"}]


def test_parse_small_model_replies():
  """Shapes SmolLM2-135M-Instruct wrote (test_pairs_qa_small_llm): lists of bare questions are no QA pairs."""
  blocks = "Question:\n1. What is the passage about?\n2. What is the answer?\n\nQuestion:\n1. The passage is about X."
  tail = "1. What is the purpose of the passage?\n2. What is the passage?\n\nJSON:\n{\n\"question\": \"The passage\""
  for reply in (blocks, tail):
    assert qa_text.parse_completion(reply) == ([], "none"), reply
  # The token limit cut the next item's number ("30" here): that is no answer.
  cut = "1. Which films were grown?\nNbN films.\n29. What is the coherence length?\n4.5 nm\n3"
  assert [i["answer"] for i in qa_text.parse_completion(cut)[0]] == ["NbN films.", "4.5 nm"]
  # A label in front of a numbered question is not part of it; the next block's label ends the answer.
  labelled = "1. Question: What is the coherence length?\n4.5 nm in the films.\n\nQuestion: Which model?\n"
  assert qa_text.parse_completion(labelled) == (
      [{"question": "What is the coherence length?", "answer": "4.5 nm in the films."}], "numbered")
  # A bare number is an answer unless it is the number the next item would have.
  items, _ = qa_text.parse_completion("1. How many layers were grown?\n3\n2. How thick is each layer?\n7")
  assert [i["answer"] for i in items] == ["3", "7"]


def test_filters_count_each_reason():
  seen, reasons = set(), collections.Counter()
  items = [{"question": q, "answer": a} for q, a in QA] + [
      {"question": "Short?", "answer": "x y"},                                               # question length
      {"question": "What is the coherence length of the films?", "answer": "4.5 nm"},        # duplicate
      {"question": "What does the passage say about the films?", "answer": "niobium nitride films"},
      {"question": "The films were grown by which method", "answer": "pulsed laser deposition"},   # no '?'
      {"question": "What critical temperature was observed at 7.2 K?", "answer": "7.2 K"},   # answer in question
      {"question": "Which element besides nitrogen is in the films?", "answer": "Magnesium boride"},  # not grounded
      {"question": "What is the measured critical field?", "answer": "12 T at 2 K"},         # number not in chunk
      {"question": "Who measured the resistive transition?", "answer": "Smith et al."},
      {"question": "Was it measured?", "answer": "x" * 500},                                 # answer length
  ]
  kept = qa_text.filter_pairs(items, CHUNK, seen, qa_text.Bounds(), reasons)
  assert [k["question"] for k in kept] == [q for q, _ in QA] + ["Who measured the resistive transition?"]
  assert reasons == {"question length": 1, "duplicate question": 1, "refers to the passage": 1, "not a question": 1,
                     "question contains the answer": 1, "answer not grounded": 1, "answer number not in chunk": 1,
                     "answer length": 1}
  # Seen questions carry over: the same questions for another chunk are duplicates.
  assert qa_text.filter_pairs(items[:3], CHUNK, seen, qa_text.Bounds(), reasons) == []


def test_prompt_holds_the_chunk_and_asks_for_three_json_pairs():
  conv = qa_text.conversation(CHUNK)
  assert [m["role"] for m in conv] == ["system", "user"] and CHUNK in conv[1]["content"]
  assert "three" in conv[1]["content"] and '[{"question": "...", "answer": "..."}' in conv[1]["content"]
