"""The CLI exit drill: N separate `starter.py status` calls against a dev server, counting
exit codes. Before the CLI left through os._exit, about 1 call in 10 aborted at
interpreter exit with 134 (sdk-python issue 300). Prints the counts; asserts nothing.

    .venv/bin/python bench/cli_exit_drill.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment

from core import binaries, search_attributes
from core.config import ROOT


async def drill(calls: int) -> Counter[int]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        dev_server_startup_timeout=binaries.SERVER_STARTUP,
        search_attributes=search_attributes.ALL)
    codes: Counter[int] = Counter()
    try:
        with tempfile.TemporaryDirectory() as data:
            child_env = {**os.environ, "DATA_DIR": data,
                         "TEMPORAL_ADDRESS": env.client.service_client.config.target_host}
            for i in range(calls):
                done = subprocess.run(
                    [sys.executable, "starter.py", "status", f"refund-drill-{i}"],
                    cwd=ROOT, env=child_env, capture_output=True, timeout=60)
                codes[done.returncode] += 1
    finally:
        await env.shutdown()
    return codes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    started = time.monotonic()
    codes = asyncio.run(drill(args.calls))
    print(f"{args.calls} CLI calls in {time.monotonic() - started:.1f} s; exit codes: "
          + ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())))
    print(f"aborts (134): {codes.get(134, 0)}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
