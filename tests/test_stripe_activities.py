"""Stripe activities against localstripe through the real stripe SDK over HTTP, run in a
real activity context (ActivityEnvironment)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.stripe_activities import StripeActivities, counting_requests
from activities.stripe_models import (
    CreateRefundInput,
    GatherFactsInput,
    GetRefundInput,
    StripeFacts,
    stripe_dispatch_rate,
)
from activities.stripe_pacing import RequestPacer
from core.config import load_settings
from core.models import RefundReason, RefundRequest
from stack.stripe_seed import SeededCharge, seed_charge, seed_duplicate
from tests.fake_clock import FakeClock
from tests.stripe_replay_server import API_KEY

pytest_plugins = ["tests.stripe_fixtures"]


def _email() -> str:
    return f"c-{uuid.uuid4().hex[:8]}@example.com"


def _seed(url: str, amount: int = 4900, currency: str = "usd", **kw: object) -> SeededCharge:
    return seed_charge(url, API_KEY, email=kw.pop("email", None) or _email(), amount=amount,
                       currency=currency, **kw)  # type: ignore[arg-type]


def _client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=0)


async def _gather(acts: StripeActivities, seeded: SeededCharge | None = None,
                  **ids: str) -> StripeFacts:
    request = RefundRequest(
        request_id=f"req_{uuid.uuid4().hex[:10]}",
        customer_email=seeded.email if seeded else _email(),
        reason=RefundReason.technical_issue,
        **(ids or {"charge_id": seeded.charge_id}),  # type: ignore[union-attr]
    )
    return await ActivityEnvironment().run(
        acts.stripe_gather_facts, GatherFactsInput(case_id=request.case_id, request=request)
    )


def _refund_input(seeded: SeededCharge, case_id: str, amount: int | None = None,
                  **kw: object) -> CreateRefundInput:
    return CreateRefundInput(
        case_id=case_id, charge_id=seeded.charge_id, amount=amount or seeded.amount,
        currency=seeded.currency, idempotency_key=f"{case_id}:refund", **kw,  # type: ignore[arg-type]
    )


async def test_gather_facts_for_a_seeded_charge(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 4900, "usd", description="Pro plan, monthly")
    charge = _client(localstripe_url).v1.charges.retrieve(seeded.charge_id)
    customer = _client(localstripe_url).v1.customers.retrieve(seeded.customer_id)

    facts = await _gather(stripe_acts, seeded)

    assert facts.found and facts.not_found_reason is None
    assert facts.charge_id == seeded.charge_id
    assert facts.payment_intent_id == seeded.payment_intent_id
    assert (facts.amount, facts.amount_refunded, facts.currency) == (4900, 0, "usd")
    assert facts.customer_id == seeded.customer_id
    assert facts.customer_email == seeded.email
    assert facts.created == datetime.fromtimestamp(charge.created, tz=UTC)
    assert facts.customer_created == datetime.fromtimestamp(customer.created, tz=UTC)
    assert facts.description == "Pro plan, monthly"
    assert not facts.refunded and not facts.disputed and facts.dispute_ids == []
    assert facts.existing_refunds == [] and facts.duplicate_charge_ids == []
    assert facts.customer_other_refunds == 0
    # localstripe has no Radar and no invoice for a one-off payment
    assert facts.radar_risk_level is None and facts.period_start is None
    assert facts.stripe_requests == 2  # the charge (customer, refunds inside), its charges


async def test_gather_facts_by_payment_intent(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 1200, "eur")
    facts = await _gather(stripe_acts, seeded, payment_intent_id=seeded.payment_intent_id)
    assert facts.found and facts.charge_id == seeded.charge_id
    assert (facts.amount, facts.currency) == (1200, "eur")


@pytest.mark.parametrize("ids", [{"charge_id": "ch_doesnotexist1"},
                                 {"payment_intent_id": "pi_doesnotexist1"}])
async def test_a_missing_charge_is_a_fact_not_an_error(stripe_acts, ids):
    facts = await _gather(stripe_acts, None, **ids)
    assert not facts.found
    assert next(iter(ids.values())) in (facts.not_found_reason or "")
    assert facts.amount == 0 and facts.currency is None


async def test_jpy_amounts_are_whole_yen(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 5000, "JPY")
    facts = await _gather(stripe_acts, seeded)
    assert (facts.amount, facts.currency) == (5000, "jpy")

    refund = await ActivityEnvironment().run(
        stripe_acts.stripe_create_refund, _refund_input(seeded, "refund-jpy-1", 1500)
    )
    assert (refund.amount, refund.currency) == (1500, "jpy")


async def test_duplicate_charges_and_prior_refunds_of_the_customer(localstripe_url, stripe_acts):
    first = _seed(localstripe_url, 2900, "usd")
    duplicate = seed_duplicate(localstripe_url, API_KEY, first)
    _seed(localstripe_url, 2900, "eur", customer_id=first.customer_id)  # other currency
    earlier = _seed(localstripe_url, 900, "usd", customer_id=first.customer_id)
    _client(localstripe_url).v1.refunds.create({"charge": earlier.charge_id})

    facts = await _gather(stripe_acts, first)

    assert facts.duplicate_charge_ids == [duplicate.charge_id]
    assert facts.customer_other_refunds == 1
    assert (await _gather(stripe_acts, duplicate)).duplicate_charge_ids == [first.charge_id]


async def test_create_refund_twice_for_one_case_pays_once(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 4900, "usd")
    inp = _refund_input(seeded, "refund-req_once", 2000, reason_tag="technical_issue")
    env = ActivityEnvironment()

    first = await env.run(stripe_acts.stripe_create_refund, inp)
    second = await env.run(stripe_acts.stripe_create_refund, inp)

    assert not first.reused and second.reused
    assert second.refund_id == first.refund_id
    assert (first.status, first.amount, first.currency) == ("succeeded", 2000, "usd")
    assert first.case_id == "refund-req_once" and first.charge_id == seeded.charge_id
    refunds = _client(localstripe_url).v1.refunds.list({"charge": seeded.charge_id}).data
    assert [r.id for r in refunds] == [first.refund_id]
    assert refunds[0].metadata.to_dict() == {"case_id": "refund-req_once",
                                             "refund_key": "refund-req_once:refund",
                                             "reason_tag": "technical_issue"}

    facts = await _gather(stripe_acts, seeded)
    assert facts.amount_refunded == 2000
    assert [(r.refund_id, r.case_id) for r in facts.existing_refunds] == [
        (first.refund_id, "refund-req_once")]

    fetched = await env.run(stripe_acts.stripe_get_refund, GetRefundInput(
        refund_id=first.refund_id))
    assert fetched.model_dump() == {**first.model_dump(), "reused": False}


async def test_a_later_round_of_one_case_makes_its_own_refund(localstripe_url, stripe_acts):
    """A case reopened after a partial refund, approved again: the new round (its own
    key) refunds the rest instead of taking the first round's refund for its own; each
    round sent again still pays once."""
    seeded = _seed(localstripe_url, 4900, "usd")
    case = "refund-req_rounds"
    env = ActivityEnvironment()
    first = await env.run(stripe_acts.stripe_create_refund, _refund_input(seeded, case, 2000))
    later = _refund_input(seeded, case, 2900).model_copy(
        update={"idempotency_key": f"{case}:refund-2"})
    second = await env.run(stripe_acts.stripe_create_refund, later)
    again = await env.run(stripe_acts.stripe_create_refund, later)

    assert not second.reused and second.refund_id != first.refund_id
    assert (second.amount, second.status) == (2900, "succeeded")
    assert again.reused and again.refund_id == second.refund_id
    refunds = _client(localstripe_url).v1.refunds.list({"charge": seeded.charge_id}).data
    assert sorted(r.amount for r in refunds) == [2000, 2900]


async def test_a_refund_made_before_rounds_were_recorded_is_the_first_rounds(
        localstripe_url, stripe_acts):
    """Refunds made by earlier versions carry only the case id: they stand for the case's
    first round (a retry after a lost response), never for a later one."""
    seeded = _seed(localstripe_url, 4900, "usd")
    case = "refund-req_legacy"
    old = _client(localstripe_url).v1.refunds.create(
        {"charge": seeded.charge_id, "amount": 1000, "metadata": {"case_id": case}})
    env = ActivityEnvironment()
    first_round = await env.run(stripe_acts.stripe_create_refund,
                                _refund_input(seeded, case, 1000))
    assert first_round.reused and first_round.refund_id == old.id
    later = _refund_input(seeded, case, 500).model_copy(
        update={"idempotency_key": f"{case}:refund-2"})
    second_round = await env.run(stripe_acts.stripe_create_refund, later)
    assert not second_round.reused and second_round.amount == 500


async def test_create_refund_by_payment_intent(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 3000, "usd")
    inp = CreateRefundInput(case_id="refund-req_pi", payment_intent_id=seeded.payment_intent_id,
                            amount=3000, currency="usd", idempotency_key="refund-req_pi:refund")
    result = await ActivityEnvironment().run(stripe_acts.stripe_create_refund, inp)
    assert result.charge_id == seeded.charge_id and result.amount == 3000


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [(5000, "usd", "amount_too_large"), (100, "eur", "currency_mismatch")],
)
async def test_refund_the_charge_cannot_take_is_refused_before_stripe(
    localstripe_url, stripe_acts, amount, currency, code
):
    seeded = _seed(localstripe_url, 4900, "usd")
    inp = CreateRefundInput(case_id="refund-req_bad", charge_id=seeded.charge_id, amount=amount,
                            currency=currency, idempotency_key="refund-req_bad:refund")
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(stripe_acts.stripe_create_refund, inp)
    assert err.value.type == "StripePermanent" and err.value.non_retryable
    assert err.value.details[0]["code"] == code
    assert _client(localstripe_url).v1.refunds.list({"charge": seeded.charge_id}).data == []


async def test_another_case_on_a_fully_refunded_charge_is_permanent(localstripe_url, stripe_acts):
    seeded = _seed(localstripe_url, 4900, "usd")
    env = ActivityEnvironment()
    await env.run(stripe_acts.stripe_create_refund, _refund_input(seeded, "refund-req_a"))
    with pytest.raises(ApplicationError) as err:
        await env.run(stripe_acts.stripe_create_refund, _refund_input(seeded, "refund-req_b"))
    assert err.value.type == "StripePermanent"
    assert err.value.details[0]["code"] == "charge_already_refunded"
    assert (await _gather(stripe_acts, seeded)).refunded


async def test_get_refund_that_does_not_exist_is_permanent(stripe_acts):
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(stripe_acts.stripe_get_refund,
                                        GetRefundInput(refund_id="re_doesnotexist1"))
    assert err.value.type == "StripePermanent"
    assert err.value.details[0]["code"] == "resource_missing"


async def test_refund_for_a_missing_charge_is_permanent(stripe_acts):
    inp = CreateRefundInput(case_id="refund-req_x", charge_id="ch_doesnotexist2", amount=100,
                            currency="usd", idempotency_key="refund-req_x:refund")
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(stripe_acts.stripe_create_refund, inp)
    assert err.value.non_retryable and err.value.details[0]["code"] == "resource_missing"


async def test_create_refund_makes_two_requests(localstripe_url, stripe_acts):
    """The charge with its refunds inside (none of this round), then the refund."""
    seeded = _seed(localstripe_url, 4900, "usd")
    with counting_requests() as made:
        result = await ActivityEnvironment().run(
            stripe_acts.stripe_create_refund, _refund_input(seeded, "refund-req_two", 900))
    assert not result.reused and result.amount == 900
    assert made[0] == 2


def _refunded_eleven_times_and_more(url: str) -> tuple[SeededCharge, list[str], str]:
    """A charge with 12 refunds, each of its own case (`refund-req_many-<i>`), more than
    the 10 a charge embeds: its refunds, and the case of one left out of the embedded
    page."""
    seeded = _seed(url, 4900, "usd")
    client = _client(url)
    made = [client.v1.refunds.create({
        "charge": seeded.charge_id, "amount": 100,
        "metadata": {"case_id": f"refund-req_many-{i}"}}) for i in range(12)]
    embedded = client.v1.charges.retrieve(seeded.charge_id, {"expand": ["refunds"]}).refunds
    assert embedded.has_more and len(embedded.data) == 10
    shown = {r.id for r in embedded.data}
    [left_out, *_] = [r for r in made if r.id not in shown]
    return seeded, [r.id for r in made], left_out.metadata["case_id"]


async def test_gather_facts_finds_all_refunds_of_a_charge_past_the_embedded_page(
        localstripe_url, stripe_acts):
    seeded, refund_ids, _ = _refunded_eleven_times_and_more(localstripe_url)
    facts = await _gather(stripe_acts, seeded)
    assert sorted(r.refund_id for r in facts.existing_refunds) == sorted(refund_ids)
    assert facts.amount_refunded == 1200
    assert facts.stripe_requests == 3  # the charge, its customer's charges, more refunds


async def test_create_refund_finds_this_rounds_refund_past_the_embedded_page(
        localstripe_url, stripe_acts):
    """Exactly once even on a charge with many refunds: the round's refund is found on the
    next page, not made again."""
    seeded, refund_ids, case_id = _refunded_eleven_times_and_more(localstripe_url)
    with counting_requests() as made:
        result = await ActivityEnvironment().run(
            stripe_acts.stripe_create_refund, _refund_input(seeded, case_id, 100))
    assert result.reused and result.refund_id in refund_ids and result.case_id == case_id
    assert made[0] == 2  # the charge, the refunds after its embedded ones
    listed = _client(localstripe_url).v1.refunds.list({"charge": seeded.charge_id,
                                                       "limit": 100})
    assert len(listed.data) == 12


class _RecordingPacer(RequestPacer):
    """The pacer, noting the (fake) time each request was let out."""

    def __init__(self, rate: float, clock: FakeClock) -> None:
        super().__init__(rate, clock=clock, sleep=clock.sleep)
        self.fake_clock = clock
        self.let_out: list[float] = []

    async def acquire(self) -> None:
        await super().acquire()
        self.let_out.append(self.fake_clock.now)


async def test_concurrent_activities_share_the_one_bucket(localstripe_url):
    """Two look-ups at once through one StripeActivities: their four requests leave one
    per 1/rate, in fake time (the pacer's clock and sleep are injected)."""
    settings = load_settings(STRIPE_API_BASE=localstripe_url, STRIPE_API_KEY=API_KEY,
                             STRIPE_MAX_REQUESTS_PER_SECOND=2)
    rate = stripe_dispatch_rate(settings.STRIPE_MAX_REQUESTS_PER_SECOND)
    pacer = _RecordingPacer(rate, FakeClock())
    acts = StripeActivities(settings, pacer=pacer)
    first, second = _seed(localstripe_url), _seed(localstripe_url)

    facts = await asyncio.gather(_gather(acts, first), _gather(acts, second))

    assert [f.stripe_requests for f in facts] == [2, 2]
    assert pacer.let_out == pytest.approx([k / rate for k in range(4)])
