"""A retried refund activity never pays twice. The stripe_replay server forwards to localstripe;
it drops a response (Stripe acted, the worker never heard) or fails a request before it
reaches Stripe, and the activity is run again with the same input, as Temporal would."""

from __future__ import annotations

import pytest
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.stripe_models import CreateRefundInput
from stack.stripe_seed import seed_charge
from tests.stripe_replay_server import API_KEY

pytest_plugins = ["tests.stripe_fixtures"]


def _refunds_in_localstripe(url: str, charge_id: str) -> list[stripe.Refund]:
    client = stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=0)
    return client.v1.refunds.list({"charge": charge_id}).data


def _input(charge_id: str, case_id: str = "refund-req_lost") -> CreateRefundInput:
    """One case id per test: Stripe (and our localstripe wrapper) refuses a key reused
    with other parameters, and the tests share one localstripe."""
    return CreateRefundInput(case_id=case_id, charge_id=charge_id, amount=4900,
                             currency="usd", idempotency_key=f"{case_id}:refund",
                             reason_tag="billing_error")


async def test_retry_after_a_lost_response_creates_no_second_refund(
    localstripe_url, stripe_replay, stripe_replay_acts
):
    seeded = seed_charge(localstripe_url, API_KEY, email="lost@example.com", amount=4900,
                         currency="usd")
    stripe_replay.drop_response("POST", "/v1/refunds")
    env = ActivityEnvironment()

    with pytest.raises(ApplicationError) as err:
        await env.run(stripe_replay_acts.stripe_create_refund, _input(seeded.charge_id))
    assert err.value.type == "StripeTransient" and not err.value.non_retryable
    assert err.value.details[0]["code"] == "connection"
    made = _refunds_in_localstripe(localstripe_url, seeded.charge_id)
    assert len(made) == 1  # Stripe did refund; only the answer was lost

    again = await env.run(stripe_replay_acts.stripe_create_refund, _input(seeded.charge_id))

    assert again.reused and again.refund_id == made[0].id and again.case_id == "refund-req_lost"
    assert len(_refunds_in_localstripe(localstripe_url, seeded.charge_id)) == 1
    posts = stripe_replay.seen("POST", "/v1/refunds")
    assert len(posts) == 1  # no SDK retry, and the second attempt found the refund
    assert posts[0].headers["Idempotency-Key"] == "refund-req_lost:refund"
    assert posts[0].form["metadata[case_id]"] == ["refund-req_lost"]


async def test_retry_after_a_failure_before_stripe_reuses_the_idempotency_key(
    localstripe_url, stripe_replay, stripe_replay_acts
):
    seeded = seed_charge(localstripe_url, API_KEY, email="retry@example.com", amount=4900,
                         currency="usd")
    stripe_replay.reply("POST", "/v1/refunds", "api_error_500")  # not forwarded: nothing refunded
    env = ActivityEnvironment()
    inp = _input(seeded.charge_id, "refund-req_retry")

    with pytest.raises(ApplicationError) as err:
        await env.run(stripe_replay_acts.stripe_create_refund, inp)
    assert err.value.type == "StripeTransient"
    assert _refunds_in_localstripe(localstripe_url, seeded.charge_id) == []

    result = await env.run(stripe_replay_acts.stripe_create_refund, inp)

    assert not result.reused and result.amount == 4900
    assert [r.id for r in _refunds_in_localstripe(localstripe_url, seeded.charge_id)] == [
        result.refund_id]
    keys = [p.headers.get("Idempotency-Key") for p in stripe_replay.seen("POST", "/v1/refunds")]
    assert keys == ["refund-req_retry:refund", "refund-req_retry:refund"]
