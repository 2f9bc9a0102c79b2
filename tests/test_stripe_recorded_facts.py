"""Gathering facts from recorded responses of today's Stripe API, for what localstripe
lacks: Radar risk, disputes, and the invoice line period of a subscription charge (found
through invoice payments, since charges no longer name their invoice). The charge
recordings carry `refunds` as Stripe returns it when asked to expand it (it does not
otherwise since API 2022-11-15)."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from activities.stripe_activities import counting_requests
from activities.stripe_models import CreateRefundInput, GatherFactsInput
from core.models import RefundReason, RefundRequest
from tests.stripe_replay_server import recorded

pytest_plugins = ["tests.stripe_fixtures"]

CHARGE = "ch_3QyAbC2eZvKYlo2C0sub0001"


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


async def test_subscription_charge_facts(stripe_replay, stripe_replay_acts):
    for method, path, recording in [
        ("GET", f"/v1/charges/{CHARGE}", "subscription_charge"),
        ("GET", "/v1/charges", "subscription_customer_charges"),
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
    [charge] = stripe_replay.seen("GET", f"/v1/charges/{CHARGE}")
    assert (charge.query["expand[0]"], charge.query["expand[1]"]) == (["customer"],
                                                                      ["refunds"])
    # one call each, the refunds inside the charge; no paging past has_more=false
    assert len(stripe_replay.requests) == facts.stripe_requests == 4
    assert not stripe_replay.seen("GET", "/v1/refunds")


SEPA_CHARGE = "py_3QzSepa2eZvKYlo2C0deb0001"


def _sepa_recordings(stripe_replay) -> None:
    for method, path, recording in [
        ("GET", f"/v1/charges/{SEPA_CHARGE}", "sepa_debit_charge"),
        ("GET", "/v1/charges", "sepa_debit_customer_charges"),
        ("GET", "/v1/invoice_payments", "sepa_debit_invoice_payments_none"),
    ]:
        stripe_replay.reply(method, path, recording, times=None)


def _sepa_request() -> RefundRequest:
    return RefundRequest(request_id="sepa_1", customer_email="lena@example.de",
                         charge_id=SEPA_CHARGE, reason=RefundReason.unused)


async def test_a_sepa_debit_payment_is_looked_up_by_its_py_charge_id(stripe_replay,
                                                                    stripe_replay_acts):
    """Non-card payments (SEPA Direct Debit, ACH) have `py_` charge ids; charges.retrieve
    takes them like `ch_` ones."""
    _sepa_recordings(stripe_replay)
    request = _sepa_request()
    facts = await ActivityEnvironment().run(
        stripe_replay_acts.stripe_gather_facts,
        GatherFactsInput(case_id=request.case_id, request=request))
    assert facts.found and facts.charge_id == SEPA_CHARGE
    assert (facts.amount, facts.currency, facts.customer_email) == (2900, "eur",
                                                                    "lena@example.de")
    assert facts.payment_intent_id == "pi_3QzSepa2eZvKYlo2C0deb0001"
    assert facts.duplicate_charge_ids == [] and facts.existing_refunds == []
    [lookup] = stripe_replay.seen("GET", f"/v1/charges/{SEPA_CHARGE}")
    assert (lookup.query["expand[0]"], lookup.query["expand[1]"]) == (["customer"],
                                                                      ["refunds"])


async def test_a_sepa_debit_payment_is_refunded_on_its_py_charge(stripe_replay,
                                                                stripe_replay_acts):
    _sepa_recordings(stripe_replay)
    stripe_replay.reply("POST", "/v1/refunds", "sepa_debit_refund_pending")
    result = await _refund_sepa(stripe_replay_acts)
    assert (result.refund_id, result.status, result.charge_id) == (
        "pyr_1QzSepa2eZvKYlo2C0ref0001", "pending", SEPA_CHARGE)
    assert not result.reused
    [lookup] = stripe_replay.seen("GET", f"/v1/charges/{SEPA_CHARGE}")
    assert lookup.query["expand[0]"] == ["refunds"]
    [create] = stripe_replay.seen("POST", "/v1/refunds")
    assert create.form["charge"] == [SEPA_CHARGE]
    assert create.headers["Idempotency-Key"] == "refund-sepa_1:refund"
    assert len(stripe_replay.requests) == 2  # the charge (its refunds inside), the refund


async def _refund_sepa(acts):
    request = _sepa_request()
    return await ActivityEnvironment().run(
        acts.stripe_create_refund,
        CreateRefundInput(case_id=request.case_id, charge_id=SEPA_CHARGE, amount=2900,
                          currency="eur", idempotency_key=f"{request.case_id}:refund"))


def _sepa_charge_refunded_by_this_case(*, embedded: bool) -> dict:
    """The SEPA charge after this case's (pending) refund: with the refund in its expanded
    `refunds`, or without the list (a charge retrieved without the expansion)."""
    charge = recorded("sepa_debit_charge")
    body = charge["body"]
    refund = recorded("sepa_debit_refund_pending")["body"]
    body["amount_refunded"] = refund["amount"]
    if embedded:
        body["refunds"]["data"] = [refund]
    else:
        del body["refunds"]
    return charge


async def test_a_refund_of_this_case_in_the_charges_expanded_refunds_is_reused(
        stripe_replay, stripe_replay_acts):
    """The exactly-once check reads the refunds Stripe embeds in the expanded charge: a
    retry after a lost response takes the refund it made, and pays nothing more."""
    stripe_replay.reply("GET", f"/v1/charges/{SEPA_CHARGE}",
                        _sepa_charge_refunded_by_this_case(embedded=True))
    with counting_requests() as made:
        result = await _refund_sepa(stripe_replay_acts)
    assert result.reused and result.refund_id == "pyr_1QzSepa2eZvKYlo2C0ref0001"
    assert not stripe_replay.seen("POST", "/v1/refunds")
    assert made[0] == len(stripe_replay.requests) == 1


async def test_a_charge_without_its_refunds_list_has_them_listed(stripe_replay,
                                                                  stripe_replay_acts):
    """A charge that comes without `refunds` (not expanded) is never taken for a charge
    without refunds: they are listed, and this case's refund is still found."""
    stripe_replay.reply("GET", f"/v1/charges/{SEPA_CHARGE}",
                        _sepa_charge_refunded_by_this_case(embedded=False))
    listed = recorded("sepa_debit_refunds_none")
    listed["body"]["data"] = [recorded("sepa_debit_refund_pending")["body"]]
    stripe_replay.reply("GET", "/v1/refunds", listed)
    result = await _refund_sepa(stripe_replay_acts)
    assert result.reused and result.refund_id == "pyr_1QzSepa2eZvKYlo2C0ref0001"
    [listing] = stripe_replay.seen("GET", "/v1/refunds")
    assert listing.query["charge"] == [SEPA_CHARGE]
    assert "starting_after" not in listing.query
    assert not stripe_replay.seen("POST", "/v1/refunds")
