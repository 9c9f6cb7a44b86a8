"""JSON over HTTP with bounded retries, for the rollout-server clients (stdlib only: no extra dependency).

Why it is its own module: every server call (health, generate, weight reload, cache reset) needs the same
three things, and each must end in an error that says what failed instead of a hang or a traceback:

- a bounded wait: a connect timeout and a read timeout per call (``None`` read timeout = wait as long as
  the server takes, which only ``vllm.server.infer_timeout_s: null`` asks for);
- bounded retries with exponential backoff for what a retry can cure (refused or reset connections, a
  timeout, a 5xx reply); a 4xx reply is the request's fault and is never retried;
- a classified failure: ``ServerGone`` (nothing answers), ``ServerStalled`` (accepted, no reply in time),
  ``ServerRefused`` (an HTTP error status), ``ServerMalformed`` (a 2xx reply that is not the JSON asked for).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import attrs

from coordexp.errors import RolloutError

CONNECT_TIMEOUT_S = 10.0


class ServerError(RolloutError):
    """A rollout server call failed; ``url`` names the endpoint, ``attempts`` how often it was tried."""

    def __init__(self, message: str, *, url: str, attempts: int) -> None:
        self.url, self.attempts = url, attempts
        super().__init__(message)


class ServerGone(ServerError):
    """Nothing answers at the address (connection refused, reset or closed)."""


class ServerStalled(ServerError):
    """The server accepted the connection but did not reply within the read timeout."""


class ServerRefused(ServerError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, url: str, attempts: int, status: int, body: str) -> None:
        self.status, self.body = status, body
        super().__init__(message, url=url, attempts=attempts)


class ServerMalformed(ServerError):
    """The server answered 2xx with a body that is not the JSON the client expects."""


@attrs.frozen
class RetryPolicy:
    """``attempts`` tries in all; the wait before try k+1 is ``backoff_s * 2**(k-1)``."""

    attempts: int = 3
    backoff_s: float = 0.5

    def delay(self, done: int) -> float:
        return self.backoff_s * 2 ** (done - 1)


NO_RETRY = RetryPolicy(attempts=1)


def _read_timeout(timeout: float | None) -> float | None:
    return None if timeout is None or timeout <= 0 else float(timeout)


def _open(method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float | None) -> tuple[int, bytes]:
    """One HTTP exchange: connect within ``CONNECT_TIMEOUT_S``, then wait ``timeout`` for each read."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connect = CONNECT_TIMEOUT_S if timeout is None else min(CONNECT_TIMEOUT_S, timeout)
    conn = cls(parts.hostname or "", parts.port, timeout=connect)
    try:
        conn.connect()
        conn.sock.settimeout(timeout)
        path = parts.path or "/"
        conn.request(method, f"{path}?{parts.query}" if parts.query else path, body=data, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def call_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float | None,
    retry: RetryPolicy | None = None,
    expect_json: bool = True,
) -> Any:
    """``method url`` with a JSON body; the decoded JSON reply (``None`` for an empty 2xx body when not expected).

    Raises a ``ServerError`` subclass after ``retry.attempts`` tries (a 4xx reply after one).
    """
    retry = retry or RetryPolicy()
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json"} if data is not None else {}
    read_timeout = _read_timeout(timeout)
    last: ServerError | None = None
    for attempt in range(1, retry.attempts + 1):
        try:
            status, raw = _open(method, url, data, headers, read_timeout)
        except TimeoutError:
            last = ServerStalled(f"{method} {url} gave no reply within {read_timeout or CONNECT_TIMEOUT_S:g} s",
                                 url=url, attempts=attempt)
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            last = ServerGone(f"{method} {url}: nothing answers ({type(exc).__name__}: {exc})", url=url,
                              attempts=attempt)
        else:
            if status < 400:
                return _decoded(method, url, raw, attempt, expect_json=expect_json)
            text = raw.decode("utf-8", "replace")[:2000]
            last = ServerRefused(f"{method} {url} answered HTTP {status}: {text[:500]}", url=url, attempts=attempt,
                                 status=status, body=text)
            if status < 500:
                raise last
        if attempt < retry.attempts:
            time.sleep(retry.delay(attempt))
    assert last is not None
    raise type(last)(f"{last} (after {retry.attempts} attempt(s))", **_error_kwargs(last))


def _error_kwargs(err: ServerError) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"url": err.url, "attempts": err.attempts}
    if isinstance(err, ServerRefused):
        kwargs.update(status=err.status, body=err.body)
    return kwargs


def _decoded(method: str, url: str, raw: bytes, attempt: int, *, expect_json: bool) -> Any:
    if not raw.strip():
        if expect_json:
            raise ServerMalformed(f"{method} {url} answered an empty body where JSON was expected", url=url,
                                  attempts=attempt)
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        if not expect_json:
            return None
        raise ServerMalformed(f"{method} {url} answered a body that is not JSON ({exc}): {raw[:200]!r}", url=url,
                              attempts=attempt) from None
