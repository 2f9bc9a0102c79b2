"""The parts of a billing incident that need no Temporal: amount rules, queries and
requests, the charges file, the classification of a charge, the CLI's input checks, the
intake's refusal of `incident`, the ops report template, and the Stripe activities the
incident calls (against localstripe, and recorded pages where localstripe cannot)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.email_render import RenderError, render
from activities.stripe_activities import map_stripe_error
from activities.stripe_models import (
    ChargeSummary,
    GatherFactsInput,
    ListChargesInput,
    ListInvoicePurchasesInput,
    LookupChargeInput,
    rate_limit_backoff,
)
from cli import incidents as incident_cli
from core.charge_files import ChargeFileError, format_of, parse_charge_file
from core.contract import AmountRule, ChargeQuery, IncidentRequest
from core.models import RefundReason, RefundRequest
from stack.stripe_seed import seed_charge
from tests.api_support import StandInClient, app_with, http, request_body, signed_intake
from tests.incident_doubles import EXPLANATION, incident_request
from tests.stripe_replay_server import API_KEY
from workflows.billing_incident.charges import case_request, classify, locale_of
from workflows.billing_incident.report import email_context

pytest_plugins = ["tests.stripe_fixtures"]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def charge(**kw: Any) -> ChargeSummary:
    fields: dict[str, Any] = {
        "ref": "ch_1", "found": True, "charge_id": "ch_1", "status": "succeeded",
        "amount": 4900, "currency": "usd", "created": NOW - timedelta(days=3),
        "customer_email": "Ana@Example.com"}
    fields.update(kw)
    return ChargeSummary(**fields)


# --- amounts, queries, requests -----------------------------------------------------------


@pytest.mark.parametrize(("rule", "summary", "due"), [
    (AmountRule(), charge(amount=4900, amount_refunded=900), 4000),
    (AmountRule(kind="fixed", fixed={"USD": 500}), charge(), 500),
    (AmountRule(kind="fixed", fixed={"usd": 9000}), charge(), 4900),  # never above the charge
    (AmountRule(kind="fixed", fixed={"eur": 500}), charge(), None),  # no amount for usd
    (AmountRule(kind="percent", percent=Decimal("12.5")), charge(amount=1001), 125),
    (AmountRule(kind="percent", percent=Decimal("10")), charge(amount=1005), 101),  # half up
    (AmountRule(kind="percent", percent=Decimal("10")),
     charge(amount=63333, currency="kwd"), 6330),  # Stripe refunds KWD in 10 fils
])
def test_amount_rules(rule: AmountRule, summary: ChargeSummary, due: int | None) -> None:
    assert rule.due(summary) == due


def test_amount_rules_refuse_what_does_not_fit() -> None:
    for bad in ({"kind": "fixed"}, {"kind": "percent"}, {"kind": "full", "percent": 5},
                {"kind": "percent", "percent": 0}, {"kind": "fixed", "fixed": {"usd": -1}}):
        with pytest.raises(ValidationError):
            AmountRule.model_validate(bad)


def test_a_query_needs_a_range_and_a_filter() -> None:
    ChargeQuery(created_from=NOW, created_to=NOW + timedelta(days=1), amount=4900)
    with pytest.raises(ValidationError, match="amount, a price or a product"):
        ChargeQuery(created_from=NOW, created_to=NOW + timedelta(days=1))
    with pytest.raises(ValidationError, match="after"):
        ChargeQuery(created_from=NOW, created_to=NOW, amount=1)
    naive = ChargeQuery(created_from=datetime(2026, 1, 1), created_to=datetime(2026, 1, 2),
                        product="prod_X")
    assert naive.created_from.tzinfo is UTC


@pytest.mark.parametrize(("change", "message"), [
    ({"charges": ["ch_1", "ch_1"]}, "listed twice"),
    ({"charges": ["ch_1", "re_1"]}, "not charge or payment-intent ids"),
    ({"charges": []}, "either as a list"),
    ({"explanation": {"ja": "..."}}, "English explanation"),
    ({"incident_id": "a" * 41}, "incident_id"),
    ({"query": {"created_from": "2026-11-01T00:00:00Z",
                "created_to": "2026-11-02T00:00:00Z", "amount": 4900}}, "either as a list"),
])
def test_incident_requests_are_checked_before_anything_starts(
        change: dict[str, Any], message: str) -> None:
    fields = incident_request(["ch_1"]).model_dump()
    fields.update(change)
    with pytest.raises(ValidationError, match=message):
        IncidentRequest.model_validate(fields)


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize(("summary", "skip"), [
    (charge(found=False), "not_found"),
    (charge(status="failed"), "not_paid"),
    (charge(disputed=True), "disputed"),
    (charge(amount_refunded=4900), "already_refunded"),
    (charge(customer_email=None), "no_email"),
    (charge(customer_email="not an address"), "no_email"),
    (charge(created=NOW - timedelta(days=200)), "older_than_policy_window"),
    (charge(charge_id="py_1", payment_intent_id=None), "unsupported_payment"),
    (charge(), None),
])
def test_classify(summary: ChargeSummary, skip: str | None) -> None:
    assert classify(summary, incident_request(["ch_1"]), window_days=120, now=NOW).skip == skip


def test_the_case_request_carries_the_incident_and_the_customers_locale() -> None:
    req = incident_request(["ch_1"], amount=AmountRule(kind="fixed", fixed={"usd": 500}))
    summary = charge(customer_locale="ja-JP")
    verdict = classify(summary, req, window_days=None, now=NOW)
    case = case_request(req, summary, verdict.amount)
    assert case.request_id == f"incident-{req.incident_id}-ch_1"
    assert (case.amount, case.locale, case.customer_email) == (500, "ja", "ana@example.com")
    assert case.reason == RefundReason.billing_error and case.incident == req.link()
    assert locale_of("ko") == "ko" and locale_of("fr-FR") == "en" and locale_of(None) == "en"


# --- the charges file ---------------------------------------------------------------------


def test_charge_files_in_csv_and_json_lines() -> None:
    assert parse_charge_file("charge_id,amount\nch_1,4900\nch_2,10\nch_1,4900\n", "csv") == (
        ["ch_1", "ch_2"], 1)
    assert parse_charge_file("ch_1\npi_2\n\n", "csv") == (["ch_1", "pi_2"], 0)
    text = '{"charge_id": "ch_1"}\n"pi_2"\n{"payment_intent": "pi_3", "note": 1}\n'
    assert parse_charge_file(text, "jsonl") == (["ch_1", "pi_2", "pi_3"], 0)
    assert format_of("export.CSV") == "csv" and format_of("x.jsonl") == "jsonl"


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("charge_id\nch_1\nnonsense\n", "csv", "line 3"),
    ("name\nana\n", "csv", "line 1"),
    ('{"charge_id": "ch_1"}\n{oops\n', "jsonl", "line 2: not JSON"),
    ('{"customer": "cus_1"}\n', "jsonl", "line 1: no"),
    ("\n\n", "csv", "no charge"),
])
def test_a_bad_charge_file_names_its_line(text: str, fmt: Any, message: str) -> None:
    with pytest.raises(ChargeFileError, match=message):
        parse_charge_file(text, fmt)


def test_cli_refuses_bad_input_before_reaching_temporal(tmp_path: Path, capsys: Any) -> None:
    """Exit 2 with the reason, and no connection attempted (TEMPORAL_ADDRESS is a closed
    port: a connection would exit 1)."""
    from core.config import load_settings
    from stack.net import free_port

    settings = load_settings(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    bad = tmp_path / "charges.csv"
    bad.write_text("charge_id\nch_1\nre_2\n")
    base = ["open", "--id", "i-1", "--lead", "carol", "--root-cause", "x",
            "--explanation", "en=Sorry"]
    assert incident_cli.main([*base, "--charges-file", str(bad)], settings=settings) == 2
    assert "line 3" in capsys.readouterr().err
    good = tmp_path / "ok.csv"
    good.write_text("ch_1\n")
    assert incident_cli.main([*base, "--charges-file", str(good), "--refund", "half"],
                             settings=settings) == 2
    assert "--refund" in capsys.readouterr().err
    assert incident_cli.main([*base], settings=settings) == 2
    assert incident_cli.amount_rule("fixed:usd=500,eur=450").fixed == {"usd": 500, "eur": 450}
    assert incident_cli.amount_rule("percent:12.5").percent == Decimal("12.5")


# --- only an incident opens an incident's case ---------------------------------------------


async def test_intake_and_agents_cannot_open_a_case_that_claims_an_incident() -> None:
    client = StandInClient()
    link = incident_request(["ch_1"]).link().model_dump()
    async with http(app_with(client)) as api:
        raw, headers = signed_intake(request_body(f"r-{uuid.uuid4().hex[:6]}", incident=link))
        intake = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
        by_hand = await api.post("/cases", json=request_body("r-2", incident=link),
                                 headers={"Authorization": "Bearer tok-alice"})
    assert intake.status_code == 422 and "billing incident" in intake.text
    assert by_hand.status_code == 422 and "billing incident" in by_hand.text
    assert client.starts == []


def test_a_plain_request_still_has_no_incident() -> None:
    assert RefundRequest.model_validate(request_body("r-3")).incident is None


# --- the ops report -----------------------------------------------------------------------


def test_the_incident_report_renders_for_ops_in_english_only() -> None:
    from core.contract import ChargeFailure, IncidentCounts, IncidentReport, Tally

    report = IncidentReport(
        incident_id="i-1", phase="done", opened_by="carol", approved_by="dave",
        cancelled_by=None, root_cause="a pricing job ran twice",
        explanation=EXPLANATION["en"], amount_rule="the full charge", started_at=NOW,
        finished_at=NOW, counts=IncidentCounts(charges=3, refunded=2, to_agent=1),
        refunded_totals={"usd": 9800}, failures=[ChargeFailure(
            ref="ch_3", case_id="refund-x", kind="to_agent", reason="Stripe refused")],
        failures_unlisted=0, skipped={"disputed": Tally(count=1, examples=["ch_4"])},
        customers_emailed=["a@example.com", "b@example.com"], open_cases_joined=[], runs=1)
    context = {**email_context(report), "case_id": "incident-i-1",
               "customer_email": "ops@example.com"}
    email = render("incident_report", "en", context)
    assert "2 refunded, 1 need attention" in email.subject
    assert "$98.00" in email.text and "ch_3 (refund-x): to_agent: Stripe refused" in email.text
    assert "b@example.com" in email.text and "disputed: 1 (ch_4)" in email.text
    with pytest.raises(RenderError, match="unsupported locale"):
        render("incident_report", "ja", context)


# --- Stripe: look-ups, lists, rate limits ---------------------------------------------------


async def test_look_ups_make_one_request_each(localstripe_url: str, stripe_replay: Any,
                                              stripe_replay_acts: Any) -> None:
    seeded = seed_charge(localstripe_url, API_KEY, email="look@example.com", amount=4900,
                         currency="usd")
    env = ActivityEnvironment()
    by_charge = await env.run(stripe_replay_acts.stripe_lookup_charge,
                              LookupChargeInput(ref=seeded.charge_id))
    by_intent = await env.run(stripe_replay_acts.stripe_lookup_charge,
                              LookupChargeInput(ref=seeded.payment_intent_id))
    missing = await env.run(stripe_replay_acts.stripe_lookup_charge,
                            LookupChargeInput(ref="ch_doesnotexist"))
    assert len(stripe_replay.requests) == 3
    for found in (by_charge, by_intent):
        assert found.found and found.charge_id == seeded.charge_id
        assert (found.amount, found.currency, found.status) == (4900, "usd", "succeeded")
        assert found.customer_email == "look@example.com"
    assert by_intent.ref == seeded.payment_intent_id
    assert not missing.found and "does not exist" in (missing.not_found_reason or "")


async def test_gather_facts_says_how_many_requests_it_made(
        localstripe_url: str, stripe_replay: Any, stripe_replay_acts: Any) -> None:
    seeded = seed_charge(localstripe_url, API_KEY, email="count@example.com", amount=4900,
                         currency="usd")
    request = RefundRequest(request_id="count-1", customer_email="count@example.com",
                            charge_id=seeded.charge_id, reason=RefundReason.billing_error)
    facts = await ActivityEnvironment().run(stripe_replay_acts.stripe_gather_facts,
                                            GatherFactsInput(case_id="refund-count-1",
                                                             request=request))
    # the charge (customer and refunds expanded), the customer's charges
    assert facts.found and facts.stripe_requests == len(stripe_replay.requests) == 2


async def test_the_query_pages_filter_and_read_both_api_shapes(
        stripe_replay: Any, stripe_replay_acts: Any) -> None:
    stripe_replay.reply("GET", "/v1/charges", "incident_charges_page")
    stripe_replay.reply("GET", "/v1/invoices", "incident_invoices_page")
    env = ActivityEnvironment()
    window = {"created_from": NOW - timedelta(days=7), "created_to": NOW}
    page = await env.run(stripe_replay_acts.stripe_list_charges,
                         ListChargesInput(**window, amount=4900, currency="usd"))
    invoices = await env.run(stripe_replay_acts.stripe_list_invoice_purchases,
                             ListInvoicePurchasesInput(**window, price="price_1QzProMonthly"))
    [listed] = stripe_replay.seen("GET", "/v1/charges")
    assert listed.query["created[gte]"] == [str(int(window["created_from"].timestamp()))]
    assert listed.query["created[lt]"] == [str(int(NOW.timestamp()))]
    assert [c.ref for c in page.charges] == ["ch_3QzInc2eZvKYlo2C0inc0001",
                                             "ch_3QzInc2eZvKYlo2C0inc0003"]
    assert page.next_after == "ch_3QzInc2eZvKYlo2C0inc0003"
    maria, guest = page.charges
    assert (maria.customer_email, maria.customer_locale) == ("maria@example.com", "ja-JP")
    assert guest.customer_email == "receipt@example.com" and guest.disputed
    assert invoices.refs == ["ch_3QzInc2eZvKYlo2C0old0001", "pi_3QzIncNew0002"]
    assert invoices.next_after is None


def test_a_429_on_the_stripe_queue_goes_back_to_the_workflow() -> None:
    """Elsewhere it stays the transient error Temporal retries."""
    exc = stripe.RateLimitError("Request rate limit exceeded.", http_status=429,
                                json_body={"error": {"code": "rate_limit",
                                                     "type": "invalid_request_error"}})
    off_queue = map_stripe_error(exc)
    assert off_queue.type == "StripeTransient" and not off_queue.non_retryable
    assert off_queue.next_retry_delay is not None

    env = ActivityEnvironment()
    env.info = env.info.__class__(**{**env.info.__dict__, "task_queue": "refund-cases-stripe"})
    on_queue: ApplicationError = env.run(lambda: map_stripe_error(exc))
    assert on_queue.type == "StripeRateLimited" and not on_queue.non_retryable
    assert rate_limit_backoff(1, 0.0) == timedelta(seconds=0.5)
    assert rate_limit_backoff(10, 0.99) <= timedelta(seconds=48)
    assert json.loads(json.dumps(on_queue.details[0]))["code"] == "rate_limit"
