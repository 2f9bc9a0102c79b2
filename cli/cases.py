"""Cases from the command line: open one, read it, act on it as an agent or a customer.

    python starter.py open --request-id req_1 --email ana@example.com --charge ch_... \\
        --reason change_of_mind [--amount 4900 --currency usd --locale en --document x.pdf]
    python starter.py status CASE [--json]
    python starter.py approve CASE --agent alice [--amount 4900] [--note ...]
    python starter.py deny CASE --agent alice --clause change-of-mind-late [--alternative ...]
    python starter.py ask CASE --agent alice --question "..." [--question ...]
    python starter.py reply CASE --text "..." [--attachment receipt.pdf]
    python starter.py feedback CASE --rating 5 [--comment ...]
    python starter.py withdraw CASE [--by customer] [--note ...]

CASE is the case id (refund-<request id>) or the request id. Agent actions go through the
workflow's updates, so a refused action is reported (exit code 3 wrong state, 4 invalid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.client import connect
from core.config import TASK_QUEUE, Settings, get_settings
from core.models import (
    ApproveSignal,
    CustomerReplySignal,
    DenySignal,
    FeedbackSignal,
    RefundReason,
    RefundRequest,
    RequestInfoSignal,
    WithdrawSignal,
    case_id_for,
)
from core.money import plain
from workflows.case_state import ACTION_REFUSED, ActionResult, CaseState
from workflows.refund_case import RefundCase

EXIT_REFUSED = {"wrong_state": 3, "invalid": 4}


def case_id(value: str) -> str:
    return value if value.startswith("refund-") else case_id_for(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="starter.py", description="Open and act on refund cases.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, *, case: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        if case:
            c.add_argument("case", help="case id (refund-<request id>) or request id")
        c.add_argument("--json", action="store_true", help="machine-readable output")
        return c

    o = command("open", "open a refund case", case=False)
    o.add_argument("--request-id", required=True)
    o.add_argument("--email", required=True)
    o.add_argument("--charge")
    o.add_argument("--payment-intent")
    o.add_argument("--reason", required=True, choices=[r.value for r in RefundReason])
    o.add_argument("--message", default="")
    o.add_argument("--amount", type=int, help="minor units (cents, yen)")
    o.add_argument("--currency")
    o.add_argument("--locale", default="en", choices=["en", "ja", "ko"])
    o.add_argument("--document", action="append", default=[])
    o.add_argument("--task-queue", default=TASK_QUEUE, help=argparse.SUPPRESS)
    command("status", "show a case")
    a = command("approve", "approve as an agent")
    a.add_argument("--agent", required=True)
    a.add_argument("--amount", type=int)
    a.add_argument("--note", default="")
    d = command("deny", "deny as an agent, citing a policy clause")
    d.add_argument("--agent", required=True)
    d.add_argument("--clause", required=True)
    d.add_argument("--alternative")
    d.add_argument("--note", default="")
    q = command("ask", "ask the customer questions as an agent")
    q.add_argument("--agent", required=True)
    q.add_argument("--question", action="append", required=True)
    r = command("reply", "the customer's reply")
    r.add_argument("--text", required=True)
    r.add_argument("--attachment", action="append", default=[])
    r.add_argument("--from-email")
    f = command("feedback", "the customer's rating after the refund")
    f.add_argument("--rating", type=int, required=True)
    f.add_argument("--comment", default="")
    w = command("withdraw", "the customer withdraws the request")
    w.add_argument("--by", default="customer")
    w.add_argument("--note", default="")
    return p


async def run(args: argparse.Namespace, client: Client) -> int:
    """One command against Temporal; prints the outcome; returns the exit code."""
    if args.command == "open":
        return await _open(args, client)
    handle = client.get_workflow_handle_for(RefundCase.run, case_id(args.case))
    if args.command == "status":
        _show_state(await handle.query(RefundCase.state), args.json)
        return 0
    try:
        if args.command == "approve":
            result = await handle.execute_update(RefundCase.approve_action, ApproveSignal(
                agent=args.agent, amount=args.amount, note=args.note))
        elif args.command == "deny":
            result = await handle.execute_update(RefundCase.deny_action, DenySignal(
                agent=args.agent, clause_id=args.clause, note=args.note,
                alternative=args.alternative))
        elif args.command == "ask":
            result = await handle.execute_update(RefundCase.request_info_action,
                                                 RequestInfoSignal(agent=args.agent,
                                                                   questions=args.question))
        else:
            return await _customer_signal(args, handle)
    except WorkflowUpdateFailedError as err:
        return _refused(err, args.json)
    _show_result(result, args.json)
    return 0


async def _open(args: argparse.Namespace, client: Client) -> int:
    request = RefundRequest(
        request_id=args.request_id, customer_email=args.email, charge_id=args.charge,
        payment_intent_id=args.payment_intent, reason=args.reason, message=args.message,
        amount=args.amount, currency=args.currency, locale=args.locale,
        documents=args.document,
    )
    try:
        # As the intake webhook: a request id seen before starts nothing, even once closed
        # (a new run would email and assess the customer all over again).
        handle = await client.start_workflow(
            RefundCase.run, request, id=request.case_id, task_queue=args.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        if args.json:
            print(json.dumps({"case_id": request.case_id, "status": "duplicate"}))
        else:
            print(f"Case {request.case_id} already exists; nothing started. See: "
                  f"python starter.py status {request.case_id}")
        return 0
    if args.json:
        print(json.dumps({"case_id": handle.id, "run_id": handle.result_run_id}))
    else:
        print(f"Opened case {handle.id}. Next: python starter.py status {handle.id}")
    return 0


async def _customer_signal(args: argparse.Namespace, handle: Any) -> int:
    if args.command == "reply":
        await handle.signal(RefundCase.customer_reply, CustomerReplySignal(
            text=args.text, attachments=args.attachment, from_email=args.from_email,
            channel="cli"))
    elif args.command == "feedback":
        await handle.signal(RefundCase.feedback, FeedbackSignal(rating=args.rating,
                                                                comment=args.comment))
    else:
        await handle.signal(RefundCase.withdraw, WithdrawSignal(by=args.by, note=args.note))
    if args.json:
        print(json.dumps({"case_id": handle.id, "sent": args.command}))
    else:
        print(f"Sent {args.command} to {handle.id}; see: python starter.py status {handle.id}")
    return 0


def _refused(err: WorkflowUpdateFailedError, as_json: bool) -> int:
    cause = err.cause
    if not (isinstance(cause, ApplicationError) and cause.type == ACTION_REFUSED):
        raise err
    details = cause.details[0] if cause.details else {}
    code = str(details.get("code", "invalid"))
    if as_json:
        print(json.dumps({"accepted": False, "code": code, "reason": details.get("reason")}))
    else:
        print(f"Refused ({code}): {details.get('reason', cause.message)}", file=sys.stderr)
    return EXIT_REFUSED.get(code, 4)


def _show_result(result: ActionResult, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json())
    else:
        print(f"{result.message} (case is now {result.status})")


def _show_state(state: CaseState, as_json: bool) -> None:
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    print(format_state(state))


def format_state(state: CaseState) -> str:
    """A page an agent can read: the case, what it waits for, its timeline."""
    req = state.request
    lines = [f"{state.case_id}  [{state.status}]  policy {state.policy_version or '-'}",
             f"  customer {req.customer_email}  reason {req.reason}  "
             f"charge {req.charge_id or req.payment_intent_id}"]
    if state.facts is not None and state.facts.found and state.facts.currency:
        f = state.facts
        lines.append(f"  charge {plain(f.amount, f.currency)}"  # type: ignore[arg-type]
                     f", refunded {plain(f.amount_refunded, f.currency)}")  # type: ignore[arg-type]
    if state.assessment is not None:
        a = state.assessment
        lines.append(f"  risk {a.risk} ({a.risk_score}/100)"
                     + (f"  findings: {', '.join(a.findings)}" if a.findings else ""))
    if state.decision is not None:
        d = state.decision
        lines.append(f"  policy says {d.outcome}: {d.explanation}")
    if state.approvals:
        lines.append(f"  approvals {len(state.approvals)}/{state.approvers_required}: "
                     + ", ".join(a.agent for a in state.approvals))
    if state.refund is not None:
        r = state.refund
        lines.append(f"  refund {r.refund_id} {plain(r.amount, r.currency)} {r.status}")
    if state.sla_breached:
        lines.append(f"  SLA breached: {', '.join(state.sla_breaches)}")
    if state.waiting_for:
        until = f" until {state.deadline.isoformat(timespec='seconds')}" \
            if state.deadline else ""
        lines.append(f"  waiting for {state.waiting_for}{until}")
    if state.feedback is not None:
        lines.append(f"  feedback {state.feedback.rating}/5 {state.feedback.comment}")
    lines.append("  timeline:")
    for t in state.timeline:
        lines.append(f"    {t.at.isoformat(timespec='seconds')}  {t.actor:<14} {t.kind:<18} "
                     f"{t.message}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    try:
        client = await connect(settings)
    except RuntimeError as err:
        print(f"cannot reach Temporal at {settings.TEMPORAL_ADDRESS} ({err}); is the stack "
              "running (python starter.py dev)?", file=sys.stderr)
        return 1
    return await run(args, client)


def main(argv: list[str], *, settings: Settings | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_main(args, settings or get_settings()))
    except ValidationError as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return 2
    except RPCError as err:
        print(f"Temporal refused: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
