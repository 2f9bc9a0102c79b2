"""The local Stripe stand-in's cost per request as the data it holds grows.

Starts our localstripe wrapper (as `make run` does, with a state file), creates charges
through the stripe SDK over HTTP and prints the time per charge-create request while the
stand-in holds about 100 and about 5,000 charges. A stand-in that rewrote its whole store
on every write would slow down in proportion; ours should not. Prints figures only.

    .venv/bin/python bench/localstripe_store.py [--small 100] [--large 5000] [--sample 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import binaries  # noqa: E402
from stack.net import free_port, wait_for_port  # noqa: E402

API_KEY = "sk_test_bench_localstripe"
CARD = "pm_card_visa"


def _create_charges(client: stripe.StripeClient, count: int) -> list[float]:
    """Create `count` charges one after another; return each request's seconds."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.v1.charges.create({"amount": 1000, "currency": "usd", "source": CARD})
        times.append(time.perf_counter() - started)
    return times


def _report(label: str, times: list[float]) -> float:
    ordered = sorted(times)
    mean = statistics.fmean(times) * 1000
    p50 = ordered[len(ordered) // 2] * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    print(f"  {label:<26} mean {mean:6.2f} ms   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms")
    return mean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100, help="charges held, first sample")
    parser.add_argument("--large", type=int, default=5000, help="charges held, second sample")
    parser.add_argument("--sample", type=int, default=200, help="requests timed per sample")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        state = Path(tmp) / "localstripe.pickle"
        proc = subprocess.Popen(binaries.localstripe_command(port, state), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, timeout=30)
            client = stripe.StripeClient(API_KEY, base_addresses={
                "api": f"http://127.0.0.1:{port}"}, max_network_retries=0)
            print(f"localstripe wrapper, charge creates, {args.sample} timed per sample")
            _create_charges(client, args.small)
            small = _report(f"holding {args.small} charges", _create_charges(client,
                                                                            args.sample))
            fill_started = time.perf_counter()
            _create_charges(client, args.large - args.small - args.sample)
            fill = time.perf_counter() - fill_started
            large = _report(f"holding {args.large} charges", _create_charges(client,
                                                                            args.sample))
            print(f"  ratio (large / small)      {large / small:.2f}")
            print(f"  filling {args.large - args.small - args.sample} charges took "
                  f"{fill:.1f} s")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        if state.exists():
            print(f"  state file on stop         {state.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
