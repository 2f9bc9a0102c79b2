"""A Stripe stand-in that enforces a request rate: an HTTP proxy in front of localstripe
that answers Stripe's 429 `rate_limit` error once more than N requests a second arrive,
and forwards the rest. It counts what it forwarded and what it refused, so the tests and
the incident benchmark can say how many Stripe requests were made and how many 429s a
drain caused.

Like Stripe's own limiter it is a token bucket: N requests a second sustained, a burst of
at most N (a bucket of N tokens, full at start, refilled at N a second).

    proxy = StripeRateProxy(upstream=localstripe_url, rate=25).start()
    ... point STRIPE_API_BASE at proxy.url ...
    proxy.forwarded, proxy.refused, proxy.peak_per_second()
    proxy.stop()

(The lead keeps one such proxy for the whole suite; this one is the billing-incident
work's own, written before that one reached this branch.)
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stack.net import free_port

# Stripe's documented answer to too many requests (HTTP 429).
RATE_LIMIT_BODY = {
    "error": {
        "code": "rate_limit",
        "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
        "message": "Request rate limit exceeded. Learn more about rate limits here "
                   "https://stripe.com/docs/rate-limits.",
        "type": "invalid_request_error",
    }
}


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `capacity`; full at start. Thread-safe."""

    rate: float
    capacity: float
    clock: Any = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._tokens, self._at = self.capacity, self.clock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


@dataclass
class StripeRateProxy:
    upstream: str
    rate: float = 25.0
    forwarded: int = 0
    refused: int = 0
    per_second: Counter[int] = field(default_factory=Counter)  # forwarded, by whole second
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(self.rate, self.rate)

    def reset_counts(self) -> None:
        with self._lock:
            self.forwarded, self.refused = 0, 0
            self.per_second.clear()

    def peak_per_second(self) -> int:
        """The most requests forwarded within one calendar second."""
        with self._lock:
            return max(self.per_second.values(), default=0)

    def _admit(self) -> bool:
        admitted = self.bucket.take()
        with self._lock:
            if admitted:
                self.forwarded += 1
                self.per_second[int(time.time())] += 1
            else:
                self.refused += 1
        return admitted

    # -- lifecycle --

    def start(self) -> StripeRateProxy:
        self.port = free_port()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler_for(proxy: StripeRateProxy) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the stripe SDK's httpx client uses

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not proxy._admit():
                self._send(429, {"Request-Id": "req_rate_limited"},
                           json.dumps(RATE_LIMIT_BODY).encode())
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                self._send(resp.status, {}, payload)
            finally:
                conn.close()

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

    return Handler
