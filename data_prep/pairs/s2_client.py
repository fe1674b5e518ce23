"""A Semantic Scholar Graph API client (batch lookup, paged references) and the citation source built on it.

    export S2_API_KEY=...        # sent as x-api-key; without one, requests share S2's public pool (slow, 429s)
    python -m data_prep.pairs citation --source s2-api --meta data/meta --out data/pairs/citation

Endpoints (https://api.semanticscholar.org/graph/v1):
  POST /paper/batch?fields=...            body {"ids": ["ARXIV:1706.03762", ...]} (<= 500 ids) -> a list aligned
                                          with ids, null for ids S2 does not know
  GET  /paper/{id}/references?fields=...&offset=0&limit=1000
                                          -> {"offset", "next" (absent on the last page), "data": [{"citedPaper":
                                          {"paperId", "title", "externalIds": {"ArXiv": ...}}}]}

Retries (http_retry.py): 429, 5xx and dropped connections, up to `max_retries` times, after Retry-After or a jittered
exponential backoff. Requests are also spaced `min_interval_s` apart (S2's keyed limit is 1 request/s to start with).
Cache and resume: every answer (per id for the batch endpoint, per paper for references, 404s included) goes to a
SQLite file, committed as it arrives; a killed run rerun with the same cache asks S2 only for what it lacks.
Cost at the paper's size (an estimate: ~17 usable references a paper, not measured): 1M pairs need ~60k citing
papers: ~120 batch calls and ~60k reference calls, ~17 h at 1 request/s.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.parse
from typing import Callable, Iterable, Iterator

from data_prep import stage
from data_prep.corpus_io import Skipped
from data_prep.pairs import http_retry, papers
from data_prep.pairs.citation import Edge

BASE_URL = "https://api.semanticscholar.org/graph/v1"
BATCH_MAX = 500                 # the batch endpoint's limit on ids per request
PAGE_SIZE = 1000                # the references endpoint's largest page
PAPER_FIELDS = "paperId,title,externalIds"
REF_FIELDS = "paperId,title,externalIds"


class S2Error(RuntimeError):
  pass


class S2Client:

  def __init__(self, base_url: str = BASE_URL, api_key: str | None = None, cache_path: str | None = None,
               max_retries: int = 8, backoff_s: float = 2.0, max_backoff_s: float = 120.0, timeout_s: float = 60.0,
               min_interval_s: float | None = None, page_size: int = PAGE_SIZE,
               sleep: Callable[[float], None] = time.sleep):
    self.base_url = base_url.rstrip("/")
    self.api_key = api_key if api_key is not None else os.environ.get("S2_API_KEY")
    self.page_size = page_size
    # Without a key the shared pool allows ~100 requests / 5 min for everyone; with one, 1/s to start with.
    interval = (1.0 if self.api_key else 3.0) if min_interval_s is None else min_interval_s
    self.http = http_retry.JsonClient({"x-api-key": self.api_key} if self.api_key else {}, S2Error, "check S2_API_KEY",
                                      max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                                      timeout_s=timeout_s, min_interval_s=interval, sleep=sleep)
    self.stats = self.http.stats   # requests and retries, counted there; cache hits, here
    self.stats["cache_hits"] = 0
    self.db = None
    if cache_path:
      os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
      self.db = sqlite3.connect(cache_path)
      # WAL without an fsync per commit: a crash loses at most the last answers (asked again), never the file.
      self.db.execute("PRAGMA journal_mode=WAL")
      self.db.execute("PRAGMA synchronous=NORMAL")
      self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
      self.db.commit()

  # --- cache ---

  def _get(self, key: str):
    if self.db is None:
      return None
    row = self.db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
    if row is not None:
      self.stats["cache_hits"] += 1
      return json.loads(row[0])
    return None

  def _put(self, items: Iterable[tuple[str, object]]) -> None:
    if self.db is not None:
      self.db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?)",
                          [(k, json.dumps(v, separators=(",", ":"))) for k, v in items])
      self.db.commit()

  # --- HTTP ---

  def request(self, method: str, path: str, query: dict, body: dict | None = None):
    """JSON of a 2xx answer; None for 404; retries 429/5xx; raises S2Error for anything else."""
    return self.http.request(method, f"{self.base_url}{path}?{urllib.parse.urlencode(query)}", body, missing_ok=True)

  # --- endpoints ---

  def batch(self, ids: list[str], fields: str = PAPER_FIELDS) -> list[dict | None]:
    """Records for `ids` ("ARXIV:...", S2 paperIds, ...), aligned with them; None where S2 has none."""
    key = lambda i: f"batch|{fields}|{i}"
    found: dict[str, dict | None] = {}
    todo = []
    for i in dict.fromkeys(ids):
      cached = self._get(key(i))
      if cached is not None:
        found[i] = cached["v"]
      else:
        todo.append(i)
    for k in range(0, len(todo), BATCH_MAX):
      chunk = todo[k:k + BATCH_MAX]
      answer = self.request("POST", "/paper/batch", {"fields": fields}, {"ids": chunk})
      if not isinstance(answer, list) or len(answer) != len(chunk):
        raise S2Error(f"/paper/batch answered {str(answer)[:200]} for {len(chunk)} ids: expected an aligned list")
      found.update(zip(chunk, answer))
      self._put((key(i), {"v": v}) for i, v in zip(chunk, answer))
    return [found[i] for i in ids]

  def references(self, paper_id: str, fields: str = REF_FIELDS) -> list[dict] | None:
    """Every reference of a paper (the `citedPaper` objects), following `next`; None if S2 has no such paper."""
    key = f"refs|{fields}|{paper_id}"
    cached = self._get(key)
    if cached is not None:
      return cached["v"]
    path = f"/paper/{urllib.parse.quote(paper_id, safe=':')}/references"
    refs, offset = [], 0
    while True:
      page = self.request("GET", path, {"fields": fields, "offset": offset, "limit": self.page_size})
      if page is None:
        refs = None
        break
      refs += [d.get("citedPaper") or {} for d in page.get("data") or []]
      nxt = page.get("next")
      if nxt is None or nxt <= offset:
        break
      offset = nxt
    self._put([(key, {"v": refs})])
    return refs


class S2ApiSource:
  """Citation edges of `citing_ids` (arXiv ids), resolved in batches, in the order given."""
  name, lazy, late_titles = "s2-api", True, False

  def __init__(self, client: S2Client, citing_ids: list[str], quiet: bool = True):
    self.client, self.citing_ids, self.quiet = client, citing_ids, quiet

  def edges(self, skipped: Skipped) -> Iterator[Edge]:
    bar = stage.progress(len(self.citing_ids), "s2 papers", " papers", self.quiet)
    for k in range(0, len(self.citing_ids), BATCH_MAX):
      chunk = self.citing_ids[k:k + BATCH_MAX]
      for aid, rec in zip(chunk, self.client.batch([f"ARXIV:{i}" for i in chunk])):
        bar.update(1)
        if not rec or not rec.get("paperId"):
          skipped.add(self.name, None, "not in Semantic Scholar", doc_id=aid)
          continue
        refs = self.client.references(rec["paperId"])
        if refs is None:
          skipped.add(self.name, None, "references not found", doc_id=aid)
          continue
        for ref in refs:
          ext = ref.get("externalIds") or {}
          if isinstance(ext.get("ArXiv"), str) and ext["ArXiv"].strip():
            cited = papers.arxiv_id(ext["ArXiv"])
          elif ref.get("paperId"):
            cited = f"S2:{ref['paperId']}"
          else:
            continue  # A reference S2 could not match to a paper: no id, usually no title.
          title = papers.clean(ref["title"]) if isinstance(ref.get("title"), str) else None
          yield Edge(aid, cited, papers.clean(rec.get("title") or "") or None, title or None)
    bar.close()

  def titles(self, ids: set[str]) -> dict[str, str]:
    return {}


def citing_order(ids: Iterable[str], seed: int) -> list[str]:
  """A seeded order of the citing papers (sha256, so it does not depend on the metadata's order)."""
  key = lambda i: hashlib.sha256(f"{seed}/citing/{i}".encode()).digest()
  return sorted(ids, key=key)
