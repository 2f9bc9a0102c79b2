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
    python starter.py assign CASE --agent alice [--to bob | --release]
    python starter.py note CASE --agent alice --text "..."
    python starter.py satisfy CASE --agent alice --requirement support_evidence --note "..."
    python starter.py retry-refund CASE --agent alice [--note ...]
    python starter.py close CASE --agent alice --reason "..."

CASE is the case id (refund-<request id>) or the request id. Agent actions go through the
workflow's updates, so a refused action is reported (exit code 3 wrong state, 4 invalid).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from core.case_client import (
    ActionRefused,
    CaseClient,
    CaseIsClosed,
    CaseNotFound,
    OpenCaseOnCharge,
    ReplyTaken,
    case_id,
    policy_reopen_window,
)
from core.client import connect
from core.config import Settings, get_settings
from core.contract import (
    TASK_QUEUE,
    ActionResult,
    ApproveSignal,
    AssignSignal,
    CaseState,
    CloseCaseSignal,
    CustomerReplySignal,
    DenySignal,
    FeedbackSignal,
    NoteSignal,
    RefundReason,
    RefundRequest,
    RequestInfoSignal,
    RetryRefundSignal,
    SatisfyRequirementSignal,
    Signal,
    Update,
    WithdrawSignal,
)
from core.money import plain

# Exit codes (README): 0 done, 1 Temporal unreachable or refused the call, 2 bad input,
# 3 refused (wrong state, or the case is closed), 4 refused (invalid), 5 no such case.
EXIT_TEMPORAL, EXIT_INPUT, EXIT_NO_CASE = 1, 2, 5
EXIT_REFUSED = {"wrong_state": 3, "invalid": 4}


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
    f.add_argument("--rating", type=int, required=True, choices=range(1, 6),
                   metavar="1-5")
    f.add_argument("--comment", default="")
    g = command("assign", "claim a case, give it to another agent, or release it")
    g.add_argument("--agent", required=True)
    g.add_argument("--to", help="the agent to hold the case (default: --agent)")
    g.add_argument("--release", action="store_true", help="nobody holds the case")
    n = command("note", "a note for the other agents")
    n.add_argument("--agent", required=True)
    n.add_argument("--text", required=True)
    m = command("satisfy", "mark a requirement met, saying how")
    m.add_argument("--agent", required=True)
    m.add_argument("--requirement", required=True)
    m.add_argument("--note", required=True)
    t = command("retry-refund", "retry a failed refund (a new round)")
    t.add_argument("--agent", required=True)
    t.add_argument("--note", default="")
    c = command("close", "close a case whose refund failed, with why")
    c.add_argument("--agent", required=True)
    c.add_argument("--reason", required=True)
    w = command("withdraw", "the customer withdraws the request")
    w.add_argument("--by", default="customer")
    w.add_argument("--note", default="")
    return p


async def run(args: argparse.Namespace, client: Client, settings: Settings) -> int:
    """One command against Temporal; prints the outcome; returns the exit code."""
    cases = CaseClient(client, task_queue=args.task_queue if args.command == "open"
                       else TASK_QUEUE,
                       customer_ref_key=settings.CUSTOMER_REF_KEY.get_secret_value())
    if args.command == "open":
        return await _open(args, cases)
    case = case_id(args.case)
    try:
        if args.command == "status":
            _show_state(await cases.state(case), args.json)
            return 0
        action = _action(args)
        if action is not None:
            update, message = action
            _show_result(await cases.act(case, update, message), args.json)
            return 0
        signal, message = _customer_message(args)
        if isinstance(message, CustomerReplySignal):  # a closed case reopens, or a new one
            taken = await cases.reply(case, message, reopen_window=policy_reopen_window(
                settings.REFUND_POLICY_FILE))
            return _show_reply(case, taken, args.json)
        await cases.signal(case, signal, message)
    except ActionRefused as refused:
        return _refused(refused.code, refused.reason, args.json)
    except CaseIsClosed:
        return _refused("wrong_state", "the case is closed", args.json)
    except CaseNotFound:
        print(f"no case {case!r}", file=sys.stderr)
        return EXIT_NO_CASE
    if args.json:
        print(json.dumps({"case_id": case, "sent": args.command}))
    else:
        print(f"Sent {args.command} to {case}; see: python starter.py status {case}")
    return 0


def _action(args: argparse.Namespace) -> tuple[Update, BaseModel] | None:
    if args.command == "approve":
        return Update.approve, ApproveSignal(agent=args.agent, amount=args.amount,
                                             note=args.note)
    if args.command == "deny":
        return Update.deny, DenySignal(agent=args.agent, clause_id=args.clause, note=args.note,
                                       alternative=args.alternative)
    if args.command == "ask":
        return Update.request_info, RequestInfoSignal(agent=args.agent,
                                                      questions=args.question)
    if args.command == "assign":
        return Update.assign, AssignSignal(
            agent=args.agent, assignee=None if args.release else (args.to or args.agent))
    if args.command == "note":
        return Update.note, NoteSignal(agent=args.agent, text=args.text)
    if args.command == "satisfy":
        return Update.satisfy_requirement, SatisfyRequirementSignal(
            agent=args.agent, requirement=args.requirement, note=args.note)
    if args.command == "retry-refund":
        return Update.retry_refund, RetryRefundSignal(agent=args.agent, note=args.note)
    if args.command == "close":
        return Update.close, CloseCaseSignal(agent=args.agent, reason=args.reason)
    return None


def _show_reply(case: str, taken: ReplyTaken, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"case_id": taken.case_id, "sent": "reply", "status": taken.how}))
        return 0
    if taken.how == "reopened":
        print(f"{case} was closed; the reply reopened it.", end=" ")
    elif taken.how == "follow_up":
        print(f"{case} closed before its reopen window; the reply opened {taken.case_id}, "
              "linked to it.", end=" ")
    else:
        print(f"Sent reply to {taken.case_id}.", end=" ")
    print(f"See: python starter.py status {taken.case_id}")
    return 0


def _customer_message(args: argparse.Namespace) -> tuple[Signal, BaseModel]:
    if args.command == "reply":
        return Signal.customer_reply, CustomerReplySignal(
            text=args.text, attachments=args.attachment, from_email=args.from_email,
            channel="cli")
    if args.command == "feedback":
        return Signal.feedback, FeedbackSignal(rating=args.rating, comment=args.comment)
    return Signal.withdraw, WithdrawSignal(by=args.by, note=args.note)


async def _open(args: argparse.Namespace, cases: CaseClient) -> int:
    request = RefundRequest(
        received_at=datetime.now(UTC),
        request_id=args.request_id, customer_email=args.email, charge_id=args.charge,
        payment_intent_id=args.payment_intent, reason=args.reason, message=args.message,
        amount=args.amount, currency=args.currency, locale=args.locale,
        documents=args.document,
    )
    try:
        started = await cases.open(request, opened_by="cli", channel="cli")
    except OpenCaseOnCharge as exc:
        return _refused("wrong_state", str(exc), args.json, case_id=exc.case_id)
    case = started.case_id
    if started.joined:
        if args.json:
            print(json.dumps({"case_id": case, "status": "joined"}))
        else:
            print(f"The charge already has the open case {case}: this request joined it as "
                  f"the customer's reply. See: python starter.py status {case}")
        return 0
    if not started.started:
        if args.json:
            print(json.dumps({"case_id": case, "status": "duplicate"}))
        else:
            print(f"Case {case} already exists; nothing started. See: "
                  f"python starter.py status {case}")
        return 0
    if args.json:
        print(json.dumps({"case_id": case, "status": "started"}))
    else:
        print(f"Opened case {case}. Next: python starter.py status {case}")
    return 0


def _refused(code: str, reason: str, as_json: bool, case_id: str | None = None) -> int:
    if as_json:
        print(json.dumps({"accepted": False, "code": code, "reason": reason}
                         | ({"case_id": case_id} if case_id else {})))
    else:
        print(f"Refused ({code}): {reason}", file=sys.stderr)
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
        return EXIT_TEMPORAL
    return await run(args, client, settings)


def main(argv: list[str], *, settings: Settings | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(_main(args, settings or get_settings()))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}"
                             for e in err.errors())
        print(f"invalid input: {problems}", file=sys.stderr)
        return EXIT_INPUT
    except RPCError as err:
        print(f"Temporal refused: {err}", file=sys.stderr)
        return EXIT_TEMPORAL


if __name__ == "__main__":
    from cli.exit import leave

    leave(main(sys.argv[1:]))
