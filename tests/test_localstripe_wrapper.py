"""Our localstripe wrapper behaves like Stripe where the project depends on it: a repeated
idempotency key replays the first answer (one refund, whatever the timing), and its state
survives a normal stop and start without being rewritten on every request. Everything
goes through the stripe SDK (or raw HTTP) to the wrapper running as its own process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import stripe

from core import binaries
from core.config import ROOT
from stack.net import free_port, wait_for_port
from stack.stripe_idempotency import RETENTION_SECONDS, IdempotencyRecords, SavedResponse
from stack.stripe_seed import SeededCharge, seed_charge
from tests.stripe_replay_server import API_KEY


def _client(url: str, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url},
                               max_network_retries=retries)


def _seed(url: str, amount: int = 5000) -> SeededCharge:
    return seed_charge(url, API_KEY, email=f"c-{uuid.uuid4().hex[:8]}@example.com",
                       amount=amount, currency="usd")


def _refunds(url: str, charge_id: str) -> list[str]:
    return [r.id for r in _client(url).v1.refunds.list({"charge": charge_id}).data]


def _key() -> str:
    return f"case-{uuid.uuid4().hex[:12]}/refund"


# --- idempotency ---------------------------------------------------------------------


def test_a_repeated_key_replays_the_first_refund(localstripe_url):
    seeded = _seed(localstripe_url)
    key = _key()
    client = _client(localstripe_url)
    params = {"charge": seeded.charge_id, "amount": 1200, "metadata": {"case_id": "c-1"}}
    first = client.v1.refunds.create(params, {"idempotency_key": key})
    again = client.v1.refunds.create(params, {"idempotency_key": key})

    assert again.id == first.id
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert _refunds(localstripe_url, seeded.charge_id) == [first.id]
    charge = client.v1.charges.retrieve(seeded.charge_id)
    assert charge.amount_refunded == 1200


def test_a_racing_pair_with_one_key_makes_one_refund(localstripe_url):
    """Two workers send the same create at the same moment: whichever comes second is
    told the key is in use (409, which the SDK retries) or gets the replay."""
    for _ in range(5):
        seeded = _seed(localstripe_url)
        key = _key()
        start = threading.Barrier(2)
        ids: list[str] = []

        def create(key: str = key, charge_id: str = seeded.charge_id,
                   start: threading.Barrier = start, ids: list[str] = ids) -> None:
            client = _client(localstripe_url, retries=3)
            start.wait()
            refund = client.v1.refunds.create({"charge": charge_id, "amount": 700},
                                              {"idempotency_key": key})
            ids.append(refund.id)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(ids) == 2 and ids[0] == ids[1]
        assert _refunds(localstripe_url, seeded.charge_id) == [ids[0]]


def _raw_post_head(port: int, key: str, body: bytes) -> socket.socket:
    """Send a refund create's headers and only part of its body: the request is now
    executing (it holds the key) until the rest arrives."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST /v1/refunds HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {API_KEY}\r\nIdempotency-Key: {key}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sock.sendall(head + body[:5])
    return sock


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_a_key_in_use_is_answered_409_then_replayed(localstripe_url):
    seeded = _seed(localstripe_url)
    key = _key()
    body = f"charge={seeded.charge_id}&amount=300".encode()
    port = int(localstripe_url.rsplit(":", 1)[1])
    slow = _raw_post_head(port, key, body)
    try:
        with pytest.raises(stripe.StripeError) as busy:
            _client(localstripe_url).v1.refunds.create(
                {"charge": seeded.charge_id, "amount": 300}, {"idempotency_key": key})
        assert busy.value.http_status == 409
        assert busy.value.error is not None
        assert busy.value.error.code == "idempotency_key_in_use"
        slow.sendall(body[5:])
        first = _read_response(slow)
    finally:
        slow.close()
    assert first.startswith(b"HTTP/1.1 200")
    again = _client(localstripe_url).v1.refunds.create(
        {"charge": seeded.charge_id, "amount": 300}, {"idempotency_key": key})
    assert again.id.encode() in first
    assert _refunds(localstripe_url, seeded.charge_id) == [again.id]


def test_a_key_reused_for_other_parameters_or_endpoint_is_refused(localstripe_url):
    seeded = _seed(localstripe_url)
    key = _key()
    client = _client(localstripe_url)
    first = client.v1.refunds.create({"charge": seeded.charge_id, "amount": 100},
                                     {"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as other_amount:
        client.v1.refunds.create({"charge": seeded.charge_id, "amount": 200},
                                 {"idempotency_key": key})
    assert other_amount.value.http_status == 400
    assert "same parameters" in (other_amount.value.user_message or "")
    with pytest.raises(stripe.IdempotencyError) as other_endpoint:
        client.v1.customers.create({"email": "x@example.com"}, {"idempotency_key": key})
    assert "same endpoint" in (other_endpoint.value.user_message or "")
    assert _refunds(localstripe_url, seeded.charge_id) == [first.id]


def test_a_refusal_is_replayed_too(localstripe_url):
    """Stripe saves the first answer whatever it was, errors included."""
    missing = f"ch_missing{uuid.uuid4().hex[:10]}"
    key = _key()
    client = _client(localstripe_url)
    with pytest.raises(stripe.InvalidRequestError) as first:
        client.v1.refunds.create({"charge": missing, "amount": 500}, {"idempotency_key": key})
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.refunds.create({"charge": missing, "amount": 500}, {"idempotency_key": key})
    assert again.value.http_status == first.value.http_status == 404
    assert first.value.headers.get("Idempotent-Replayed") is None
    assert again.value.headers.get("Idempotent-Replayed") == "true"


def test_requests_without_a_key_are_not_deduplicated(localstripe_url):
    seeded = _seed(localstripe_url)
    client = _client(localstripe_url)
    a = client.v1.refunds.create({"charge": seeded.charge_id, "amount": 100})
    b = client.v1.refunds.create({"charge": seeded.charge_id, "amount": 100})
    assert a.id != b.id
    assert sorted(_refunds(localstripe_url, seeded.charge_id)) == sorted([a.id, b.id])


def test_a_key_is_forgotten_after_24_hours():
    """Stripe prunes keys once they are at least 24 hours old; a later request with the
    same key is a new request."""
    records = IdempotencyRecords()
    saved = SavedResponse(method="POST", path="/v1/refunds", params_digest="d", saved_at=0.0,
                          status=200, content_type="application/json", body=b"{}")
    records.save("k", saved)
    assert records.get("k", now=RETENTION_SECONDS - 1) == saved
    assert records.get("k", now=RETENTION_SECONDS) is None
    assert "k" not in records.saved


# --- listing from the index by type ---------------------------------------------------


def test_lists_hold_exactly_the_objects_of_their_type(localstripe_url):
    client = _client(localstripe_url)
    seeded = _seed(localstripe_url)
    second = seed_charge(localstripe_url, API_KEY, email=seeded.email, amount=700,
                         currency="usd", customer_id=seeded.customer_id)
    charges = client.v1.charges.list({"customer": seeded.customer_id, "limit": 100}).data
    assert {c.id for c in charges} == {seeded.charge_id, second.charge_id}
    assert all(c.object == "charge" for c in charges)

    gone = client.v1.customers.create({"email": f"gone-{uuid.uuid4().hex[:6]}@example.com"})
    client.v1.customers.delete(gone.id)
    listed = client.v1.customers.list({"email": gone.email}).data
    assert listed == []
    assert client.v1.customers.list({"email": seeded.email}).data[0].id == seeded.customer_id


# --- state across stop and start -----------------------------------------------------


@contextmanager
def _wrapper(state: Path,
             checkpoint_seconds: float = 3600) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    argv = [*binaries.localstripe_command(port, state),
            "--checkpoint-seconds", str(checkpoint_seconds)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def _stop(proc: subprocess.Popen, signum: int) -> None:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_state_survives_a_stop_and_start(tmp_path, signum):
    state = tmp_path / "localstripe.pickle"
    key = _key()
    with _wrapper(state) as (url, proc):
        seeded = _seed(url)
        refund = _client(url).v1.refunds.create({"charge": seeded.charge_id, "amount": 900},
                                                {"idempotency_key": key})
        assert not state.exists(), "the state file was written on the request path"
        _stop(proc, signum)
    assert state.exists()

    with _wrapper(state) as (url, proc):
        client = _client(url)
        charge = client.v1.charges.retrieve(seeded.charge_id)
        assert charge.amount_refunded == 900
        assert client.v1.customers.retrieve(seeded.customer_id).email == seeded.email
        # The idempotency record came back too: a retry after the restart replays.
        again = client.v1.refunds.create({"charge": seeded.charge_id, "amount": 900},
                                         {"idempotency_key": key})
        assert again.id == refund.id
        assert _refunds(url, seeded.charge_id) == [refund.id]
        _stop(proc, signal.SIGTERM)


def _holds(state: Path, object_id: str) -> bool:
    try:
        return object_id.encode() in state.read_bytes()
    except FileNotFoundError:
        return False


def test_a_checkpoint_keeps_writes_through_a_kill(tmp_path):
    state = tmp_path / "localstripe.pickle"
    with _wrapper(state, checkpoint_seconds=0.2) as (url, proc):
        seeded = _seed(url)
        deadline = time.monotonic() + 30
        while not _holds(state, seeded.charge_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.kill()
    with _wrapper(state) as (url, _proc):
        assert _client(url).v1.charges.retrieve(seeded.charge_id).amount == seeded.amount


def test_a_state_file_written_by_localstripe_itself_is_read(tmp_path):
    """An existing .data/localstripe.pickle (localstripe's own format: the store as a
    dict) keeps its objects after the upgrade."""
    state = tmp_path / "localstripe.pickle"
    with _wrapper(state) as (url, proc):
        seeded = _seed(url)
        _stop(proc, signal.SIGTERM)
    script = ("import pickle,sys; d=pickle.load(open(sys.argv[1],'rb')); "
              "pickle.dump(d['objects'], open(sys.argv[1],'wb'))")
    subprocess.run([sys.executable, "-c", script, str(state)], cwd=ROOT, check=True)
    with _wrapper(state) as (url, _proc):
        assert _client(url).v1.charges.retrieve(seeded.charge_id).amount == seeded.amount
