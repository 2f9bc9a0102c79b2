"""The `Refund-Desk-Signature` scheme of the intake webhook (Stripe's scheme, our header):

    Refund-Desk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

A sender rotating its secret sends one `v1` per secret; any match passes. A timestamp
more than `tolerance` seconds away from now (either side) is refused, so a captured
request cannot be replayed later. Pure functions: the tests call them directly.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

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
    current = time.time() if now is None else now
    if abs(current - parsed.timestamp) > tolerance:
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
