"""A Stripe stand-in that enforces a request rate, as Stripe does (25 requests/s in test
mode, 100 in live mode): a small HTTP proxy in front of localstripe that forwards at most
`rate` requests a second and answers the others with Stripe's 429 `rate_limit` error, in
the shape recorded in stripe_recorded/rate_limit.json. Refused requests never reach
localstripe. The one rate-limited stand-in of the suite: the proxy's own tests, the
billing-incident tests and the incident benchmark use it.

Two limiters (`limiter=`):
- "window" (default): at most `rate` requests in any one-second window (sliding); the
  strictest reading of "N requests a second".
- "bucket": a token bucket, `rate` tokens a second and at most `rate` held (full at
  start), the algorithm Stripe's own limiter uses: a short burst up to `rate` passes.

It counts what it saw, for tests (`proxy.stats()`, `proxy.peak_per_second()`) and for
benchmarks that run it as a process (`GET /_proxy/stats`, JSON, not itself counted); with
`log_requests=True` it keeps every request's time, method, path and answer:

    proxy = StripeRateLimitProxy(localstripe_url, rate=25, limiter="bucket").start()
    ... point STRIPE_API_BASE at proxy.url ...
    proxy.stats().forwarded, proxy.stats().rate_limited, proxy.peak_per_second()
    proxy.stop()

    python -m tests.stripe_rate_limit_proxy --upstream http://127.0.0.1:8420 --rate 25 \\
        --port 8421 [--limiter bucket]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel

from stack.net import free_port
from tests.stripe_replay_server import recorded

STATS_PATH = "/_proxy/stats"
# Hop-by-hop or recomputed headers: never copied between the two connections.
_NOT_COPIED = frozenset({"host", "connection", "keep-alive", "transfer-encoding",
                         "content-length", "accept-encoding", "date", "server"})

LimiterKind = Literal["window", "bucket"]


class ProxyStats(BaseModel):
    requests: int = 0  # every request to the Stripe API (stats requests excluded)
    forwarded: int = 0
    rate_limited: int = 0  # answered 429
    upstream_failed: int = 0  # localstripe unreachable: answered 502


@dataclass(frozen=True)
class SeenCall:
    """One request the proxy answered: when (the proxy's clock), what, and its status."""

    at: float
    method: str
    path: str
    status: int


class Limiter(Protocol):
    def admit(self) -> bool: ...


class SlidingWindow:
    """At most `limit` admissions in any `seconds`-long window."""

    def __init__(self, limit: float, seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.seconds = seconds
        self.clock = clock
        self._admitted: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            now = self.clock()
            while self._admitted and self._admitted[0] <= now - self.seconds:
                self._admitted.popleft()
            if len(self._admitted) >= self.limit:
                return False
            self._admitted.append(now)
            return True


class TokenBucket:
    """`rate` tokens a second, at most `capacity` held; full at start."""

    def __init__(self, rate: float, capacity: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity, self.clock = rate, capacity, clock
        self._tokens, self._at = capacity, clock()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


def make_limiter(kind: LimiterKind, rate: float, clock: Callable[[], float]) -> Limiter:
    if kind == "bucket":
        return TokenBucket(rate, rate, clock=clock)
    return SlidingWindow(rate, clock=clock)


def rate_limit_response() -> tuple[int, dict[str, str], bytes]:
    """Stripe's 429, as recorded, with a fresh request id."""
    sample = recorded("rate_limit")
    headers = {**sample["headers"], "Request-Id": f"req_{uuid.uuid4().hex[:14]}"}
    return sample["status"], headers, json.dumps(sample["body"]).encode()


class StripeRateLimitProxy:
    def __init__(self, upstream: str, rate: float, *, limiter: LimiterKind = "window",
                 port: int | None = None, host: str = "127.0.0.1",
                 clock: Callable[[], float] = time.monotonic,
                 log_requests: bool = False) -> None:
        self.upstream = urlsplit(upstream)
        self.rate, self.limiter_kind, self.clock = rate, limiter, clock
        self.limiter = make_limiter(limiter, rate, clock)
        self.host = host
        self.port = port or free_port()
        self.log_requests = log_requests
        self._stats = ProxyStats()
        self._per_second: collections.Counter[int] = collections.Counter()
        self._log: list[SeenCall] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stats(self) -> ProxyStats:
        with self._lock:
            return self._stats.model_copy()

    def reset(self) -> None:
        """Counts, per-second counts and the log start again (the limiter carries on)."""
        with self._lock:
            self._stats = ProxyStats()
            self._per_second.clear()
            self._log.clear()

    def per_second(self) -> list[int]:
        """Requests forwarded in each whole second of the proxy's clock, first to last."""
        with self._lock:
            if not self._per_second:
                return []
            first, last = min(self._per_second), max(self._per_second)
            return [self._per_second[s] for s in range(first, last + 1)]

    def peak_per_second(self) -> int:
        """The most requests forwarded within one whole second of the proxy's clock."""
        with self._lock:
            return max(self._per_second.values(), default=0)

    def log(self) -> list[SeenCall]:
        with self._lock:
            return list(self._log)

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self._stats, field, getattr(self._stats, field) + 1)

    def seen(self, method: str, path: str, status: int) -> None:
        now = self.clock()
        with self._lock:
            if status != 429 and status != 502:
                self._per_second[int(now)] += 1
            if self.log_requests:
                self._log.append(SeenCall(at=now, method=method, path=path, status=status))

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1",
                                          self.upstream.port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers={
                k: v for k, v in headers.items() if k.lower() not in _NOT_COPIED})
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, {k: v for k, v in resp.getheaders()
                                 if k.lower() not in _NOT_COPIED}, payload
        finally:
            conn.close()

    # -- lifecycle --

    def start(self) -> StripeRateLimitProxy:
        """Serve in a background thread (in-process use by tests and benchmarks)."""
        self._httpd = _Server((self.host, self.port), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (as its own process)."""
        httpd = _Server((self.host, self.port), _handler_for(self))
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            httpd.server_close()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a worker stopped mid keep-alive) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(proxy: StripeRateLimitProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the stripe SDK uses it

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == STATS_PATH and self.command == "GET":
                self._send(200, {}, proxy.stats().model_dump_json().encode())
                return
            proxy.count("requests")
            if not proxy.limiter.admit():
                proxy.count("rate_limited")
                proxy.seen(self.command, self.path, 429)
                self._send(*rate_limit_response())
                return
            try:
                answer = proxy.forward(self.command, self.path, dict(self.headers.items()),
                                       body)
            except OSError as exc:
                proxy.count("upstream_failed")
                proxy.seen(self.command, self.path, 502)
                error = {"error": {"type": "api_error", "message": f"upstream: {exc}"}}
                self._send(502, {}, json.dumps(error).encode())
                return
            proxy.count("forwarded")
            proxy.seen(self.command, self.path, answer[0])
            self._send(*answer)

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            if not any(k.lower() == "content-type" for k in headers):
                self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="localstripe's URL")
    parser.add_argument("--rate", type=float, default=25, help="requests per second")
    parser.add_argument("--limiter", choices=["window", "bucket"], default="window")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    StripeRateLimitProxy(args.upstream, args.rate, limiter=args.limiter, port=args.port,
                         host=args.host).serve_forever()


if __name__ == "__main__":
    main()
