"""The Semantic Scholar Graph API client and the s2-api citation source, against a local server that answers in
the Graph API's JSON shapes from the real Paperscape rows, with 429s, a 503, pagination and an API key."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import urllib.parse

import pytest

from data_prep.pairs import __main__ as cli
from data_prep.pairs import citation, s2_client, writer
from clitools import DATA, needs_data

CITATIONS = os.path.join(DATA, "arxiv", "citations")
FILES = [os.path.join(CITATIONS, f"pscp-{y}.csv") for y in (1991, 1992)]
needs_data = needs_data(*FILES)
CITING = 120   # citing papers asked about: the first 1992 papers that have references (~500 requests)
KEY = "test-key"
PAGE = 3   # the server's largest page, whatever limit is asked: the client must follow "next"


def rows() -> dict[str, dict]:
  out = {}
  for path in FILES:
    for line in open(path, encoding="utf-8"):
      if not line.startswith("#") and line.strip():
        aid, cats, _, _, refs, _, title = line.rstrip("\n").split(";", 6)
        out[aid] = {"refs": [r for r in refs.split(",") if r], "title": title, "file": path}
  return out


def citing(server) -> list[str]:
  return sorted(a for a, r in server.rows.items() if r["refs"] and r["file"] == FILES[1])[:CITING]


def paper_id(aid: str) -> str:
  return hashlib.sha1(aid.encode()).hexdigest()   # S2 paperIds are 40 hex digits


class FakeS2(http.server.ThreadingHTTPServer):
  """/graph/v1/paper/batch and /graph/v1/paper/{paperId}/references from Paperscape rows. Every 4th request is
  answered 429 (Retry-After: 0), the 2nd is a 503; requests past `fail_after` get 500s."""

  def __init__(self, rows: dict):
    super().__init__(("127.0.0.1", 0), Handler)
    self.rows, self.by_pid = rows, {paper_id(a): a for a in rows}
    self.requests, self.throttled, self.fail_after = 0, 0, None
    self.lock = threading.Lock()

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self.server_address[1]}/graph/v1"

  def record(self, aid: str) -> dict:
    return {"paperId": paper_id(aid), "title": self.rows[aid]["title"], "externalIds": {"ArXiv": aid}}


class Handler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass

  def _send(self, status: int, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else b""
    self.send_response(status)
    for k, v in (headers or {}).items():
      self.send_header(k, v)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _gate(self) -> bool:
    s = self.server
    with s.lock:
      s.requests += 1
      n = s.requests
    if self.headers.get("x-api-key") != KEY:
      return self._send(403, {"message": "Forbidden"}) or False
    if s.fail_after is not None and n > s.fail_after:
      return self._send(500, {"message": "down"}) or False
    if n % 4 == 0:
      s.throttled += 1
      return self._send(429, {"message": "Too Many Requests"}, {"Retry-After": "0"}) or False
    if n == 2:
      return self._send(503, {"message": "unavailable"}) or False
    return True

  def do_POST(self):
    url = urllib.parse.urlparse(self.path)
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    if not self._gate():
      return
    if url.path != "/graph/v1/paper/batch" or "fields" not in urllib.parse.parse_qs(url.query):
      return self._send(404, {"error": "no such endpoint"})
    if len(body["ids"]) > 500:
      return self._send(400, {"error": "at most 500 ids"})
    out = []
    for i in body["ids"]:
      aid = i[len("ARXIV:"):] if i.startswith("ARXIV:") else None
      out.append(self.server.record(aid) if aid in self.server.rows else None)
    self._send(200, out)

  def do_GET(self):
    url = urllib.parse.urlparse(self.path)
    if not self._gate():
      return
    parts = url.path.split("/")   # ['', 'graph', 'v1', 'paper', pid, 'references']
    q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
    if len(parts) != 6 or parts[5] != "references" or parts[4] not in self.server.by_pid:
      return self._send(404, {"error": "Paper not found"})
    refs = self.server.rows[self.server.by_pid[parts[4]]]["refs"]
    offset, limit = int(q.get("offset", 0)), min(int(q.get("limit", 100)), PAGE)
    data = [{"citedPaper": self.server.record(r) if r in self.server.rows else
             {"paperId": None, "title": None, "externalIds": None}} for r in refs[offset:offset + limit]]
    page = {"offset": offset, "data": data}
    if offset + limit < len(refs):
      page["next"] = offset + limit
    self._send(200, page)


@pytest.fixture
def server():
  s = FakeS2(rows())
  t = threading.Thread(target=s.serve_forever, daemon=True)
  t.start()
  yield s
  s.shutdown()
  s.server_close()


def client(server, tmp_path, **kw):
  return s2_client.S2Client(server.url, api_key=KEY, cache_path=str(tmp_path / "cache.sqlite"), min_interval_s=0,
                            backoff_s=0.001, **kw)


@needs_data
def test_batch_and_paged_references(server, tmp_path):
  c = client(server, tmp_path)
  ids = sorted(server.rows)
  asked = [f"ARXIV:{i}" for i in ids] + ["ARXIV:0000.00000"] * 300   # > 500 ids: two requests
  got = c.batch(asked)
  assert [g["title"] if g else None for g in got] == [server.rows[i]["title"] for i in ids] + [None] * 300
  many = max(ids, key=lambda i: len(server.rows[i]["refs"]))
  refs = c.references(paper_id(many))
  assert len(refs) == len(server.rows[many]["refs"]) > 2 * PAGE
  assert c.references("f" * 40) is None   # 404: unknown paper
  assert server.throttled > 0 and c.stats["retries"] >= server.throttled
  before = server.requests
  again = client(server, tmp_path)   # a new process on the same cache: no request at all
  assert again.batch(asked) == got and again.references(paper_id(many)) == refs and server.requests == before


@needs_data
def test_errors_are_loud_and_a_killed_run_resumes_from_the_cache(server, tmp_path):
  with pytest.raises(s2_client.S2Error, match="403.*S2_API_KEY"):
    s2_client.S2Client(server.url, api_key="wrong", min_interval_s=0).batch(["ARXIV:hep-th/9108001"])
  ids = citing(server)[:40]
  source = lambda c: s2_client.S2ApiSource(c, ids)
  server.fail_after = server.requests + 25   # the service goes down part way
  with pytest.raises(s2_client.S2Error, match="still failing"):
    list(source(client(server, tmp_path, max_retries=2)).edges(citation.Skipped()))
  server.fail_after, before = None, server.requests
  edges = list(source(client(server, tmp_path)).edges(citation.Skipped()))
  fresh_requests = server.requests - before
  server.requests = 0
  assert list(source(client(server, tmp_path / "fresh")).edges(citation.Skipped())) == edges
  assert fresh_requests < server.requests   # the resumed run asked only for what the cache lacked


@needs_data
def test_s2_api_source_gives_the_paperscape_pairs(server, tmp_path):
  meta = tmp_path / "meta.jsonl"   # the citing papers, each with its archive as the primary category
  ids = set(citing(server))
  meta.write_text("".join(json.dumps({"id": a, "title": server.rows[a]["title"], "abstract": "-",
                                      "categories": a.split("/")[0]}) + "\n" for a in sorted(ids)))
  os.environ["S2_API_KEY"] = KEY
  try:
    cli.main(["citation", "--source", "s2-api", "--meta", str(meta), "--out", str(tmp_path / "api"),
              "--s2-url", server.url, "--s2-min-interval", "0", "--quiet"])
  finally:
    del os.environ["S2_API_KEY"]
  assert os.path.exists(tmp_path / "s2-cache.sqlite")
  citation.build(citation.PaperscapeSource(*FILES), str(tmp_path / "pscp"), meta=[str(meta)], num_shards=4,
                 quiet=True)
  api = list(writer.read_pairs(str(tmp_path / "api")))
  pscp = [p for p in writer.read_pairs(str(tmp_path / "pscp")) if p["anchor_id"] in ids]
  clean = lambda ps: sorted((p["anchor_id"], p["positive_id"], p["anchor"], p["positive"]) for p in ps)
  assert len(api) > 150 and clean(api) == clean(pscp)
  assert json.load(open(tmp_path / "api" / "manifest.json"))["sources"]["source"] == "s2-api"
