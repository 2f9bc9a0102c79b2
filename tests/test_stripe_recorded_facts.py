"""Gathering facts from recorded responses of today's Stripe API, for what localstripe
lacks: Radar risk, disputes, and the invoice line period of a subscription charge (found
through invoice payments, since charges no longer name their invoice)."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from activities.stripe_models import GatherFactsInput
from core.models import RefundReason, RefundRequest

pytest_plugins = ["tests.stripe_fixtures"]

CHARGE = "ch_3QyAbC2eZvKYlo2C0sub0001"


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


async def test_subscription_charge_facts(stripe_replay, stripe_replay_acts):
    for method, path, recording in [
        ("GET", f"/v1/charges/{CHARGE}", "subscription_charge"),
        ("GET", "/v1/charges", "subscription_customer_charges"),
        ("GET", "/v1/refunds", "subscription_refunds"),
        ("GET", "/v1/disputes", "subscription_disputes"),
        ("GET", "/v1/invoice_payments", "subscription_invoice_payments"),
    ]:
        stripe_replay.reply(method, path, recording, times=None)
    request = RefundRequest(request_id="req_sub_1", customer_email="ana@example.com",
                            charge_id=CHARGE, reason=RefundReason.unused)

    facts = await ActivityEnvironment().run(
        stripe_replay_acts.stripe_gather_facts,
        GatherFactsInput(case_id=request.case_id, request=request),
    )

    assert facts.found and facts.payment_intent_id == "pi_3QyAbC2eZvKYlo2C0sub0001"
    assert (facts.amount, facts.currency, facts.created) == (12000, "usd", _at(1733000000))
    assert (facts.customer_email, facts.customer_created) == ("ana@example.com",
                                                              _at(1700000000))
    assert (facts.radar_risk_level, facts.radar_risk_score) == ("elevated", 67)
    assert facts.disputed and facts.dispute_ids == ["dp_1QyAbC2eZvKYlo2C0dsp0001"]
    assert (facts.period_start, facts.period_end) == (_at(1733000000), _at(1764536000))
    # the failed one-hour-later charge is no duplicate; the refunded old one is a refund
    assert facts.duplicate_charge_ids == ["ch_3QyAbC2eZvKYlo2C0sub0002"]
    assert facts.customer_other_refunds == 1
    lookup = stripe_replay.seen("GET", "/v1/invoice_payments")[0]
    assert lookup.query["payment[payment_intent]"] == ["pi_3QyAbC2eZvKYlo2C0sub0001"]
    assert lookup.query["expand[0]"] == ["data.invoice"]
    assert len(stripe_replay.requests) == 5  # one call each; no paging past has_more=false
