"""Benchmark `policy simulate`: generate N random cases, write a looser candidate policy
next to them, run the comparison and print the elapsed time.

    .venv/bin/python bench/policy_simulate.py --generate 10000 [--seed 7] [--out DIR]

The target is 10,000 cases in under 5 s. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models import RefundReason  # noqa: E402
from policies.loader import DEFAULT_POLICY  # noqa: E402

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PRICES = {"usd": [900, 2900, 9900, 49900, 129900], "eur": [900, 2900, 9900, 99900],
          "gbp": [700, 2500, 8900, 89900], "jpy": [980, 3300, 12800, 198000],
          "krw": [9900, 39000, 129000, 1990000], "kwd": [3000, 9500, 45000, 400000],
          "chf": [2900]}
DOCS = ["receipt.pdf", "ticket #4411", "bank statement.png", "invoice-0042.pdf"]
FINDINGS = ["charge_not_found", "email_mismatch", "currency_mismatch"]


def random_case(rng: random.Random) -> dict:
    """One plausible request: mostly clean, with the odd dispute, finding or risk."""
    currency = rng.choices(list(PRICES), weights=[40, 20, 12, 10, 8, 4, 1])[0]
    amount = rng.choice(PRICES[currency])
    annual = rng.random() < 0.3
    period = timedelta(days=365 if annual else 30)
    purchased = NOW - timedelta(days=rng.uniform(0, 200 if annual else 45))
    refunded = rng.choice([0] * 9 + [amount // 4, amount])
    case = {
        "reason": rng.choices([r.value for r in RefundReason],
                              weights=[20, 10, 12, 8, 6, 25, 3, 6])[0],
        "currency": currency,
        "charge_amount": amount,
        "amount_refunded": refunded,
        "purchased_at": purchased.isoformat(),
        "period_start": purchased.isoformat(),
        "period_end": (purchased + period).isoformat(),
        "customer_since": (purchased - timedelta(days=rng.choice([0, 3, 20, 90, 700]))
                           ).isoformat(),
        "prior_refunds": rng.choices([0, 1, 2, 3, 5], weights=[70, 15, 8, 5, 2])[0],
        "disputed": rng.random() < 0.03,
        "already_fully_refunded": refunded == amount,
        "billing_error_confirmed": rng.random() < 0.5,
        "risk": rng.choices(["low", "medium", "high"], weights=[85, 10, 5])[0],
        "documents": rng.sample(DOCS, rng.choice([0, 0, 1, 2])),
        "findings": [rng.choice(FINDINGS)] if rng.random() < 0.04 else [],
        "terms_violation": rng.random() < 0.01,
        "now": NOW.isoformat(),
    }
    if rng.random() < 0.7:
        case["usage_fraction"] = round(rng.random() * rng.choice([0, 1, 1]), 3)
        case["product_used"] = case["usage_fraction"] > 0
    if rng.random() < 0.2:
        case["requested_amount"] = rng.randint(1, amount)
    return case


def write_candidate(path: Path) -> Path:
    """A looser variant of the default policy: 30-day money-back guarantee, higher USD
    auto-approval limit, three prior refunds before review."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["version"] = "2026-12-01-candidate"
    data["reasons"]["change_of_mind"]["window"]["days"] = 30
    data["approval"]["auto_approve_limit"]["usd"] = 50000
    data["review"]["max_prior_refunds"] = 3
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--generate", type=int, default=10_000, metavar="N")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="directory for cases.jsonl (default: temp)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="policy-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    cases = out / "cases.jsonl"
    with cases.open("w", encoding="utf-8") as fh:
        for _ in range(args.generate):
            fh.write(json.dumps(random_case(rng)) + "\n")
    candidate = write_candidate(out / "candidate.yaml")
    print(f"wrote {args.generate} cases to {cases}")

    from policies.cli import main as policy_main

    start = time.perf_counter()
    policy_main(["simulate", "--policy", str(candidate), "--cases", str(cases)])
    in_process = time.perf_counter() - start

    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "starter.py"), "policy", "simulate",
                    "--policy", str(candidate), "--cases", str(cases)],
                   cwd=ROOT, check=True, capture_output=True)
    whole = time.perf_counter() - start
    print(f"\nsimulate on {args.generate} cases: {in_process:.2f} s in process, "
          f"{whole:.2f} s as `python starter.py policy simulate` (interpreter start included)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
