"""Leaving a command-line process that used the Temporal client.

The SDK's threads can abort the interpreter at exit (sdk-python issue 300: "Fatal Python
error: PyGILState_Release", exit 134) after the work is done, so a script reading our
documented exit codes would misread a success. The work is over when this is called:
flush what was printed and end the process without interpreter teardown."""

from __future__ import annotations

import os
import sys


def leave(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `... | head`, or a closed stream
            code = code or 0
    os._exit(code)
