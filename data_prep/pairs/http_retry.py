"""JSON over HTTP with one retry policy, for s2_client.py and llm.py's OpenAI-endpoint engine: 429, 5xx and dropped
connections (refused, reset, timed out, closed without an answer) are retried, waiting Retry-After when the server
sends one, else a capped exponential backoff with jitter (x0.5-1.5: clients failing together do not retry together)."""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.request
from typing import Callable


def retry_after(err: urllib.error.HTTPError) -> float | None:
  """Seconds the server asks us to wait, from either form of Retry-After; None if it says nothing readable."""
  value = (err.headers.get("Retry-After") if err.headers else None) or ""
  try:
    return max(0.0, float(value))
  except ValueError:
    when = email.utils.parsedate_tz(value)   # The HTTP-date form; None if unreadable.
    return max(0.0, email.utils.mktime_tz(when) - time.time()) if when else None


class JsonClient:
  """Requests spaced `min_interval_s` apart (S2's keyed limit is 1/s); `sleep` is injectable so tests need not wait."""

  def __init__(self, headers: dict[str, str], error: type[Exception] = RuntimeError, auth_hint: str = "",
               max_retries: int = 8, backoff_s: float = 2.0, max_backoff_s: float = 120.0, timeout_s: float = 60.0,
               min_interval_s: float = 0.0, sleep: Callable[[float], None] = time.sleep):
    self.headers = {"Accept": "application/json", "User-Agent": "physbert-jax data_prep.pairs", **headers}
    self.error, self.auth_hint, self.sleep, self.timeout_s = error, auth_hint, sleep, timeout_s
    self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
    self.min_interval_s, self.stats, self._last = min_interval_s, {"requests": 0, "retries": 0}, 0.0

  def request(self, method: str, url: str, body: dict | None = None, missing_ok: bool = False):
    """JSON of a 2xx answer (None for a 404 if `missing_ok`); raises `error` on any other failure, naming the URL."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {**self.headers, "Content-Type": "application/json"} if data is not None else self.headers
    for attempt in range(self.max_retries + 1):
      wait = self.min_interval_s - (time.monotonic() - self._last)
      if wait > 0:
        self.sleep(wait)
      self._last = time.monotonic()
      self.stats["requests"] += 1
      try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                    timeout=self.timeout_s) as r:
          return json.loads(r.read().decode("utf-8"))
      except urllib.error.HTTPError as e:
        if e.code == 404 and missing_ok:
          return None
        if e.code != 429 and e.code < 500:
          hint = f" ({self.auth_hint})" if self.auth_hint and e.code in (401, 403) else ""
          detail = e.read().decode("utf-8", "replace")[:300]
          raise self.error(f"{method} {url}: HTTP {e.code}{hint}: {detail}") from None
        delay, why = retry_after(e), f"HTTP {e.code}"
      except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        delay, why = None, f"{type(e).__name__}: {e}"
      if attempt == self.max_retries:
        raise self.error(f"{method} {url}: still failing after {self.max_retries} retries (last: {why})")
      self.stats["retries"] += 1
      self.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt * (0.5 + random.random())) if delay is None
                 else delay)
