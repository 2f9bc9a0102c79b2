"""`python starter.py demo`: a refund case to look at in one command. Seeds a paid charge in
the running Stripe stand-in (stack.stripe_seed), opens a case for it and says what to do
next. Needs the local stack (`python starter.py dev`) running.

    python starter.py demo [--amount 4900] [--currency usd] [--reason change_of_mind]

The default amount is approved by the policy on its own; `--amount 50000` (above the
automatic limit) waits for an agent, `--amount 150000` for two.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from core.case_client import CaseClient
from core.client import connect
from core.config import Settings, get_settings
from core.contract import TASK_QUEUE, RefundReason, RefundRequest
from core.money import plain
from stack.stripe_seed import seed_charge


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="starter.py demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--email", default="ana@example.com")
    p.add_argument("--amount", type=int, default=4900, help="minor units")
    p.add_argument("--currency", default="usd")
    p.add_argument("--reason", default="change_of_mind", choices=[r.value for r in RefundReason])
    p.add_argument("--locale", default="en", choices=["en", "ja", "ko"])
    p.add_argument("--task-queue", default=TASK_QUEUE, help=argparse.SUPPRESS)
    return p


async def open_demo_case(args: argparse.Namespace, settings: Settings) -> RefundRequest:
    charge = await asyncio.to_thread(
        seed_charge, settings.STRIPE_API_BASE, settings.STRIPE_API_KEY, email=args.email,
        amount=args.amount, currency=args.currency, description="Refund Desk demo plan")
    request = RefundRequest(
        request_id=f"demo-{uuid.uuid4().hex[:8]}", customer_email=args.email,
        charge_id=charge.charge_id, reason=args.reason, locale=args.locale,
        message="Demo request opened by `python starter.py demo`.",
    )
    cases = CaseClient(await connect(settings), task_queue=args.task_queue,
                       customer_ref_key=settings.CUSTOMER_REF_KEY.get_secret_value())
    await cases.start(request, opened_by="demo")
    return request


def main(argv: list[str], *, settings: Settings | None = None) -> int:
    args = parser().parse_args(argv)
    settings = settings or get_settings()
    request = asyncio.run(open_demo_case(args, settings))
    case = request.case_id
    print(f"Seeded charge {request.charge_id} ({plain(args.amount, args.currency)}) for "
          f"{args.email} in {settings.STRIPE_API_BASE}")
    print(f"Opened case {case}.\n\nNext:")
    print(f"  python starter.py status {case}              # status, decision, timeline")
    print(f"  python starter.py approve {case} --agent alice   # if it waits for an agent")
    print(f"  python starter.py deny {case} --agent alice --clause change-of-mind-late")
    print(f"  python starter.py feedback {case} --rating 5      # after the refund")
    print(f"  Temporal UI: http://localhost:{settings.TEMPORAL_UI_PORT}/namespaces/"
          f"{settings.TEMPORAL_NAMESPACE}/workflows/{case}")
    print(f"  Emails: {settings.OUTBOX_DIR}")
    return 0


if __name__ == "__main__":
    from cli.exit import leave

    leave(main(sys.argv[1:]))
