"""Run localstripe (the Stripe stand-in) with its state in a file of our choosing and
bound to loopback only.

localstripe always pickles its store to the fixed path /tmp/localstripe.pickle and
listens on every interface, so two checkouts (or a test run beside `make run`) would
share and overwrite one another's charges. This wrapper points the store at
`--state-file` and binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import socket
from pathlib import Path

from aiohttp import web
from localstripe import resources, server


def _use_state_file(path: Path) -> None:
    def load(store: resources.Store) -> None:
        try:
            with path.open("rb") as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        store.clear()
        store.update(old)

    def dump(store: resources.Store) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    args = parser.parse_args()

    args.state_file.parent.mkdir(parents=True, exist_ok=True)
    _use_state_file(args.state_file)
    if not args.from_scratch:
        resources.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
