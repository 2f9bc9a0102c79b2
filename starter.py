"""Refund Desk's command line: bring the local stack up, open and act on cases, check
and simulate policies.

    python starter.py dev                 # the whole local stack (what `make run` does)
    python starter.py demo                # seed a charge in the Stripe stand-in, open a case
    python starter.py open|status|approve|deny|ask|reply|feedback|withdraw ...
    python starter.py assign|note|satisfy|retry-refund|close ...
    python starter.py report              # trends: reasons, decisions, SLA, feedback
    python starter.py incident open|status|approve|pause|resume|cancel|report ...
    python starter.py policy check FILE | policy simulate ...

Each command lives in its own module; this file only dispatches.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "dev": "stack.supervisor",
    "demo": "cli.demo",
    "open": "cli.cases",
    "status": "cli.cases",
    "approve": "cli.cases",
    "deny": "cli.cases",
    "ask": "cli.cases",
    "reply": "cli.cases",
    "feedback": "cli.cases",
    "withdraw": "cli.cases",
    "assign": "cli.cases",
    "note": "cli.cases",
    "satisfy": "cli.cases",
    "retry-refund": "cli.cases",
    "close": "cli.cases",
    "report": "cli.report",
    "incident": "cli.incidents",
    "policy": "policies.cli",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    # Commands that share a module get their own name as the first argument.
    shared = list(COMMANDS.values()).count(COMMANDS[argv[0]]) > 1
    return module.main(argv if shared else argv[1:]) or 0


if __name__ == "__main__":
    from cli.exit import leave

    try:
        code = main(sys.argv[1:])
    except BrokenPipeError:  # `starter.py status ... | head`
        code = 0
    except SystemExit as stop:  # argparse: --help (0), bad arguments (2)
        code = stop.code if isinstance(stop.code, int) else 1 if stop.code else 0
    leave(code)
