"""A worker in a process of its own, so a benchmark can read its CPU time and memory apart
from the benchmark's client and the servers. Started by bench_stack.start_worker:

    python bench/worker_process.py --kind case|bare --address HOST:PORT --task-queue Q
        [--settings JSON] [--max-cached-workflows N] [--max-concurrent-activities N]

`case` is the real RefundCase worker (worker.build_worker with the real activities);
`bare` hosts bare_workflows with no-op activities. Once the worker is built it prints one
JSON line on stdout (the cache size and activity slots in effect), then runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bare_workflows  # noqa: E402  (bench/ is sys.path[0]: the sandbox re-imports it)
import bench_stack  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

# Worker options the benchmarks vary, and the SDK's defaults when they are not given.
TUNABLES = {"max_cached_workflows": 1000, "max_concurrent_activities": 100}


def _case_worker(client: Client, task_queue: str, settings_json: str,
                 tunables: dict[str, int]) -> Any:
    """The real workers (worker.build_worker); the tunables become the worker's own
    settings, WORKER_MAX_CACHED_WORKFLOWS and WORKER_MAX_CONCURRENT_ACTIVITIES."""
    from core.config import load_settings
    from worker import build_worker

    overrides = json.loads(settings_json)
    overrides.update({f"WORKER_{name.upper()}": value for name, value in tunables.items()})
    return build_worker(client, load_settings(**overrides), task_queue=task_queue)


def _bare_worker(client: Client, task_queue: str, tunables: dict[str, int]) -> Worker:
    """The bare workflows on the runner the real worker uses, so the two compare like with
    like."""
    from worker import WORKFLOW_RUNNER

    return Worker(client, task_queue=task_queue, workflows=bare_workflows.WORKFLOWS,
                  activities=bare_workflows.ACTIVITIES, workflow_runner=WORKFLOW_RUNNER,
                  **tunables)


def _in_effect(worker: Any) -> dict[str, Any]:
    main = getattr(worker, "workers", (worker,))[0]  # build_worker's: the workflows' worker
    config = main.config()
    return {name: config.get(name) or default for name, default in TUNABLES.items()}


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["case", "bare"], required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--settings", default="{}", help="Settings overrides, JSON (case)")
    parser.add_argument("--max-cached-workflows", type=int)
    parser.add_argument("--max-concurrent-activities", type=int)
    args = parser.parse_args(argv)
    tunables = {name: getattr(args, name) for name in TUNABLES
                if getattr(args, name) is not None}

    client = await Client.connect(args.address, namespace=args.namespace,
                                  data_converter=bench_stack.stack_converter())
    if args.kind == "case":
        worker = _case_worker(client, args.task_queue, args.settings, tunables)
    else:
        worker = _bare_worker(client, args.task_queue, tunables)
    print(json.dumps({"ready": True, **_in_effect(worker)}), flush=True)
    # Nobody reads the pipe after that line: anything else printed goes to the log instead
    # of filling the pipe and blocking the worker.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    await worker.run()


if __name__ == "__main__":
    # The parent stops us with SIGTERM once it has read our CPU time and memory; nothing is
    # left to finish, and os._exit avoids the SDK's exit-time abort (sdk-python issue 300).
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())
