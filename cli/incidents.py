"""Billing incidents from the command line (leads).

    python starter.py incident open --id 2026-11-pricing --lead carol \\
        --root-cause "Price migration applied the annual price twice" \\
        --explanation en="A pricing error charged your subscription twice." \\
        [--explanation ja=... --explanation ko=...] \\
        (--charges-file charges.csv | --created-from 2026-11-20T00:00Z \\
         --created-to 2026-11-21T00:00Z [--charge-amount 4900 --currency usd] \\
         [--price price_... | --product prod_...]) \\
        [--refund full | fixed:usd=500,eur=450 | percent:12.5]
    python starter.py incident status ID [--json]       # the dry run, then the progress
    python starter.py incident approve ID --lead dave [--note ...]   # a second lead
    python starter.py incident pause|resume|cancel ID --lead NAME [--note ...]
    python starter.py incident report ID [--json]       # counts, totals, failures, emails

ID is the incident id or its workflow id (incident-<id>). Exit codes as for cases: 0 done,
1 Temporal unreachable, 2 bad input, 3 refused (wrong state, or the incident has ended),
4 refused (invalid, e.g. the lead who opened it approving it), 5 no such incident.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from cli.cases import EXIT_INPUT, EXIT_NO_CASE, EXIT_REFUSED, EXIT_TEMPORAL
from core.charge_files import ChargeFileError, format_of, parse_charge_file
from core.client import connect
from core.config import Settings, get_settings
from core.contract import (
    TASK_QUEUE,
    AmountRule,
    ChargeQuery,
    IncidentProgress,
    IncidentReport,
    IncidentRequest,
    IncidentUpdate,
    LeadAction,
)
from core.incident_client import (
    ActionRefused,
    IncidentClient,
    IncidentIsClosed,
    IncidentNotFound,
)
from core.money import plain

ACTIONS = {"approve": IncidentUpdate.approve, "pause": IncidentUpdate.pause,
           "resume": IncidentUpdate.resume, "cancel": IncidentUpdate.cancel}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="starter.py incident",
                                description="Open and steer billing incidents (leads).")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("open", help="open an incident: its dry run starts at once")
    o.add_argument("--id", required=True, dest="incident_id")
    o.add_argument("--lead", required=True, help="you: the lead who opens it")
    o.add_argument("--root-cause", required=True, help="internal; never shown to customers")
    o.add_argument("--explanation", action="append", required=True, metavar="LOCALE=TEXT",
                   help="what customers are told (en required; ja, ko optional)")
    o.add_argument("--charges-file", type=Path, help="CSV or JSON lines of ch_/pi_ ids")
    o.add_argument("--created-from", help="query: ISO date-time (inclusive)")
    o.add_argument("--created-to", help="query: ISO date-time (exclusive)")
    o.add_argument("--charge-amount", type=int, help="query: minor units")
    o.add_argument("--currency", help="query: the charges' currency")
    o.add_argument("--price", help="query: invoices with a line of this price")
    o.add_argument("--product", help="query: invoices with a line of this product")
    o.add_argument("--refund", default="full", help="full | fixed:usd=500,... | percent:N")
    o.add_argument("--in-flight", type=int, default=300, help="cases refunding at once")
    o.add_argument("--batch", type=int, default=25, help=argparse.SUPPRESS)
    o.add_argument("--charges-per-run", type=int, default=1000, help=argparse.SUPPRESS)
    o.add_argument("--task-queue", default=TASK_QUEUE, help=argparse.SUPPRESS)
    o.add_argument("--json", action="store_true")
    for name in ("status", "report"):
        c = sub.add_parser(name, help=f"the incident's {name}")
        c.add_argument("incident")
        c.add_argument("--json", action="store_true")
    for name in ACTIONS:
        c = sub.add_parser(name, help=f"{name} the incident (a lead)")
        c.add_argument("incident")
        c.add_argument("--lead", required=True)
        c.add_argument("--note", default="")
        c.add_argument("--json", action="store_true")
    return p


class BadInput(ValueError):
    pass


def amount_rule(text: str) -> AmountRule:
    """full | fixed:usd=500,eur=450 | percent:12.5"""
    kind, _, rest = text.partition(":")
    if kind == "full" and not rest:
        return AmountRule()
    if kind == "fixed" and rest:
        fixed: dict[str, int] = {}
        for pair in rest.split(","):
            currency, _, amount = pair.partition("=")
            if not amount.strip().isdigit():
                raise BadInput(f"--refund fixed: {pair!r} is not currency=minor units")
            fixed[currency.strip()] = int(amount)
        return AmountRule(kind="fixed", fixed=fixed)
    if kind == "percent" and rest:
        try:
            return AmountRule(kind="percent", percent=Decimal(rest))
        except InvalidOperation:
            raise BadInput(f"--refund percent: {rest!r} is not a number") from None
    raise BadInput(f"--refund {text!r}: expected full, fixed:usd=500 or percent:12.5")


def explanations(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        locale, sep, text = pair.partition("=")
        if not sep:
            raise BadInput(f"--explanation {pair!r}: expected LOCALE=TEXT, e.g. en=...")
        out[locale.strip()] = text
    return out


def incident_request(args: argparse.Namespace) -> IncidentRequest:
    fields: dict[str, Any] = {
        "incident_id": args.incident_id, "opened_by": args.lead,
        "root_cause": args.root_cause, "explanation": explanations(args.explanation),
        "amount": amount_rule(args.refund), "in_flight": args.in_flight,
        "batch": args.batch, "charges_per_run": args.charges_per_run}
    if args.charges_file is not None:
        if args.created_from or args.created_to:
            raise BadInput("give either --charges-file or a query, not both")
        try:
            text = args.charges_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{args.charges_file}: {exc.strerror}") from None
        ids, repeats = parse_charge_file(text, format_of(args.charges_file.name))
        if repeats:
            print(f"{repeats} repeated ids in {args.charges_file} counted once",
                  file=sys.stderr)
        fields["charges"] = ids
    else:
        if not (args.created_from and args.created_to):
            raise BadInput("give --charges-file, or --created-from and --created-to")
        fields["query"] = ChargeQuery(
            created_from=_instant(args.created_from), created_to=_instant(args.created_to),
            amount=args.charge_amount, currency=args.currency, price=args.price,
            product=args.product)
    return IncidentRequest(**fields)


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO date-time") from None


async def run(args: argparse.Namespace, client: Client,
              request: IncidentRequest | None = None) -> int:
    """One command against Temporal (`request`: the incident `open` starts, checked
    before connecting); prints the outcome; returns the exit code."""
    incidents = IncidentClient(client, task_queue=getattr(args, "task_queue", TASK_QUEUE))
    if request is not None:
        started = await incidents.start(request)
        _out(args.json, {"incident": started.workflow_id,
                         "status": "started" if started.started else "duplicate"},
             f"Opened {started.workflow_id}: the dry run is running. Next: python starter.py "
             f"incident status {args.incident_id}" if started.started else
             f"{started.workflow_id} exists already; nothing started")
        return 0
    try:
        if args.command == "status":
            progress = await incidents.progress(args.incident)
            _out(args.json, progress.model_dump(mode="json"), format_progress(progress))
            return 0
        if args.command == "report":
            report = await incidents.report(args.incident)
            _out(args.json, report.model_dump(mode="json"), format_report(report))
            return 0
        result = await incidents.act(args.incident, ACTIONS[args.command],
                                     LeadAction(lead=args.lead, note=args.note))
    except ActionRefused as refused:
        return _refused(refused.code, refused.reason, args.json)
    except IncidentIsClosed:
        return _refused("wrong_state", "the incident has ended", args.json)
    except IncidentNotFound:
        print(f"no incident {args.incident!r}", file=sys.stderr)
        return EXIT_NO_CASE
    _out(args.json, result.model_dump(mode="json"), f"{result.message} ({result.phase})")
    return 0


def _out(as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def _refused(code: str, reason: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"accepted": False, "code": code, "reason": reason}))
    else:
        print(f"Refused ({code}): {reason}", file=sys.stderr)
    return EXIT_REFUSED.get(code, 4)


def _totals(totals: dict[str, int]) -> str:
    return ", ".join(plain(a, c) for c, a in sorted(totals.items())) or "nothing"


def format_progress(p: IncidentProgress) -> str:
    c = p.counts
    lines = [f"incident-{p.incident_id}  [{p.phase}{', paused' if p.paused else ''}]  "
             f"opened by {p.opened_by}, approved by {p.approved_by or '-'}"
             f"{', cancelled by ' + p.cancelled_by if p.cancelled_by else ''}",
             f"  refund per charge: {p.amount_rule}"]
    if p.dry_run is not None:
        d = p.dry_run
        lines.append(f"  dry run: {d.charges} charges, {d.to_refund} to refund "
                     f"({_totals(d.totals)})")
        for reason, tally in sorted(d.skipped.items()):
            lines.append(f"    skipped {reason}: {tally.count} ({', '.join(tally.examples)})")
        lines.append(f"    open cases to join: {d.open_case_on_charge.count}; customers with "
                     f"another open case: {d.customer_has_open_case.count}")
    if p.phase in ("draining", "done", "cancelled"):
        lines.append(f"  done {p.done} of {c.charges}: refunded {c.refunded}, with an agent "
                     f"{c.to_agent}, failed {c.failed}, skipped {c.skipped}, cancelled "
                     f"{c.cancelled}; joined {c.joined}; in flight {p.in_flight}")
        lines.append(f"  refunded {_totals(p.refunded_totals)}")
    if p.estimated_seconds_left is not None:
        lines.append(f"  about {round(p.estimated_seconds_left)} s left")
    for f in p.recent_failures:
        lines.append(f"  {f.kind}: {f.ref} ({f.case_id or 'no case'}): {f.reason}")
    lines.append("  timeline:")
    lines.extend(f"    {e.at.isoformat(timespec='seconds')}  {e.actor:<16} {e.kind:<18} "
                 f"{e.message}" for e in p.timeline)
    return "\n".join(lines)


def format_report(r: IncidentReport) -> str:
    c = r.counts
    lines = [f"incident-{r.incident_id}: {r.phase}; opened by {r.opened_by}, approved by "
             f"{r.approved_by or '-'}",
             f"  root cause: {r.root_cause}", f"  customers were told: {r.explanation}",
             f"  {c.charges} charges: refunded {c.refunded} ({_totals(r.refunded_totals)}), "
             f"with an agent {c.to_agent}, failed {c.failed}, skipped {c.skipped}, "
             f"cancelled {c.cancelled}, open cases joined {c.joined}"]
    lines.extend(f"  {f.kind}: {f.ref} ({f.case_id or 'no case'}): {f.reason}"
                 for f in r.failures)
    if r.failures_unlisted:
        lines.append(f"  ... and {r.failures_unlisted} more")
    lines.extend(f"  skipped {reason}: {t.count}" for reason, t in sorted(r.skipped.items()))
    lines.append(f"  customers emailed: {len(r.customers_emailed)}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace, settings: Settings,
                request: IncidentRequest | None) -> int:
    try:
        client = await connect(settings)
    except RuntimeError as err:
        print(f"cannot reach Temporal at {settings.TEMPORAL_ADDRESS} ({err}); is the stack "
              "running (python starter.py dev)?", file=sys.stderr)
        return EXIT_TEMPORAL
    return await run(args, client, request)


def main(argv: list[str], *, settings: Settings | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        request = incident_request(args) if args.command == "open" else None
        return asyncio.run(_main(args, settings or get_settings(), request))
    except (BadInput, ChargeFileError) as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return EXIT_INPUT
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
