"""The queue's order and paging against real visibility (the dev server's SQLite store):
cases started on a task queue no worker polls, with the search attributes and queue card
the workflow keeps, so that pages can be checked against the exact expected order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from console import queue
from console.queue import Cursor, QueueFilters, queue_page
from core import search_attributes as sa
from core.case_client import CaseClient
from core.codec import ENCODINGS
from core.contract import QUEUE_MEMO, QueueCard
from core.customer_ref import customer_ref
from tests.api_support import eventually

KEY = "queue-test-customer-key"


class Seeded:
    def __init__(self, client: Client, task_queue: str) -> None:
        self.client, self.task_queue = client, task_queue
        self.expected: list[tuple[datetime | None, str]] = []  # in the queue
        self.started = 0

    async def start(self, n: int, *, deadline: datetime | None, status: str = "awaiting_agent",
                    assignee: str | None = None, customer: str | None = None,
                    card: bool = True, card_address: bool = True,
                    card_status: str | None = None) -> str:
        """A case as the workflow keeps it: RefundCustomer the keyed hash of the address,
        the address on the card (`card_address` False: a card from before it was)."""
        case_id = f"refund-q{n:03d}-{uuid.uuid4().hex[:4]}"
        email = customer or f"c{n}@example.com"
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.STATUS, status), SearchAttributePair(sa.REASON, "unused"),
            SearchAttributePair(sa.CUSTOMER, customer_ref(email, KEY)),
            SearchAttributePair(sa.AMOUNT, 1000 + n), SearchAttributePair(sa.CURRENCY, "usd")]
        if deadline is not None:
            pairs.append(SearchAttributePair(sa.DEADLINE, deadline))
        if assignee is not None:
            pairs.append(SearchAttributePair(sa.ASSIGNEE, assignee))
        memo = {QUEUE_MEMO: QueueCard(status=card_status or status,
                                      waiting_for="an agent's decision",
                                      customer=email if card_address else None,
                                      deadline=deadline, approvals=n % 2,
                                      approvers_required=2).model_dump(mode="json")} \
            if card else None
        await self.client.start_workflow("RefundCase", "no worker runs this", id=case_id,
                                         task_queue=self.task_queue, memo=memo,
                                         search_attributes=TypedSearchAttributes(pairs))
        self.started += 1
        if status == "awaiting_agent":
            self.expected.append((deadline, case_id))
        return case_id

    async def visible(self) -> None:
        query = f"TaskQueue = '{self.task_queue}'"

        async def all_listed() -> bool:
            return (await self.client.count_workflows(query)).count == self.started
        await eventually(all_listed)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(dev_env: WorkflowEnvironment) -> Any:
    s = Seeded(dev_env.client, f"queue-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    rnd = random.Random(13)
    # microseconds the SQL stores do not compare (they compare milliseconds)
    tie = (now + timedelta(minutes=7)).replace(microsecond=454157)
    for n in range(70):
        if n % 9 == 0:
            deadline = None  # waits for nothing dated
        elif n % 7 == 0:
            deadline = tie  # several cases due at the very same moment
        else:
            deadline = now + timedelta(seconds=rnd.randint(-3 * 86400, 5 * 86400))
        await s.start(n, deadline=deadline, assignee="alice" if n % 5 == 0 else None)
    await s.start(90, deadline=now, status="refunding")  # not waiting for people
    await s.visible()
    yield s
    async for wf in dev_env.client.list_workflows(
            f"TaskQueue = '{s.task_queue}' AND ExecutionStatus = 'Running'"):
        await dev_env.client.get_workflow_handle(wf.id).terminate("test finished")


async def every_page(seeded: Seeded, filters: QueueFilters, size: int
                     ) -> tuple[list[queue.QueueRow], int]:
    rows: list[queue.QueueRow] = []
    cursor, pages = Cursor(), 0
    while True:
        page = await queue_page(seeded.client, filters, "alice", cursor, size,
                                task_queue=seeded.task_queue, customer_key=KEY)
        pages += 1
        rows += page.rows
        if page.next_cursor is None:
            return rows, pages
        cursor = Cursor.decode(page.next_cursor)
        assert pages < 100


def in_order(expected: list[tuple[datetime | None, str]]) -> list[str]:
    dated = sorted((d, i) for d, i in expected if d is not None)
    return [i for _, i in dated]


@pytest.mark.parametrize("window_max", [queue.WINDOW_MAX, 12])
async def test_pages_list_every_case_once_soonest_deadline_first(seeded: Seeded,
        monkeypatch: pytest.MonkeyPatch, window_max: int) -> None:
    monkeypatch.setattr(queue, "WINDOW_MAX", window_max)  # 12: windows found by bisection
    rows, pages = await every_page(seeded, QueueFilters(), size=8)
    ids = [r.case_id for r in rows]
    assert len(ids) == len(set(ids)) == len(seeded.expected)  # all, once, nothing else
    dated = in_order(seeded.expected)
    assert ids[:len(dated)] == dated
    assert {r.case_id for r in rows[len(dated):]} == {i for d, i in seeded.expected
                                                       if d is None}
    assert pages == -(-len(seeded.expected) // 8)
    first = rows[0]
    assert first.card_from == "memo" and first.waiting_for == "an agent's decision"
    assert first.amount is not None and first.currency == "usd"


async def test_filters_mine_unassigned_and_customer(seeded: Seeded,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mine, _ = await every_page(seeded, QueueFilters(mine=True), size=50)
    assert {r.case_id for r in mine} == {i for i in (e[1] for e in seeded.expected)
                                         if int(i[8:11]) % 5 == 0}
    assert all(r.assignee == "alice" for r in mine)
    unassigned, _ = await every_page(seeded, QueueFilters(unassigned=True), size=50)
    assert len(unassigned) + len(mine) == len(seeded.expected)
    assert all(r.assignee is None for r in unassigned)
    # a substring of the address, matched on the decoded cards, read at most SCAN_LIMIT
    # rows a request: the pages carry on from where reading stopped, losing nothing
    monkeypatch.setattr(queue, "SCAN_LIMIT", 10)
    found, pages = await every_page(seeded, QueueFilters(customer="C4"), size=50)
    assert sorted(r.customer or "" for r in found) == sorted(
        f"c{n}@example.com" for n in range(70) if str(n).startswith("4"))
    assert pages > 1  # the scan stopped and went on from where it was
    # a whole address: its keyed hash, matched by visibility in one page
    page = await queue_page(seeded.client, QueueFilters(customer=" C41@Example.com "),
                            "alice", Cursor(), 50, task_queue=seeded.task_queue,
                            customer_key=KEY)
    assert [r.customer for r in page.rows] == ["c41@example.com"]
    assert page.exact_customer and page.scanned == 1 and page.next_cursor is None
    assert page.rows[0].customer_ref == customer_ref("c41@example.com", KEY)


async def test_pages_split_cases_due_at_the_same_moment_without_losing_one(seeded: Seeded) -> None:
    tied = Seeded(seeded.client, f"queue-{uuid.uuid4().hex[:8]}")
    moment = datetime.now(UTC).replace(microsecond=999_999)
    for n in range(5):
        await tied.start(n, deadline=moment)
    await tied.visible()
    rows, pages = await every_page(tied, QueueFilters(), size=2)
    assert [r.case_id for r in rows] == sorted(i for _, i in tied.expected)
    assert pages == 3
    for _, case_id in tied.expected:
        await seeded.client.get_workflow_handle(case_id).terminate("test finished")


async def test_a_case_without_a_card_is_asked_its_state(seeded: Seeded) -> None:
    extra = Seeded(seeded.client, f"queue-{uuid.uuid4().hex[:8]}")
    await extra.start(1, deadline=None, card=False)
    await extra.visible()
    page = await queue_page(extra.client, QueueFilters(), "alice", Cursor(), 10,
                            task_queue=extra.task_queue,
                            cases=CaseClient(extra.client,
                                             rpc_timeout=timedelta(seconds=1)))
    [row] = page.rows
    # no worker answers: the row still shows what visibility knows
    assert row.card_from == "none" and row.status == "awaiting_agent"
    await seeded.client.get_workflow_handle(row.case_id).terminate("test finished")


async def test_a_case_out_of_the_queue_shows_its_status_and_the_starters_card(
        seeded: Seeded) -> None:
    """A lean case writes no card outside an agent's queue: the starter's card (status
    `received`) still gives the address, the attributes the status, with no query."""
    extra = Seeded(seeded.client, f"queue-{uuid.uuid4().hex[:8]}")
    await extra.start(1, deadline=None, status="refunding", card_status="received")
    await extra.start(2, deadline=None, status="awaiting_agent", card_status="received")
    await extra.visible()
    page = await queue_page(extra.client, QueueFilters(status="open"), "alice", Cursor(), 10,
                            task_queue=extra.task_queue,
                            cases=CaseClient(extra.client,
                                             rpc_timeout=timedelta(seconds=1)))
    rows = {r.status: r for r in page.rows}
    assert rows["refunding"].card_from == "memo"
    assert rows["refunding"].customer == "c1@example.com"
    assert rows["refunding"].waiting_for is None
    # in the queue, a card from another status is not trusted: the state is asked for
    # (no worker answers here, so the row has what visibility knows)
    assert rows["awaiting_agent"].card_from == "none"
    for row in page.rows:
        await seeded.client.get_workflow_handle(row.case_id).terminate("test finished")


async def test_a_card_from_before_the_address_shows_the_reference(seeded: Seeded) -> None:
    old = Seeded(seeded.client, f"queue-{uuid.uuid4().hex[:8]}")
    case_id = await old.start(1, deadline=None, card_address=False)
    await old.visible()
    page = await queue_page(old.client, QueueFilters(), "alice", Cursor(), 10,
                            task_queue=old.task_queue, customer_key=KEY)
    [row] = page.rows
    assert row.card_from == "memo" and row.customer is None
    assert row.customer_ref == customer_ref("c1@example.com", KEY)
    # found by its whole address (the hash) though its card has no address
    page = await queue_page(old.client, QueueFilters(customer="c1@example.com"), "alice",
                            Cursor(), 10, task_queue=old.task_queue, customer_key=KEY)
    assert [r.case_id for r in page.rows] == [case_id]
    await seeded.client.get_workflow_handle(case_id).terminate("test finished")


async def test_the_card_with_the_address_is_stored_encrypted(seeded: Seeded) -> None:
    """The memo is a codec payload: what Temporal stores is ciphertext, not the address."""
    case_id = seeded.expected[0][1]
    raw = await seeded.client.get_workflow_handle(case_id).describe()
    stored = raw.raw_description.workflow_execution_info.memo.fields[QUEUE_MEMO]
    assert stored.metadata["encoding"] in ENCODINGS
    assert b"@example.com" not in stored.data
    card = QueueCard.model_validate(await raw.memo_value(QUEUE_MEMO))
    assert card.customer is not None and card.customer.endswith("@example.com")


def test_a_damaged_page_link_is_refused_not_trusted() -> None:
    with pytest.raises(ValueError, match="damaged"):
        Cursor.decode("not-base64!!")
    with pytest.raises(ValueError, match="damaged"):
        Cursor.decode(Cursor(skip=1).encode()[:-3] + "AAA")
    cursor = Cursor(phase="due", after=datetime(2026, 1, 1, tzinfo=UTC), after_id="refund-x")
    assert Cursor.decode(cursor.encode()) == cursor
