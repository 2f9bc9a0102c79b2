"""A tiny HTTP server that stands in front of localstripe for the stripe SDK: it forwards
requests, answers chosen ones with recorded Stripe responses, or forwards one and then
drops the response (the "lost response" of a network failure). It records every request
it saw, so tests can count calls and read headers such as Idempotency-Key."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stack.net import free_port

RECORDED = Path(__file__).parent / "stripe_recorded"
API_KEY = "sk_test_refund_desk_tests"  # localstripe takes any sk_ key


def recorded(name: str) -> dict[str, Any]:
    """A recorded Stripe response: {"status": int, "headers": {...}, "body": {...}}."""
    return json.loads((RECORDED / f"{name}.json").read_text())


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: str

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class _Rule:
    method: str
    path: str
    action: str  # "reply" | "drop"
    response: dict[str, Any] | None = None
    times: int | None = 1  # None: every matching request
    used: int = 0

    def matches(self, method: str, route: str) -> bool:
        live = self.times is None or self.used < self.times
        return live and method == self.method and route == self.path


@dataclass
class StripeReplayServer:
    upstream: str | None = None  # e.g. localstripe's URL; None: unmatched requests get 404
    requests: list[SeenRequest] = field(default_factory=list)
    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, method: str, path: str, response: dict[str, Any] | str,
              times: int | None = 1) -> None:
        """Answer `method path` with a recorded response (name under stripe_recorded/)."""
        if isinstance(response, str):
            response = recorded(response)
        self._rules.append(_Rule(method, path, "reply", response, times))

    def drop_response(self, method: str, path: str, times: int = 1) -> None:
        """Forward `method path` upstream, then close the connection without answering."""
        self._rules.append(_Rule(method, path, "drop", None, times))

    def seen(self, method: str, path: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.method == method and r.route == path]

    def _take_rule(self, method: str, route: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, route):
                    rule.used += 1
                    return rule
        return None

    # -- lifecycle --

    def start(self) -> StripeReplayServer:
        self.port = free_port()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
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


def _handler_for(server: StripeReplayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = SeenRequest(self.command, self.path, dict(self.headers.items()),
                               body.decode())
            with server._lock:
                server.requests.append(seen)
            rule = server._take_rule(self.command, seen.route)
            if rule and rule.action == "reply":
                assert rule.response is not None
                self._send(rule.response["status"], rule.response.get("headers", {}),
                           json.dumps(rule.response["body"]).encode())
                return
            if server.upstream is None:
                self._send(404, {}, b'{"error": {"type": "invalid_request_error"}}')
                return
            status, headers, payload = self._forward(body)
            if rule and rule.action == "drop":
                self.close_connection = True  # the upstream acted; the client never hears
                return
            self._send(status, headers, payload)

        def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            target = urlsplit(server.upstream)
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                return resp.status, {"Content-Type": resp.getheader("Content-Type", "")}, (
                    resp.read())
            finally:
                conn.close()

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                if key.lower() not in {"content-type", "content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

    return Handler
