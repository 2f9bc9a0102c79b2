"""Run localstripe (the Stripe stand-in) as `make run` and the tests use it: state in a
file of our choosing, bound to loopback only, writes that stay cheap as data accumulates,
and Stripe's idempotent requests.

localstripe always pickles its store to the fixed path /tmp/localstripe.pickle, rewrites
it whole on every write, scans every object to list one type, listens on every interface
and ignores `Idempotency-Key`. This wrapper keeps the state in `--state-file` (written at
checkpoints and on stop, see `stack.localstripe_state`), lists from an index by type
(`stack.localstripe_index`), binds 127.0.0.1 and replays the first answer to a repeated
idempotency key (`stack.stripe_idempotency`). localstripe's files are not modified.
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from aiohttp import web
from localstripe import resources, server

from stack import localstripe_index
from stack.localstripe_state import CHECKPOINT_SECONDS, LocalstripeState
from stack.stripe_idempotency import IdempotencyRecords, idempotency_middleware

SHUTDOWN_SECONDS = 5  # in-flight requests get this long on stop; then the state is saved


def build_app(state_file: Path, *, from_scratch: bool = False,
              checkpoint_seconds: float = CHECKPOINT_SECONDS) -> web.Application:
    """localstripe's app with our state handling and idempotency middleware."""
    localstripe_index.install()
    records = IdempotencyRecords()
    state = LocalstripeState(state_file, resources.store, records)
    records.on_change = state.mark_dirty
    # localstripe calls store.dump_to_disk() after every write: only note the change.
    resources.store.dump_to_disk = state.mark_dirty
    if not from_scratch:
        state.load()
    app: web.Application = server.app
    app.middlewares.insert(0, idempotency_middleware(records))
    state.install(app, every=checkpoint_seconds)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    parser.add_argument("--checkpoint-seconds", type=float, default=CHECKPOINT_SECONDS,
                        help="write the state file at most this often while running")
    args = parser.parse_args()

    args.state_file.parent.mkdir(parents=True, exist_ok=True)
    app = build_app(args.state_file, from_scratch=args.from_scratch,
                    checkpoint_seconds=args.checkpoint_seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    logging.basicConfig(level=logging.WARNING)
    web.run_app(app, sock=sock, print=None, access_log=None,
                shutdown_timeout=SHUTDOWN_SECONDS)


if __name__ == "__main__":
    main()
