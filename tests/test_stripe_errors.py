"""Error mapping against recorded Stripe responses served over HTTP: the stripe SDK parses
the real status and body, and the activity turns them into StripeTransient (retry) or
StripePermanent (stop, route to an agent)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.stripe_activities import StripeActivities
from activities.stripe_models import CreateRefundInput, GatherFactsInput, GetRefundInput
from core.models import RefundReason, RefundRequest
from stack.stripe_seed import seed_charge
from tests.stripe_fixtures import settings_for
from tests.stripe_replay_server import API_KEY

pytest_plugins = ["tests.stripe_fixtures"]

TRANSIENT, PERMANENT = "StripeTransient", "StripePermanent"


@pytest.mark.parametrize(
    ("recording", "error_type", "code"),
    [
        ("charge_already_refunded", PERMANENT, "charge_already_refunded"),
        ("charge_disputed", PERMANENT, "charge_disputed"),
        ("amount_too_large", PERMANENT, "amount_too_large"),
        ("authentication_401", PERMANENT, "authentication"),
        ("rate_limit", TRANSIENT, "rate_limit"),
        ("lock_timeout", TRANSIENT, "lock_timeout"),
        ("api_error_500", TRANSIENT, "api_error"),
    ],
)
async def test_create_refund_maps_recorded_stripe_errors(
    localstripe_url, stripe_replay, stripe_replay_acts, recording, error_type, code
):
    seeded = seed_charge(localstripe_url, API_KEY, email="map@example.com", amount=4900,
                         currency="usd")
    stripe_replay.reply("POST", "/v1/refunds", recording)
    inp = CreateRefundInput(case_id="refund-req_map", charge_id=seeded.charge_id, amount=4900,
                            currency="usd", idempotency_key="refund-req_map:refund")

    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(stripe_replay_acts.stripe_create_refund, inp)

    assert err.value.type == error_type
    assert err.value.non_retryable is (error_type == PERMANENT)
    details = err.value.details[0]
    assert details["code"] == code
    assert details["message"]  # Stripe's own words, for the agent
    # one POST: the SDK's own retries are off (Temporal retries)
    assert len(stripe_replay.seen("POST", "/v1/refunds")) == 1


@pytest.mark.parametrize(
    ("recording", "error_type", "code"),
    [("refund_not_found_404", PERMANENT, "resource_missing"),
     ("rate_limit", TRANSIENT, "rate_limit"),
     ("api_error_500", TRANSIENT, "api_error")],
)
async def test_get_refund_maps_recorded_stripe_errors(stripe_replay, stripe_replay_acts, recording,
                                                      error_type, code):
    refund_id = "re_3QxRfT2eZvKYlo2C0missing"
    stripe_replay.reply("GET", f"/v1/refunds/{refund_id}", recording)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(stripe_replay_acts.stripe_get_refund,
                                        GetRefundInput(refund_id=refund_id))
    assert (err.value.type, err.value.details[0]["code"]) == (error_type, code)
    assert len(stripe_replay.seen("GET", f"/v1/refunds/{refund_id}")) == 1


async def test_get_refund_reads_the_acquirer_reference(stripe_replay, stripe_replay_acts):
    refund_id = "re_3QxRfT2eZvKYlo2C1b2c3d4e"
    stripe_replay.reply("GET", f"/v1/refunds/{refund_id}", "refund_succeeded_with_arn")
    result = await ActivityEnvironment().run(stripe_replay_acts.stripe_get_refund,
                                             GetRefundInput(refund_id=refund_id))
    assert result.status == "succeeded"
    assert result.acquirer_reference == "24692164340000012345678"
    assert result.case_id == "refund-req_1042"
    assert (result.amount, result.currency, result.charge_id) == (
        4900, "usd", "ch_3QxRfT2eZvKYlo2C1a0n7b8c")


@pytest.mark.parametrize(
    ("recording", "error_type", "code"),
    [("api_error_500", TRANSIENT, "api_error"), ("authentication_401", PERMANENT,
                                                 "authentication")],
)
async def test_gather_facts_maps_errors_other_than_not_found(
    stripe_replay, stripe_replay_acts, recording, error_type, code
):
    stripe_replay.reply("GET", "/v1/charges/ch_3QxRfT2eZvKYlo2C1a0n7b8c", recording)
    request = RefundRequest(request_id=f"req_{uuid.uuid4().hex[:8]}",
                            customer_email="ana@example.com",
                            charge_id="ch_3QxRfT2eZvKYlo2C1a0n7b8c",
                            reason=RefundReason.unused)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            stripe_replay_acts.stripe_gather_facts,
            GatherFactsInput(case_id=request.case_id, request=request),
        )
    assert (err.value.type, err.value.details[0]["code"]) == (error_type, code)


async def test_an_answer_cut_off_is_a_transient_error() -> None:
    """Stripe's connection drops in the middle of the body: a transient error (retried),
    typed like any other failure to reach Stripe, not an untyped one."""
    async def half_an_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                             ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"id\": \"re_")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_an_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    acts = StripeActivities(settings_for(f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(ApplicationError) as err:
            await ActivityEnvironment().run(acts.stripe_get_refund,
                                            GetRefundInput(refund_id="re_cut_off"))
    finally:
        await acts.close()
        server.close()
    assert err.value.type == TRANSIENT and not err.value.non_retryable
    assert "did not arrive whole" in str(err.value)
