"""Every webhook's authentication, as pure functions (no FastAPI; the tests call them
directly):

- the `Refund-Desk-Signature` scheme of the intake webhook (Stripe's scheme, our header):

      Refund-Desk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

  A sender rotating its secret sends one `v1` per secret; any match passes. A timestamp
  more than `tolerance` seconds away from now (either side) is refused, so a captured
  request cannot be replayed later;
- Stripe's `Stripe-Signature`, checked by the stripe SDK itself (`stripe_event`);
- SendGrid's signed Event Webhook (ECDSA P-256 over timestamp + body), with the same
  tolerance;
- the secret SendGrid sends in a webhook URL (`?secret=`) or as the basic-auth password.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import stripe
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

HEADER = "Refund-Desk-Signature"
SCHEME = "v1"
TOLERANCE_SECONDS = 300
_MAX_HEADER = 4096
_MAX_SIGNATURES = 8


class SignatureError(ValueError):
    """Why a request is not authentic; the message is safe to return to the caller."""


@dataclass(frozen=True)
class ParsedHeader:
    timestamp: int
    signatures: tuple[str, ...]


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of "<t>.<raw body>"."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: str | Iterable[str], timestamp: int | None = None) -> str:
    """The header value for `body`: one v1 per secret (several while rotating)."""
    ts = int(time.time()) if timestamp is None else timestamp
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    parts = [f"t={ts}"] + [f"{SCHEME}={compute(s, ts, body)}" for s in secret_list]
    return ",".join(parts)


def parse_header(header: str | None) -> ParsedHeader:
    """`t=..,v1=..[,v1=..]` -> timestamp and v1 signatures; other schemes are ignored."""
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    if len(header) > _MAX_HEADER:
        raise SignatureError(f"malformed {HEADER} header: too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {HEADER} header: expected key=value items")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureError(f"malformed {HEADER} header: bad timestamp")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value.strip().lower())
    if timestamp is None:
        raise SignatureError(f"malformed {HEADER} header: no timestamp")
    if not signatures:
        raise SignatureError(f"malformed {HEADER} header: no {SCHEME} signature")
    if len(signatures) > _MAX_SIGNATURES:
        raise SignatureError(f"malformed {HEADER} header: too many signatures")
    return ParsedHeader(timestamp, tuple(signatures))


def verify(
    body: bytes,
    header: str | None,
    secrets: str | Iterable[str],
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check `header` against `body`; return the signed timestamp or raise SignatureError.

    Each candidate is compared in constant time (hmac.compare_digest), against every
    configured secret, so old and new secrets both work during a rotation."""
    parsed = parse_header(header)
    if not fresh(parsed.timestamp, now=now, tolerance=tolerance):
        raise SignatureError("signature timestamp outside the 5-minute tolerance")
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    # An empty key makes an HMAC anyone can compute: an unset secret refuses everything.
    secret_list = [s for s in secret_list if s]
    if not secret_list:
        raise SignatureError("no intake secret is configured")
    matched = False
    for secret in secret_list:
        expected = compute(secret, parsed.timestamp, body).encode()
        for candidate in parsed.signatures:
            # compare_digest needs ASCII; a non-ASCII candidate can never match.
            given = candidate.encode() if candidate.isascii() else b""
            matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise SignatureError("no valid signature for this body")
    return parsed.timestamp


def fresh(timestamp: int, *, now: float | None = None,
          tolerance: int = TOLERANCE_SECONDS) -> bool:
    """`timestamp` is within `tolerance` seconds of now, either side."""
    current = time.time() if now is None else now
    return abs(current - timestamp) <= tolerance


# --- Stripe -----------------------------------------------------------------------------


class MalformedEvent(ValueError):
    """A correctly signed body that is not a usable Stripe event."""


def stripe_event(body: bytes, header: str | None, secret: str) -> dict[str, Any]:
    """The verified event as a dict (the stripe SDK's own check, tolerance included).
    Raises SignatureError (bad signature) or MalformedEvent (signed but unusable: not
    JSON, or a `type`/`id` that is not a string)."""
    try:
        verified = stripe.Webhook.construct_event(body, header, secret)
    except stripe.SignatureVerificationError as exc:
        raise SignatureError(f"bad signature: {exc.user_message or exc}") from None
    except (ValueError, TypeError, AttributeError, KeyError):
        raise MalformedEvent("malformed event") from None
    event = verified.to_dict()
    kind, event_id = event.get("type"), event.get("id")
    if not isinstance(kind, str) or not kind:
        raise MalformedEvent("malformed event: `type` must be a non-empty string")
    if event_id is not None and not isinstance(event_id, str):
        raise MalformedEvent("malformed event: `id` must be a string")
    return dict(event)


# --- SendGrid ---------------------------------------------------------------------------

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@functools.lru_cache(maxsize=4)
def _public_key(key_b64: str) -> ec.EllipticCurvePublicKey:
    key = load_der_public_key(base64.b64decode(key_b64.strip()))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("SENDGRID_EVENTS_PUBLIC_KEY is not an ECDSA key")
    return key


def verify_event_signature(public_key_b64: str, payload: bytes, signature_b64: str | None,
                           timestamp: str | None) -> bool:
    """SendGrid's signed Event Webhook: ECDSA P-256 / SHA-256 over timestamp + raw body
    (what sendgrid.helpers.eventwebhook.EventWebhook checks, but on bytes and never
    raising on garbage)."""
    if not signature_b64 or not timestamp:
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        _public_key(public_key_b64).verify(
            signature, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def event_timestamp_fresh(timestamp: str | None, *, now: float | None = None,
                          tolerance: int = TOLERANCE_SECONDS) -> bool:
    """The signed Event Webhook timestamp is within `tolerance` seconds of now (either
    side): a captured, validly signed POST cannot be replayed later."""
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return False
    return fresh(int(timestamp), now=now, tolerance=tolerance)


def url_secret_matches(secret: str | None, query_secret: str | None,
                       authorization: str | None) -> bool:
    """The webhook URL's `?secret=`, or the basic-auth password, is `secret` (compared in
    constant time); an unset secret matches nothing."""
    if not secret:
        return False
    expected = secret.encode()
    if query_secret is not None and hmac.compare_digest(query_secret.encode(), expected):
        return True
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    password = decoded.partition(b":")[2]
    return hmac.compare_digest(password, expected)
