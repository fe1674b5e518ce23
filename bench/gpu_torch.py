"""bench/gpu.py's reference side: the same model and texts through transformers and sentence-transformers."""

import os
import time

import numpy as np

from gpu_inputs import packed_rows


def seconds(one_step, n_steps: int, warmup: int) -> float:
  """Seconds of one_step(i), i = warmup .. warmup + n_steps - 1, after the warm-up; queued CUDA work waited for."""
  import torch
  sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
  for i in range(warmup):
    one_step(i)
  sync()
  t = time.perf_counter()
  for i in range(warmup, warmup + n_steps):
    one_step(i)
  sync()
  return time.perf_counter() - t


def bert_mlm(folder: str, tokenizer_dir: str, shapes, n_steps: int, warmup: int):
  """transformers.BertForMaskedLM + torch.optim.AdamW (bf16 autocast on a GPU, SDPA) on ours' packed rows, one model
  through every (seq_len, batch) of `shapes`: yields (seq_len, batch, tokens/s, bf16, peak CUDA memory or None)."""
  import torch
  import transformers
  device = "cuda" if torch.cuda.is_available() else "cpu"
  bf16 = device == "cuda"
  model = transformers.BertForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
  collator = transformers.DataCollatorForLanguageModeling(
      transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(tokenizer_dir, "tokenizer.json"),
                                           mask_token="[MASK]", pad_token="[PAD]", cls_token="[CLS]",
                                           sep_token="[SEP]", unk_token="[UNK]"), mlm_probability=0.15)
  for seq, batch in shapes:
    rows = packed_rows(tokenizer_dir, seq, batch)
    if device == "cuda":
      torch.cuda.reset_peak_memory_stats()

    def one_step(_):
      b = collator([{"input_ids": r} for r in rows.tolist()])       # dynamic masking each step, as ours
      b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
      with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**b).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)

    tps = batch * seq * n_steps / seconds(one_step, n_steps, warmup)
    yield seq, batch, tps, bf16, torch.cuda.max_memory_allocated() if device == "cuda" else None


def st_pairs_per_s(folder: str, pairs, batch: int, max_length: int, n_steps: int, warmup: int):
  """sentence-transformers training `folder` with MultipleNegativesRankingLoss (scale 20) on `pairs`, batch by batch
  in order, AdamW, bf16 autocast on a GPU: (pairs/s over the steps after `warmup`, peak CUDA memory or None)."""
  import torch
  from sentence_transformers import SentenceTransformer
  from sentence_transformers.sentence_transformer import losses
  device = "cuda" if torch.cuda.is_available() else "cpu"
  st = SentenceTransformer(folder, device=device)
  st.max_seq_length = max_length
  st.train()
  loss_fn = losses.MultipleNegativesRankingLoss(st, scale=20.0)
  opt = torch.optim.AdamW(st.parameters(), lr=2e-5, weight_decay=0.01)
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()

  def one_step(i):
    chunk = pairs[i * batch:(i + 1) * batch]
    feats = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in st.tokenize(texts).items()}
             for texts in ([a for a, _ in chunk], [b for _, b in chunk])]
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
      loss = loss_fn(feats, None)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

  return batch * n_steps / seconds(one_step, n_steps, warmup), (
      torch.cuda.max_memory_allocated() if device == "cuda" else None)


def st_encode(folder: str, texts: list[str], batch: int, dtype: str, max_length: int):
  """SentenceTransformer.encode of `texts` after one warm-up batch: (fp32 embeddings, wall seconds)."""
  import torch
  from sentence_transformers import SentenceTransformer
  device = "cuda" if torch.cuda.is_available() else "cpu"
  st = SentenceTransformer(folder, device=device,
                           model_kwargs={"torch_dtype": torch.bfloat16} if dtype == "bfloat16" else {})
  st.max_seq_length = max_length
  st.encode(texts[:batch], batch_size=batch)
  t = time.perf_counter()
  ref = st.encode(texts, batch_size=batch, convert_to_numpy=True).astype(np.float32)
  return ref, time.perf_counter() - t
