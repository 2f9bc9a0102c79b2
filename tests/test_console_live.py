"""The console's actions on live cases in a real headless Chromium (Debian's `chromium`
through Playwright's executable path): claim from the queue, add a note, mark a
requirement satisfied on a case that waits for the customer, retry a failed refund, close
a case whose refund failed. A refund fails the way Stripe fails one: created `pending`,
then a signed `failed` webhook (tests.console_support.HeldRefunds; localstripe's refunds
always succeed). An action that no longer fits the case (a page left open while another
agent acted) is refused with the case's own reason on the page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from core.codec import ENCODINGS
from core.contract import QUEUE_MEMO
from tests.api_support import eventually, stripe_event
from tests.console_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleDesk,
    HeldRefunds,
    chromium_missing,
    serve_desk,
)

_missing = chromium_missing()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")

if _missing is None:
    from playwright.async_api import Browser, Page, async_playwright, expect

    from tests.test_console_browser import flash_of, shot, sign_in


@dataclass
class Live:
    desk: ConsoleDesk
    stripe: HeldRefunds
    claim: str  # $500: waits for an agent
    info: str  # technical issue without evidence: waits for the customer
    retry: str  # $50, refund failed
    close: str  # $50, refund failed


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(dev_env: WorkflowEnvironment, localstripe_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    async with HeldRefunds(localstripe_url) as stripe:
        async for desk in serve_desk(dev_env.client, stripe.url,
                                     tmp_path_factory.mktemp("console-live")):
            # seeding is a blocking call: straight to localstripe, not through the
            # stand-in that runs on this event loop
            desk.stripe_url = localstripe_url
            failing = [desk.seed(5_000), desk.seed(5_000)]
            stripe.held.update(c.charge_id for c in failing)
            opened = await asyncio.gather(
                desk.open_case(desk.seed(50_000), reason="change_of_mind"),
                desk.open_case(desk.seed(4_900), reason="technical_issue"),
                *(desk.open_case(c, reason="change_of_mind") for c in failing))
            live = Live(desk, stripe, *opened)
            await asyncio.gather(desk.reaches(live.claim, "awaiting_agent"),
                                 desk.reaches(live.info, "awaiting_info"),
                                 *(fail_refund(live, c) for c in (live.retry, live.close)))
            stripe.held.clear()  # a retry is made in localstripe, and succeeds
            yield live


async def fail_refund(live: Live, case_id: str) -> None:
    """The case's refund is created pending; Stripe then says it failed."""
    await eventually(lambda: _has_refund(live, case_id))
    resp = await live.desk.stripe(stripe_event("charge.refund.updated",
                                               live.stripe.failed(case_id)))
    assert resp.json() == {"status": "delivered", "cases": [case_id]}, resp.text
    await live.desk.reaches(case_id, "refund_failed")

    async def waits_for_an_agent() -> bool:
        return (await live.desk.state(case_id))["waiting_for"] is not None
    await eventually(waits_for_an_agent)


async def _has_refund(live: Live, case_id: str) -> bool:
    return case_id in live.stripe.made and \
        (await live.desk.state(case_id))["refund"] is not None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def stale_click(page: Page, action: str) -> None:
    """Submit the action's form of a page loaded before the case moved on."""
    await page.locator(f'form[data-action="{action}"] button[type=submit]').click()


async def test_claim_from_the_queue_and_the_assignee_appears(browser: Browser,
                                                             live: Live) -> None:
    page = await sign_in(browser, live.desk, "tok-alice")
    row = page.locator(f'tr[data-case="{live.claim}"]')
    await expect(row).to_contain_text("unassigned")
    state = await live.desk.state(live.claim)
    # the customer's address, from the queue card (RefundCustomer holds only a hash)
    await expect(row.locator("a").first).to_have_text(state["request"]["customer_email"])
    await row.locator("form button", has_text="Claim").click()
    await expect(flash_of(page)).to_be_visible()
    row = page.locator(f'tr[data-case="{live.claim}"]')
    await expect(row).to_contain_text("alice")
    await expect(row.locator("form")).to_have_count(0)
    assert (await live.desk.state(live.claim))["assignee"] == "alice"
    # filters: part of the address (cards), the whole address (its hash)
    email = state["request"]["customer_email"]
    for text in (email.split("@")[0][2:], email.upper()):
        await page.goto(f"/console/queue?status=open&customer={text}")
        await expect(page.locator("tr[data-case]")).to_have_count(1)
        await expect(page.locator(f'tr[data-case="{live.claim}"]')).to_be_visible()
    await page.goto("/console/queue")
    await page.screenshot(path=shot("queue-live"), full_page=True)
    await page.context.close()


async def test_the_card_in_the_memo_is_encrypted(live: Live) -> None:
    described = await live.desk.client.get_workflow_handle(live.claim).describe()
    stored = described.raw_description.workflow_execution_info.memo.fields[QUEUE_MEMO]
    assert stored.metadata["encoding"] in ENCODINGS
    assert b"@example.com" not in stored.data


async def test_a_note_appears_in_the_timeline(browser: Browser, live: Live) -> None:
    page = await sign_in(browser, live.desk, "tok-bob", f"/console/cases/{live.claim}")
    form = page.locator('form[data-action="note"]')
    await form.locator('textarea[name="text"]').fill("Called the customer: wrong plan.")
    await form.locator("button[type=submit]").click()
    await expect(flash_of(page)).to_be_visible()
    await expect(page.locator("#timeline tr.kind-note")).to_contain_text(
        "Called the customer: wrong plan.")
    await expect(page.locator("#timeline tr.kind-note")).to_contain_text("bob")
    await expect(page.locator("#notes")).to_contain_text("Called the customer: wrong plan.")
    await page.context.close()


async def test_a_requirement_marked_satisfied_lets_the_policy_decide_again(
        browser: Browser, live: Live) -> None:
    page = await sign_in(browser, live.desk, "tok-alice", f"/console/cases/{live.info}")
    stale = await sign_in(browser, live.desk, "tok-bob", f"/console/cases/{live.info}")
    form = page.locator('form[data-action="satisfy"]')
    await form.locator('select[name="requirement"]').select_option("support_evidence")
    await form.locator('input[name="note"]').fill("ticket 4411 confirmed by support")
    await form.locator("button[type=submit]").click()
    await expect(flash_of(page)).to_be_visible()
    state = await live.desk.reaches(live.info, "approved", "refunding", "refunded",
                                    "completed", "awaiting_agent")
    assert state["requirements_met"]["support_evidence"].startswith("ticket 4411")
    assert [e["kind"] for e in state["timeline"]].count("policy_decision") == 2
    # bob's page still offers it: the case refuses, and says why
    await stale.locator('form[data-action="satisfy"] input[name="note"]').fill("me too")
    await stale_click(stale, "satisfy")
    await expect(flash_of(stale)).to_contain_text("Mark a requirement satisfied refused: ")
    await expect(flash_of(stale)).to_contain_text(_any_of(
        "support_evidence is already met", f"the case is {state['status']}",
        "the case is "))
    await page.context.close()
    await stale.context.close()


async def test_a_failed_refund_is_retried_in_a_new_round(browser: Browser,
                                                         live: Live) -> None:
    page = await sign_in(browser, live.desk, "tok-alice", f"/console/cases/{live.retry}")
    stale = await sign_in(browser, live.desk, "tok-bob", f"/console/cases/{live.retry}")
    await expect(page.locator(".status-line, h1 + p").first).to_contain_text("refund failed")
    await expect(page.locator('form[data-action="approve"]')).to_have_count(0)
    await page.locator('form[data-action="retry"] input[name="note"]').fill("new card on file")
    await stale_click(page, "retry")
    await expect(flash_of(page)).to_be_visible()
    state = await live.desk.reaches(live.retry, "refunded", "completed")
    assert [r["status"] for r in state["earlier_refunds"]] == ["failed"]
    assert state["refund"]["status"] == "succeeded"
    assert state["refund"]["refund_id"] != live.stripe.made[live.retry]["id"]
    await stale_click(stale, "retry")
    await expect(flash_of(stale)).to_contain_text("Retry the refund refused: ")
    await expect(flash_of(stale)).to_contain_text("not refund_failed")
    await page.reload()
    await page.screenshot(path=shot("case-retried"), full_page=True)
    await page.context.close()
    await stale.context.close()


async def test_a_failed_refund_case_is_closed_with_a_reason(browser: Browser,
                                                            live: Live) -> None:
    page = await sign_in(browser, live.desk, "tok-alice", f"/console/cases/{live.close}")
    stale = await sign_in(browser, live.desk, "tok-bob", f"/console/cases/{live.close}")
    form = page.locator('form[data-action="close"]')
    await form.locator('input[name="reason"]').fill("Customer refunded by bank transfer")
    await form.locator("button[type=submit]").click()
    await expect(flash_of(page)).to_be_visible()
    state = await live.desk.reaches(live.close, "closed")
    assert "bank transfer" in (state["close_reason"] or "")
    await expect(page.locator("#actions")).to_contain_text("takes no more actions")
    await stale.locator('form[data-action="close"] input[name="reason"]').fill("duplicate")
    await stale_click(stale, "close")
    await expect(flash_of(stale)).to_contain_text("Close the case refused: ")
    await stale.context.close()
    await page.context.close()


def _any_of(*texts: str) -> Any:
    return re.compile("|".join(re.escape(t) for t in texts))
