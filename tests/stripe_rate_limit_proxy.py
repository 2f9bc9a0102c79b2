"""A Stripe stand-in that enforces a request rate, as Stripe does (25 requests/s in test
mode, 100 in live mode): a small HTTP proxy in front of localstripe that forwards at most
`rate` requests in any one second (a sliding window) and answers the others with
Stripe's 429 `rate_limit` error, in the shape recorded in stripe_recorded/rate_limit.json.
Refused requests do not count towards the window and never reach localstripe.

It counts what it saw, for tests (`proxy.stats()`) and for benchmarks that run it as a
process (`GET /_proxy/stats`, JSON, not itself counted):

    python -m tests.stripe_rate_limit_proxy --upstream http://127.0.0.1:8420 --rate 25 \\
        --port 8421
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from stack.net import free_port
from tests.stripe_replay_server import recorded

STATS_PATH = "/_proxy/stats"
# Hop-by-hop or recomputed headers: never copied between the two connections.
_NOT_COPIED = frozenset({"host", "connection", "keep-alive", "transfer-encoding",
                         "content-length", "accept-encoding", "date", "server"})


class ProxyStats(BaseModel):
    requests: int = 0  # every request to the Stripe API (stats requests excluded)
    forwarded: int = 0
    rate_limited: int = 0  # answered 429
    upstream_failed: int = 0  # localstripe unreachable: answered 502


class SlidingWindow:
    """At most `limit` admissions in any `seconds`-long window."""

    def __init__(self, limit: int, seconds: float = 1.0,
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


def rate_limit_response() -> tuple[int, dict[str, str], bytes]:
    """Stripe's 429, as recorded, with a fresh request id."""
    sample = recorded("rate_limit")
    headers = {**sample["headers"], "Request-Id": f"req_{uuid.uuid4().hex[:14]}"}
    return sample["status"], headers, json.dumps(sample["body"]).encode()


class StripeRateLimitProxy:
    def __init__(self, upstream: str, rate: int, *, port: int | None = None,
                 host: str = "127.0.0.1", clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = urlsplit(upstream)
        self.window = SlidingWindow(rate, clock=clock)
        self.host = host
        self.port = port or free_port()
        self._stats = ProxyStats()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stats(self) -> ProxyStats:
        with self._lock:
            return self._stats.model_copy()

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self._stats, field, getattr(self._stats, field) + 1)

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port,
                                          timeout=60)
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
        """Serve in a background thread (in-process use by tests)."""
        self._httpd = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (as its own process)."""
        httpd = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
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
            if not proxy.window.admit():
                proxy.count("rate_limited")
                self._send(*rate_limit_response())
                return
            try:
                answer = proxy.forward(self.command, self.path, dict(self.headers.items()),
                                       body)
            except OSError as exc:
                proxy.count("upstream_failed")
                error = {"error": {"type": "api_error", "message": f"upstream: {exc}"}}
                self._send(502, {}, json.dumps(error).encode())
                return
            proxy.count("forwarded")
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
    parser.add_argument("--rate", type=int, default=25, help="requests per second")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    StripeRateLimitProxy(args.upstream, args.rate, port=args.port,
                         host=args.host).serve_forever()


if __name__ == "__main__":
    main()
