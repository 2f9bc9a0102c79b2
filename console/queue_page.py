"""The queue page: filters, the rows of one page, a link to the next, claim buttons; the
page script reloads the rows every REFRESH_SECONDS (`?fragment=rows`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import get_client
from api.temporal import temporal_call
from console import web
from console.auth import User
from console.handlers import KnownHandlers
from console.queue import STATE_TIMEOUT, WAITING, Cursor, QueueFilters, queue_page
from console.session import flash
from core.case_client import CaseClient
from core.contract import CaseStatus, RefundReason, Update

router = APIRouter(prefix="/console")
REFRESH_SECONDS = 20


def _flag(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


@router.get("/queue", include_in_schema=False)
async def queue(request: Request, user: User,
                status: str = "waiting", reason: str = "", risk: str = "",
                breached: str = "", mine: str = "", unassigned: str = "",
                customer: Annotated[str, Query(max_length=200)] = "",
                cursor: Annotated[str, Query(max_length=4000)] = "",
                fragment: str = "") -> Response:
    try:
        filters = QueueFilters.model_validate({
            "status": status or "waiting", "reason": reason or None, "risk": risk or None,
            "breached": _flag(breached), "mine": mine == "1", "unassigned": unassigned == "1",
            "customer": customer})
    except ValidationError:
        flash(request, "error", "Some filters were not valid; showing the whole queue.")
        filters = QueueFilters()
    try:
        position = Cursor.decode(cursor)
    except ValueError as exc:
        flash(request, "error", f"{exc}; showing the first page.")
        position = Cursor()
    client = await get_client(request)
    cases = CaseClient(client, task_queue=request.app.state.task_queue,
                       rpc_timeout=STATE_TIMEOUT)
    try:
        async with temporal_call("list the queue"):
            page = await queue_page(
                client, filters, user.agent, position,
                task_queue=request.app.state.task_queue, cases=cases,
                customer_key=request.app.state.settings.CUSTOMER_REF_KEY.get_secret_value())
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT or not cursor:
            raise
        flash(request, "error", "That page link has expired; showing the first page.")
        return web.redirect(request, _url(filters, None))
    known: KnownHandlers = request.app.state.console_handlers
    if page.rows:
        known.refresh_soon(cases, page.rows[0].case_id)
    context = {
        "filters": filters, "page": page, "statuses": [s.value for s in CaseStatus],
        "waiting": [s.value for s in WAITING], "reasons": [r.value for r in RefundReason],
        "next_url": _url(filters, page.next_cursor) if page.next_cursor else None,
        "first_url": _url(filters, None) if cursor else None,
        "here": _url(filters, cursor or None),
        "refresh_url": _url(filters, cursor or None, fragment="rows"),
        "can_claim": user.can_act and known.has(Update.assign.value),
        "claim_known": known.names is not None, "refresh_seconds": REFRESH_SECONDS,
        "now_text": datetime.now(UTC).strftime("%H:%M:%S UTC"),
    }
    template = "_queue_rows.html" if fragment == "rows" else "queue.html"
    return web.page(request, template, context)


def _url(filters: QueueFilters, cursor: str | None, **extra: str) -> str:
    values = {"status": str(filters.status),
              "reason": filters.reason.value if filters.reason else "",
              "risk": filters.risk or "",
              "breached": {True: "yes", False: "no"}.get(filters.breached, "")
              if filters.breached is not None else "",
              "mine": "1" if filters.mine else "", "unassigned": "1" if filters.unassigned
              else "", "customer": filters.customer, "cursor": cursor or "", **extra}
    return "/console/queue?" + urlencode({k: v for k, v in values.items() if v})
