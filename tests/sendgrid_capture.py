"""A local stand-in for SendGrid's v3 mail endpoint, so the real sendgrid SDK can be
exercised over HTTP: it records what `POST /v3/mail/send` received (JSON body and
headers) and answers 202 with an `X-Message-Id`, or a queued error status."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

MAIL_SEND = "/v3/mail/send"
_ERROR_BODIES = {
    400: {"errors": [{"message": "Invalid email address", "field": "personalizations"}]},
    401: {"errors": [{"message": "The provided authorization grant is invalid"}]},
    429: {"errors": [{"message": "too many requests"}]},
    500: {"errors": [{"message": "internal error"}]},
}


@dataclass
class CapturedMail:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class SendGridCapture:
    """Thread-safe record of requests plus a queue of statuses to answer next."""

    host: str = ""
    requests: list[CapturedMail] = field(default_factory=list)
    _statuses: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (then 202 again)."""
        with self._lock:
            self._statuses.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._statuses.clear()

    def _record(self, mail: CapturedMail) -> tuple[int, str]:
        with self._lock:
            self.requests.append(mail)
            status = self._statuses.pop(0) if self._statuses else 202
            return status, f"capture-{next(self._ids)}"


def _handler(capture: SendGridCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != MAIL_SEND:
                self._answer(404, {"errors": [{"message": "not found"}]})
                return
            status, message_id = capture._record(
                CapturedMail(self.path, dict(self.headers.items()), json.loads(raw or b"{}"))
            )
            if status == 202:
                self.send_response(202)
                self.send_header("X-Message-Id", message_id)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._answer(status, _ERROR_BODIES.get(status, {"errors": []}))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture(scope="session")
def sendgrid_server() -> Iterator[SendGridCapture]:
    """One capture server on a free loopback port for the session."""
    capture = SendGridCapture()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(capture))
    capture.host = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sendgrid_capture(sendgrid_server: SendGridCapture) -> SendGridCapture:
    """The session's capture server, emptied for this test."""
    sendgrid_server.reset()
    return sendgrid_server
