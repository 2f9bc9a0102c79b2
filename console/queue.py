"""The queue: the cases waiting for people, soonest deadline first, from Temporal visibility.

Temporal's SQL visibility (the dev server's SQLite, PostgreSQL, MySQL) has no ORDER BY, so
the order is built from what it does have, range filters and counts:

1. **Due cases** (`RefundDeadline` set) come first, in exact (deadline, case id) order. A
   page looks for a window [from, until) of deadlines holding more than a page and at most
   WINDOW_MAX cases (count queries: from the last end found for the same query, or from
   now, outwards, then bisection), lists that whole window (following visibility's page
   tokens), sorts it and takes the page. The cursor is the last (deadline, case id) shown,
   so the next page starts right after it.
2. **Cases without a deadline** follow, in visibility's own order (newest first), paged
   with visibility's page token (the cursor keeps the token and how far into that page).

Nothing is capped: every matching case is reachable by paging. A row shows the search
attributes and the `QueueCard` the workflow keeps in its memo (encrypted by the codec like
every payload); a case whose card is missing or stale (a case started before the console)
is asked with the `state` query.

The customer filter: `RefundCustomer` holds a keyed hash of the address, never the address
(core.customer_ref). A whole address (or a `cust_` reference) becomes an exact visibility
clause on that hash. Anything else is a substring of the address, which visibility cannot
see: it is matched against the address on each decoded card (a card written before it
carried the address: against the case's `state`), as the rows are read in queue order. One
page request reads at most SCAN_LIMIT rows; when it stops there, the page shows what it
found and its "next" link carries on from the row where reading stopped, so every match
is still reached by paging (the search is split over requests, not capped).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client, WorkflowExecution

from core import search_attributes as sa
from core.case_client import CaseClient
from core.contract import (
    QUEUE_MEMO,
    QUEUE_STATUSES,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    CaseState,
    CaseStatus,
    QueueCard,
    RefundReason,
    queue_card_of,
)
from core.customer_ref import customer_ref, is_customer_ref
from core.models import check_email

WAITING = (CaseStatus.awaiting_agent, CaseStatus.awaiting_info, CaseStatus.refund_failed)
PAGE_SIZE = 25
WINDOW_MAX = 100  # most cases one due-window may list
HINT_SECONDS = 60.0  # a window end found is tried first for this long
HINTS_KEPT = 256
FETCH_PAGE = 100  # visibility page size for cases without a deadline
SCAN_LIMIT = 2000  # most rows read for one page when filtering by customer
STATE_TIMEOUT = timedelta(seconds=3)
_TINY = timedelta(milliseconds=1)
_MARGIN = timedelta(milliseconds=1)
_FAR = timedelta(days=3650)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)

_HINTS: dict[str, tuple[float, datetime]] = {}  # query | lower bound -> (expiry, window end)

Rows = AsyncGenerator[tuple[WorkflowExecution, "Cursor"], None]


class QueueFilters(BaseModel):
    status: CaseStatus | Literal["waiting", "open"] = "waiting"
    reason: RefundReason | None = None
    risk: Literal["low", "medium", "high"] | None = None
    breached: bool | None = None
    mine: bool = False
    unassigned: bool = False
    customer: str = Field("", max_length=200)

    def customer_ref(self, key: str | None) -> str | None:
        """The RefundCustomer value an exact customer filter names: a `cust_` reference,
        or a whole address hashed with `key`; None: a substring (or no filter)."""
        text = self.customer.strip().lower()
        if is_customer_ref(text):
            return text
        if not key or "@" not in text:
            return None
        try:
            return customer_ref(check_email(text), key)
        except ValueError:
            return None  # not a whole address: a substring

    def query(self, agent: str, task_queue: str, customer_ref: str | None = None) -> str:
        """The visibility query (every value is an enum or a checked id) over the cases
        of the desk's task queue."""
        clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'", "ExecutionStatus = 'Running'",
                   f"TaskQueue = '{_plain(task_queue)}'"]
        if self.status == "waiting":
            clauses.append(f"{sa.STATUS.name} IN ("
                           + ", ".join(f"'{s.value}'" for s in WAITING) + ")")
        elif self.status != "open":
            clauses.append(f"{sa.STATUS.name} = '{self.status.value}'")
        if self.reason is not None:
            clauses.append(f"{sa.REASON.name} = '{self.reason.value}'")
        if self.risk is not None:
            clauses.append(f"{sa.RISK.name} = '{self.risk}'")
        if self.breached is not None:
            clauses.append(f"{sa.SLA_BREACHED.name} = {'true' if self.breached else 'false'}")
        if self.mine:
            clauses.append(f"{sa.ASSIGNEE.name} = '{_plain(agent)}'")
        elif self.unassigned:
            clauses.append(f"{sa.ASSIGNEE.name} IS NULL")
        if customer_ref is not None:
            clauses.append(f"{sa.CUSTOMER.name} = '{_plain(customer_ref)}'")
        return " AND ".join(clauses)


def _plain(value: str) -> str:
    """Agent ids are [A-Za-z0-9._@-] (core.config), task queues ours: nothing to escape,
    checked anyway."""
    if not value or any(c in value for c in "'\"\\") or not value.isprintable():
        raise ValueError(f"unexpected value in a queue query: {value!r}")
    return value


class Cursor(BaseModel):
    """Where the next page starts (see the module docstring)."""

    phase: Literal["due", "undated"] = "due"
    after: datetime | None = None
    after_id: str | None = None
    token: str | None = None  # visibility page token (base64), phase "undated"
    skip: int = Field(0, ge=0)

    def encode(self) -> str:
        raw = json.dumps(self.model_dump(mode="json", exclude_defaults=True)).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str | None) -> Cursor:
        """A cursor from a page link; a damaged one raises ValueError."""
        if not value:
            return cls()
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            return cls.model_validate(json.loads(raw))
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise ValueError("the page link is damaged") from exc


class QueueRow(BaseModel):
    case_id: str
    status: str | None
    reason: str | None
    customer: str | None  # the address, from the card or the case's state
    customer_ref: str | None  # RefundCustomer (a keyed hash), shown when no address is known
    amount: int | None
    currency: str | None
    risk: str | None
    sla_breached: bool
    assignee: str | None
    deadline: datetime | None
    waiting_for: str | None
    approvals: int
    approvers_required: int
    started: datetime
    card_from: Literal["memo", "state", "none"]


@dataclass
class QueuePage:
    rows: list[QueueRow]
    next_cursor: str | None
    scanned: int = 0
    scan_limited: bool = False  # the customer filter stopped reading at SCAN_LIMIT
    exact_customer: bool = False  # the customer filter was a whole address (hash match)


async def queue_page(client: Client, filters: QueueFilters, agent: str, cursor: Cursor,
                     size: int = PAGE_SIZE, *, task_queue: str = TASK_QUEUE,
                     cases: CaseClient | None = None,
                     customer_key: str | None = None) -> QueuePage:
    """One page of the queue after `cursor` (one row more is read to know whether there
    is a next page). `customer_key` (CUSTOMER_REF_KEY) turns a whole address into its
    RefundCustomer hash."""
    cases = cases or CaseClient(client, rpc_timeout=STATE_TIMEOUT)
    exact = filters.customer_ref(customer_key)
    substring = "" if exact else filters.customer.strip().lower()
    reader = _Reader(client, filters.query(agent, task_queue, exact), substring, size, cases)
    found: list[tuple[WorkflowExecution, Cursor]] = []
    async with contextlib.aclosing(reader.stream(cursor)) as stream:
        async for wf, after in stream:
            found.append((wf, after))
            if len(found) > size:
                break
    next_cursor: str | None = None
    if len(found) > size:
        found = found[:size]
        next_cursor = found[-1][1].encode()
    elif reader.limited:
        next_cursor = reader.position.encode()
    rows = await _rows([wf for wf, _ in found], cases, reader.addresses)
    due: list[QueueRow] = []
    undated: list[QueueRow] = []
    for row, (_, after) in zip(rows, found, strict=True):
        (due if after.phase == "due" else undated).append(row)
    undated.sort(key=lambda r: (r.deadline is None, r.deadline or _LAST))  # page-local
    return QueuePage(due + undated, next_cursor, reader.scanned, reader.limited,
                     exact is not None)


class _Reader:
    """Reads matching executions in queue order, each with the cursor just after it."""

    def __init__(self, client: Client, query: str, customer: str, size: int,
                 cases: CaseClient) -> None:
        self.client, self.query, self.customer, self.size = client, query, customer, size
        self.cases = cases
        self.scanned = 0
        self.limited = False  # stopped at SCAN_LIMIT rows read
        self.position = Cursor()
        self.addresses: dict[str, str] = {}  # case id -> address, as the filter found it

    async def _wanted(self, wf: WorkflowExecution) -> bool:
        self.scanned += 1
        if not self.customer:
            return True
        address = await _address(wf, self.cases)
        if address is None:
            return False
        self.addresses[wf.id] = address
        return self.customer in address

    async def stream(self, cursor: Cursor) -> Rows:
        phases = [self._due(cursor), self._undated(Cursor(phase="undated"))] \
            if cursor.phase == "due" else [self._undated(cursor)]
        for phase in phases:
            async with contextlib.aclosing(phase) as rows:
                async for wf, after in rows:
                    self.position = after
                    if await self._wanted(wf):
                        yield wf, after
                    if self.customer and self.scanned >= SCAN_LIMIT:
                        self.limited = True
                        return

    async def _count(self, extra: str) -> int:
        return (await self.client.count_workflows(f"{self.query} AND {extra}")).count

    async def _due(self, cursor: Cursor) -> Rows:
        """Windows of deadlines, each listed whole and sorted. Stores compare moments at
        their own precision (the SQL stores compare milliseconds while listings return
        microseconds), so each query reaches a little past both bounds and the exact
        bounds are applied here: a window is [after, until), after the (deadline, id) the
        cursor names."""
        after, after_id = cursor.after, cursor.after_id
        while True:
            lower = f"{sa.DEADLINE.name} IS NOT NULL" if after is None else \
                f"{sa.DEADLINE.name} >= '{_iso(_ms(after) - _MARGIN)}'"
            until = await self._window_end(lower, after)
            window = lower if until is None else \
                f"{lower} AND {sa.DEADLINE.name} < '{_iso(_ms(until) + 2 * _MARGIN)}'"
            found = [wf async for wf in self.client.list_workflows(
                f"{self.query} AND {window}", page_size=WINDOW_MAX)]
            found.sort(key=_due_key)
            for wf in found:
                deadline = _deadline(wf) or _LAST
                if after is not None and (deadline < after or (
                        deadline == after and after_id is not None and wf.id <= after_id)):
                    continue  # before the window, or shown on an earlier page
                if until is not None and deadline >= until:
                    continue  # the next window's
                yield wf, Cursor(phase="due", after=deadline, after_id=wf.id)
            if until is None:
                return
            after, after_id = until, None

    async def _window_end(self, lower: str, after: datetime | None) -> datetime | None:
        """An end for the window of deadlines from `after` that holds more than a page and
        at most WINDOW_MAX cases; None: all the rest fit in one window. The search starts
        from the end found last time for the same query (deadlines move slowly, so that
        is usually one count), else from `after` or now."""
        if await self._count(lower) <= WINDOW_MAX:
            return None
        key = f"{self.query} | {lower}"
        hint = _HINTS.get(key)
        anchor = hint[1] if hint and hint[0] > time.monotonic() else after or datetime.now(UTC)
        until = await self._search(lower, after, max(anchor, after) if after else anchor)
        if until is not None:
            if len(_HINTS) >= HINTS_KEPT:
                _HINTS.pop(next(iter(_HINTS)))
            _HINTS[key] = (time.monotonic() + HINT_SECONDS, until)
        return until

    async def _search(self, lower: str, after: datetime | None, anchor: datetime
                      ) -> datetime | None:
        """Counts outwards from `anchor` (×4 steps) for a bracket, then bisects it."""

        async def before(moment: datetime) -> int:
            return await self._count(f"{lower} AND {sa.DEADLINE.name} < '{_iso(moment)}'")

        def fits(n: int) -> bool:
            return self.size < n <= WINDOW_MAX

        low: datetime = after or _EPOCH  # nothing in the window is due before `low`
        high: datetime | None = None
        step = timedelta(minutes=1)
        n = await before(anchor)
        if fits(n):
            return anchor
        if n > WINDOW_MAX:  # too many due before the anchor: look earlier
            high = anchor
            while (probe := anchor - step) > low:
                n = await before(probe)
                if fits(n):
                    return probe
                if n <= self.size:
                    low = probe
                    break
                high, step = probe, step * 4
        else:  # too few: look later
            low = anchor
            while high is None:
                probe = anchor + step
                n = await before(probe)
                if fits(n):
                    return probe
                if n > WINDOW_MAX:
                    high = probe
                elif step > _FAR:
                    return None  # the rest lies in the far future: one window
                else:
                    low, step = probe, step * 4
        while high - low > _TINY:  # bisect the bracket
            mid = low + (high - low) / 2
            n = await before(mid)
            if fits(n):
                return mid
            if n > WINDOW_MAX:
                high = mid
            else:
                low = mid
        return high  # more than WINDOW_MAX cases share one deadline: listed whole

    async def _undated(self, cursor: Cursor
                       ) -> Rows:
        if cursor.token == "end":
            return
        token = base64.b64decode(cursor.token) if cursor.token else None
        skip = cursor.skip
        query = f"{self.query} AND {sa.DEADLINE.name} IS NULL"
        while True:
            pages = self.client.list_workflows(query, page_size=FETCH_PAGE,
                                               next_page_token=token)
            await pages.fetch_next_page()
            page = pages.current_page or []
            following = pages.next_page_token
            here = base64.b64encode(token).decode() if token else None
            for i, wf in enumerate(page):
                if i < skip:
                    continue
                if i + 1 < len(page):
                    after = Cursor(phase="undated", token=here, skip=i + 1)
                elif following:
                    after = Cursor(phase="undated", token=base64.b64encode(following).decode())
                else:
                    after = Cursor(phase="undated", token="end")
                yield wf, after
            if not following:
                return
            token, skip = following, 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _deadline(wf: WorkflowExecution) -> datetime | None:
    value = wf.typed_search_attributes.get(sa.DEADLINE)
    return value.astimezone(UTC) if value is not None else None


def _due_key(wf: WorkflowExecution) -> tuple[datetime, str]:
    return _deadline(wf) or _LAST, wf.id


async def _card(wf: WorkflowExecution) -> QueueCard | None:
    """The case's card from its memo (decoded by the client's codec), None if it has none
    or it cannot be read."""
    try:
        raw = await wf.memo_value(QUEUE_MEMO, None)
        return QueueCard.model_validate(raw) if raw is not None else None
    except (ValidationError, ValueError, TypeError):
        return None


async def _address(wf: WorkflowExecution, cases: CaseClient) -> str | None:
    """The customer's address (lower case): from the card, else (a card written before it
    carried the address) from the case's state; None if neither answers."""
    card = await _card(wf)
    if card is not None and card.customer:
        return card.customer.lower()
    try:
        return (await cases.state(wf.id)).request.customer_email.lower()
    except Exception:  # a case that cannot answer now is not a match
        return None


async def _rows(found: list[WorkflowExecution], cases: CaseClient,
                addresses: dict[str, str] | None = None) -> list[QueueRow]:
    """Rows from the search attributes and the memo's card; a missing or stale card is
    replaced by the case's own state (queried, a few at a time)."""
    cards: list[QueueCard | None] = []
    known = dict(addresses or {})
    for wf in found:
        card = await _card(wf)
        if card is not None and card.customer:
            known[wf.id] = card.customer
        status = wf.typed_search_attributes.get(sa.STATUS)
        if card is not None and str(card.status) != status:
            # The workflow moved on since the card was written. Out of an agent's queue a
            # case keeps the starter's card (it shows no wait): its status is in the
            # attributes. In the queue, the case's own state is asked for.
            moved = next((s for s in CaseStatus if s == status), None)
            card = (QueueCard(status=moved, customer=card.customer)
                    if moved is not None and moved not in QUEUE_STATUSES else None)
        cards.append(card)
    missing = [i for i, card in enumerate(cards) if card is None]
    gate = asyncio.Semaphore(8)

    async def state_of(case_id: str) -> CaseState | None:
        async with gate:
            try:
                return await cases.state(case_id)
            except Exception:  # a case that cannot answer now still gets its row
                return None

    states = await asyncio.gather(*(state_of(found[i].id) for i in missing))
    assignees: dict[int, str | None] = {}
    for i, state in zip(missing, states, strict=True):
        if state is not None:
            cards[i] = queue_card_of(state)
            assignees[i] = state.assignee
    rows = []
    for i, (wf, card) in enumerate(zip(found, cards, strict=True)):
        attrs = wf.typed_search_attributes
        rows.append(QueueRow(
            case_id=wf.id, status=str(card.status) if card else attrs.get(sa.STATUS),
            reason=attrs.get(sa.REASON),
            customer=(card.customer if card else None) or known.get(wf.id),
            customer_ref=attrs.get(sa.CUSTOMER),
            amount=attrs.get(sa.AMOUNT), currency=attrs.get(sa.CURRENCY),
            risk=attrs.get(sa.RISK), sla_breached=bool(attrs.get(sa.SLA_BREACHED)),
            assignee=attrs.get(sa.ASSIGNEE) or assignees.get(i),
            deadline=_deadline(wf) or (card.deadline if card else None),
            waiting_for=card.waiting_for if card else None,
            approvals=card.approvals if card else 0,
            approvers_required=card.approvers_required if card else 1,
            started=wf.start_time,
            card_from="none" if card is None else "state" if i in assignees else "memo",
        ))
    return rows
