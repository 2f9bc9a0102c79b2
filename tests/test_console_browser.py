"""The agent console in a real headless Chromium (Debian's `chromium`, driven by Playwright
through its executable path; Playwright's own browser download is never used), against the
API process serving the console, a real worker on the dev server, localstripe and the
outbox. Screenshots of the queue, a case page and insights are kept under
tests/artifacts/console/ (not committed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from console.handlers import METADATA_QUERY
from core.contract import Update
from policies.loader import DEFAULT_POLICY, load_policy
from tests.api_support import INBOUND_SECRET, eventually, inbound_form
from tests.console_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleDesk,
    chromium_missing,
    serve_desk,
)

_missing = chromium_missing()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")

if _missing is None:
    from playwright.async_api import Browser, Page, Route, async_playwright, expect


@dataclass
class Cases:
    part: str  # $500, one approver
    two: str  # $1,500, two approvers
    deny: str  # fraud reported: an agent decides
    viewer: str  # $500, only looked at


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def desk(dev_env: WorkflowEnvironment, localstripe_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ConsoleDesk]:
    async for served in serve_desk(dev_env.client, localstripe_url,
                                   tmp_path_factory.mktemp("console")):
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cases(desk: ConsoleDesk) -> Cases:
    opened = await asyncio.gather(
        desk.open_case(desk.seed(50_000), reason="change_of_mind"),
        desk.open_case(desk.seed(150_000), reason="change_of_mind"),
        desk.open_case(desk.seed(2_500), reason="fraud_suspected"),
        desk.open_case(desk.seed(50_000), reason="change_of_mind"))
    await asyncio.gather(*(desk.reaches(c, "awaiting_agent") for c in opened))
    return Cases(*opened)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def sign_in(browser: Browser, desk: ConsoleDesk, token: str,
                  path: str = "/console/queue") -> Page:
    """A fresh browser (its own cookies) signed in through the sign-in form."""
    context = await browser.new_context(base_url=desk.url, viewport={"width": 1360,
                                                                      "height": 900})
    page = await context.new_page()
    await page.goto(path)
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    return page


def shot(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / f"{name}.png")


def flash_of(page: Page) -> Any:
    return page.locator(".flash").first


async def test_sign_in_find_a_case_in_the_queue_and_open_it(browser: Browser,
                                                              desk: ConsoleDesk,
                                                              cases: Cases) -> None:
    page = await sign_in(browser, desk, "tok-alice")
    row = page.locator(f'tr[data-case="{cases.part}"]')
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("$500.00")
    await expect(row).to_contain_text("awaiting agent")
    await expect(row).to_contain_text("waits for an agent's decision")
    await page.screenshot(path=shot("queue"), full_page=True)
    await row.locator("a").first.click()
    await expect(page).to_have_url(re.compile(f"/console/cases/{cases.part}$"))
    await expect(page.locator("#policy")).to_contain_text("2026-11-23")
    # the clause the policy cites, in its words
    await expect(page.locator("#policy dl.clauses")).to_contain_text("refund")
    await expect(page.locator("#facts")).to_contain_text("$500.00")
    await expect(page.locator('form[data-action="approve"]')).to_be_visible()
    # the email as sent, inline in its own shadow root, as tall as its content
    email = page.locator("#emails div.email-html").last
    await expect(email).to_contain_text("Hello")
    await expect(email.locator("strong", has_text=cases.part)).to_be_visible()
    shown = await email.bounding_box()
    content = await email.evaluate("e => e.shadowRoot.firstElementChild.scrollHeight")
    assert shown is not None and abs(shown["height"] - content) <= 4  # no blank frame
    assert await email.evaluate(  # its inline styles applied (allowed by hash in the CSP)
        "e => getComputedStyle(e.shadowRoot.querySelector('div div')).maxWidth") == "600px"
    await page.screenshot(path=shot("case"), full_page=True)
    await page.context.close()


async def test_an_agent_approves_part_of_a_case(browser: Browser, desk: ConsoleDesk,
                                                cases: Cases) -> None:
    page = await sign_in(browser, desk, "tok-alice", f"/console/cases/{cases.part}")
    form = page.locator('form[data-action="approve"]')
    await form.locator('input[name="mode"][value="part"]').check()
    await form.locator('input[name="amount"]').fill("120.50")
    await form.locator('textarea[name="note"]').fill("half a month used")
    await form.locator("button[type=submit]").click()
    await expect(flash_of(page)).to_have_text("Approved 120.50 USD")
    state = await desk.state(cases.part)
    assert state["approved_amount"] == 12050
    assert [(a["agent"], a["amount"]) for a in state["approvals"]] == [("alice", 12050)]
    await page.context.close()


async def test_two_approvers_the_same_agent_twice_is_refused(browser: Browser,
                                                             desk: ConsoleDesk,
                                                             cases: Cases) -> None:
    alice = await sign_in(browser, desk, "tok-alice", f"/console/cases/{cases.two}")
    await alice.locator('form[data-action="approve"] button[type=submit]').click()
    await expect(flash_of(alice)).to_contain_text("Approval 1 of 2 for 1500.00 USD")
    await alice.locator('form[data-action="approve"] button[type=submit]').click()
    await expect(flash_of(alice)).to_contain_text(
        "Approve refused: alice already approved; a second approval must come from a "
        "different agent")

    bob = await sign_in(browser, desk, "tok-bob", f"/console/cases/{cases.two}")
    await expect(bob.locator("#approvals")).to_contain_text("alice approved $1,500.00")
    await expect(bob.locator("#approvals")).to_contain_text("1 of 2")
    await bob.locator('form[data-action="approve"] button[type=submit]').click()
    await expect(flash_of(bob)).to_have_text("Approved 1500.00 USD")
    state = await desk.state(cases.two)
    assert [a["agent"] for a in state["approvals"]] == ["alice", "bob"]
    assert state["status"] in ("approved", "refunding", "refunded")
    await alice.context.close()
    await bob.context.close()


async def test_a_denial_cites_a_clause_and_offers_an_alternative(browser: Browser,
                                                                 desk: ConsoleDesk,
                                                                 cases: Cases) -> None:
    page = await sign_in(browser, desk, "tok-bob", f"/console/cases/{cases.deny}")
    form = page.locator('form[data-action="deny"]')
    # The page offers only the clauses the facts fit; cite one that has alternatives of
    # its own and offer the first of them.
    offered = await form.locator('select[name="clause_id"] option').evaluate_all(
        "options => options.map(o => o.value)")
    policy = load_policy(DEFAULT_POLICY)
    clause = next(c for c in offered if c and policy.alternatives_for(c))
    alternative = policy.alternatives_for(clause)[0].id
    await form.locator('select[name="clause_id"]').select_option(clause)
    await form.locator('select[name="alternative"]').select_option(alternative)
    await form.locator('textarea[name="note"]').fill("We could not match this payment.")
    await form.locator("button[type=submit]").click()
    await expect(flash_of(page)).to_have_text(f"Denied under clause {clause}")
    state = await desk.reaches(cases.deny, "denied")
    assert state["denial"] == {"by": "agent:bob", "clause_id": clause,
                               "note": "We could not match this payment.",
                               "alternative": alternative}

    # the denial email, as the customer got it, quotes the clause
    async def denial_email_shown() -> bool:
        await page.reload()
        return await page.locator("#emails details.email", has_text="denial").count() > 0
    await eventually(denial_email_shown)
    email = page.locator("#emails details.email", has_text="denial")
    await email.locator("summary").click()
    await expect(email.locator("pre.email-text")).to_contain_text(
        policy.clause(clause).text_in("en"))
    await page.context.close()


async def test_the_customers_emails_appear_on_the_case_page(browser: Browser,
                                                            desk: ConsoleDesk,
                                                            cases: Cases) -> None:
    state = await desk.state(cases.viewer)
    form = inbound_form(cases.viewer, f"Customer <{state['request']['customer_email']}>",
                        "I bought the wrong plan, sorry.\nOrder 7731.")
    async with httpx.AsyncClient(base_url=desk.url) as http:
        resp = await http.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}",
                               data=form)
    assert resp.json()["status"] == "delivered"
    await desk.reaches(cases.viewer, "awaiting_agent")

    async def replied() -> bool:
        return bool((await desk.state(cases.viewer))["replies"])
    await eventually(replied)

    page = await sign_in(browser, desk, "tok-alice", f"/console/cases/{cases.viewer}")
    await expect(page.locator("#request .messages")).to_contain_text(
        "I bought the wrong plan, sorry.")
    ack = page.locator("#emails details.email", has_text="acknowledgment")
    await expect(ack).to_have_count(1)
    await ack.locator("summary").click()
    await expect(ack.locator("pre.email-text")).to_contain_text(cases.viewer)
    # the HTML part, inline, as the customer saw it
    await expect(ack.locator("div.email-html")).to_contain_text("Case " + cases.viewer)
    await page.context.close()


async def test_a_viewer_sees_the_case_but_has_no_action_buttons(browser: Browser,
                                                                desk: ConsoleDesk,
                                                                cases: Cases) -> None:
    page = await sign_in(browser, desk, "tok-vic", f"/console/cases/{cases.viewer}")
    await expect(page.locator("#policy")).to_be_visible()
    await expect(page.locator("#actions")).to_contain_text("signed in as a viewer")
    await expect(page.locator("form.action-form")).to_have_count(0)
    await expect(page.locator("#actions button")).to_have_count(0)
    await page.goto("/console/queue")
    await expect(page.locator(f'tr[data-case="{cases.viewer}"]')).to_be_visible()
    await expect(page.locator("#queue-live form")).to_have_count(0)
    # and the server refuses a viewer's action even with a valid form
    token = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
    resp = await page.request.post(f"/console/cases/{cases.viewer}/approve",
                                   form={"csrf_token": token or "", "mode": "full"},
                                   max_redirects=0)
    assert resp.status == 403
    assert (await desk.state(cases.viewer))["approvals"] == []
    await page.context.close()


async def test_a_forged_post_without_the_csrf_token_is_refused(browser: Browser,
                                                               desk: ConsoleDesk,
                                                               cases: Cases) -> None:
    page = await sign_in(browser, desk, "tok-alice", f"/console/cases/{cases.viewer}")
    # the browser holds a valid session cookie; the forged form lacks the token
    resp = await page.request.post(f"/console/cases/{cases.viewer}/approve",
                                   form={"mode": "full", "note": "forged"}, max_redirects=0)
    assert resp.status == 403
    assert "security token" in await resp.text()
    wrong = await page.request.post(f"/console/cases/{cases.viewer}/approve",
                                    form={"mode": "full", "csrf_token": "guessed"},
                                    max_redirects=0)
    assert wrong.status == 403
    state = await desk.state(cases.viewer)
    assert state["approvals"] == [] and state["status"] == "awaiting_agent"
    await page.context.close()


async def test_a_request_without_a_session_goes_to_sign_in_and_back(browser: Browser,
                                                                    desk: ConsoleDesk,
                                                                    cases: Cases) -> None:
    context = await browser.new_context(base_url=desk.url)
    page = await context.new_page()
    await page.goto(f"/console/cases/{cases.viewer}")
    await expect(page).to_have_url(re.compile(
        rf"/console/sign-in\?next=/console/cases/{cases.viewer}$"))
    await expect(page.locator("#policy")).to_have_count(0)
    resp = await page.request.post(f"/console/cases/{cases.viewer}/approve",
                                   form={"mode": "full"}, max_redirects=0)
    assert resp.status == 303 and "/console/sign-in" in resp.headers["location"]
    await page.fill("#token", "tok-bob")
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(f"/console/cases/{cases.viewer}$"))
    await page.click("text=Sign out")
    await expect(page).to_have_url(re.compile("/console/sign-in$"))
    await page.goto("/console/queue")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/queue$"))
    await context.close()


async def test_claim_is_offered_as_the_workflow_allows(browser: Browser, desk: ConsoleDesk,
                                                        cases: Cases) -> None:
    meta = await desk.client.get_workflow_handle(cases.viewer).query(
        METADATA_QUERY, result_type=WorkflowMetadata)
    handled = {d.name for d in meta.definition.update_definitions}
    page = await sign_in(browser, desk, "tok-alice", f"/console/cases/{cases.viewer}")
    if Update.assign.value in handled:
        await page.locator('form[data-action="assign"] button').click()
        await expect(flash_of(page)).to_be_visible()
        assert (await desk.state(cases.viewer))["assignee"] == "alice"
    else:
        assignee = page.locator("fieldset[disabled]", has_text="Assign")
        await expect(assignee).to_contain_text("does not handle assign_action")
        await expect(page.locator('form[data-action="assign"]')).to_have_count(0)
    await page.context.close()


async def test_insights_draw_their_charts(browser: Browser, desk: ConsoleDesk,
                                          cases: Cases) -> None:
    await desk.reaches(cases.part, "refunded", "completed")
    page = await sign_in(browser, desk, "tok-alice", "/console/insights")
    await expect(page.locator(".tile").first).to_contain_text("requests")
    await expect(page.locator("figure svg")).to_have_count(8)
    await expect(page.locator("figure", has_text="Requests by reason over time")
                 .locator("svg rect").first).to_be_visible()
    await expect(page.locator("figure", has_text="Outcomes and who decided")).to_contain_text(
        "approved by agent")
    await page.screenshot(path=shot("insights"), full_page=True)
    await page.context.close()


async def test_the_api_docs_work_offline(browser: Browser, desk: ConsoleDesk) -> None:
    context = await browser.new_context(base_url=desk.url)
    outside: list[str] = []

    async def only_local(route: Route) -> None:
        if route.request.url.startswith(desk.url):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()
    await context.route("**/*", only_local)
    page = await context.new_page()
    await page.goto("/docs")
    await expect(page.locator(".opblock-summary-path", has_text="/cases/{case_id}/approve")
                 ).to_be_visible()
    assert outside == []
    await context.close()


def test_screenshots_are_kept_out_of_git() -> None:
    ignored = (Path(__file__).parent.parent / ".gitignore").read_text().split()
    assert "tests/artifacts/" in ignored
