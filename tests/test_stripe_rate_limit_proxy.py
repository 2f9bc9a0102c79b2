"""The rate-limited Stripe stand-in: requests within N per sliding second reach localstripe;
the ones above get Stripe's 429 `rate_limit`, which the stripe SDK reads as Stripe's own,
and never reach localstripe. A clock the test moves stands in for time."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import stripe

from core.config import ROOT
from stack.net import free_port, wait_for_port
from stack.stripe_seed import seed_charge
from tests.stripe_rate_limit_proxy import StripeRateLimitProxy
from tests.stripe_replay_server import API_KEY, recorded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def proxy(localstripe_url: str, clock: Clock) -> Iterator[StripeRateLimitProxy]:
    running = StripeRateLimitProxy(localstripe_url, rate=5, clock=clock).start()
    try:
        yield running
    finally:
        running.stop()


def _client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=0)


def _create_customers(url: str, count: int) -> tuple[int, int]:
    """(created, rate limited) out of `count` customer creates."""
    created = limited = 0
    for _ in range(count):
        try:
            _client(url).v1.customers.create({"email": "rate@example.com"})
            created += 1
        except stripe.RateLimitError:
            limited += 1
    return created, limited


def test_requests_within_the_rate_pass_and_the_next_gets_stripes_429(proxy):
    assert _create_customers(proxy.url, 5) == (5, 0)
    with pytest.raises(stripe.RateLimitError) as limited:
        _client(proxy.url).v1.customers.create({"email": "rate@example.com"})

    error = limited.value
    expected = recorded("rate_limit")
    assert error.http_status == 429
    assert error.error is not None and error.error.code == "rate_limit"
    assert error.error.type == "invalid_request_error"
    assert error.json_body == expected["body"]
    assert error.headers.get("Stripe-Should-Retry") == "true"
    assert (error.request_id or "").startswith("req_")
    assert proxy.stats().model_dump() == {
        "requests": 6, "forwarded": 5, "rate_limited": 1, "upstream_failed": 0}


def test_the_window_slides(proxy, clock):
    assert _create_customers(proxy.url, 3) == (3, 0)  # at t
    clock.now += 0.6
    assert _create_customers(proxy.url, 3) == (2, 1)  # t+0.6: 5 in the last second
    clock.now += 0.45
    assert _create_customers(proxy.url, 4) == (3, 1)  # t+1.05: the first 3 have left
    clock.now += 0.6
    assert _create_customers(proxy.url, 3) == (2, 1)  # t+1.65: the two of t+0.6 have left
    stats = proxy.stats()
    assert (stats.requests, stats.forwarded, stats.rate_limited) == (13, 10, 3)


def test_the_bucket_limiter_lets_a_burst_of_n_through_then_refills_at_n_a_second(
        localstripe_url, clock):
    proxy = StripeRateLimitProxy(localstripe_url, rate=5, limiter="bucket", clock=clock,
                                 log_requests=True).start()
    try:
        assert _create_customers(proxy.url, 6) == (5, 1)  # the full bucket, then a 429
        clock.now += 0.5  # two and a half tokens back
        assert _create_customers(proxy.url, 3) == (2, 1)
        clock.now += 10  # never more than the bucket holds
        assert _create_customers(proxy.url, 7) == (5, 2)
        assert [c.status for c in proxy.log()].count(429) == 4
        assert proxy.peak_per_second() == 7  # forwarded within whole second 1000
        proxy.reset()
        assert proxy.stats().requests == 0 and proxy.log() == []
    finally:
        proxy.stop()


def test_a_refused_request_never_reaches_stripe(proxy, localstripe_url):
    seeded = seed_charge(localstripe_url, API_KEY, email="limited@example.com",
                         amount=3000, currency="usd")
    assert _create_customers(proxy.url, 5) == (5, 0)
    with pytest.raises(stripe.RateLimitError):
        _client(proxy.url).v1.refunds.create({"charge": seeded.charge_id})
    refunds = _client(localstripe_url).v1.refunds.list({"charge": seeded.charge_id})
    assert refunds.data == []


def test_run_as_a_process_it_reports_its_counts(localstripe_url):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stripe_rate_limit_proxy", "--upstream", localstripe_url,
         "--rate", "1000", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        url = f"http://127.0.0.1:{port}"
        customer = _client(url).v1.customers.create({"email": f"{uuid.uuid4().hex}@x.com"})
        assert _client(localstripe_url).v1.customers.retrieve(customer.id).id == customer.id
        with urllib.request.urlopen(f"{url}/_proxy/stats", timeout=10) as resp:
            counts = json.loads(resp.read())
        assert counts == {"requests": 1, "forwarded": 1, "rate_limited": 0,
                          "upstream_failed": 0}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
