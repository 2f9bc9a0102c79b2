"""Per-case reply addresses that cannot be forged: `refunds+<case id>+<tag>@<REPLY_DOMAIN>`.

Case ids are guessable (`refund-<request id>`), so the address also carries a tag, the
HMAC-SHA256 of the case id keyed by REPLY_ADDRESS_SECRET (SENDGRID_INBOUND_SECRET when
unset), cut to 16 lowercase hex characters (64 bits). Only Refund Desk can write a valid
address, so mail to one proves that its sender saw a message of that case; the inbound
handler still checks that the sender is the case's customer.

The email activity builds the address with `reply_address`; the inbound webhook reads it
back with `parse_reply_address` / `verify_tag`. Pure (no settings import at run time):
the workflow sandbox may import the activity module that uses it."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.models import CASE_ID

if TYPE_CHECKING:  # core.config resolves paths at import, which the workflow sandbox refuses
    from core.config import Settings

LOCAL_PREFIX = "refunds"
TAG_CHARS = 16
_LABEL = b"refund-desk reply-address v1\n"  # domain separation: the key may be shared
_TAG = re.compile(rf"^[0-9a-f]{{{TAG_CHARS}}}$")


def reply_key(settings: Settings) -> str:
    """The tag key: REPLY_ADDRESS_SECRET, else SENDGRID_INBOUND_SECRET."""
    return settings.REPLY_ADDRESS_SECRET or settings.SENDGRID_INBOUND_SECRET


def reply_tag(case_id: str, key: str) -> str:
    """16 lowercase hex characters: HMAC-SHA256(key, label + case id)."""
    if not key:
        raise ValueError("no reply address key: set REPLY_ADDRESS_SECRET or "
                         "SENDGRID_INBOUND_SECRET")
    digest = hmac.new(key.encode(), _LABEL + case_id.encode(), hashlib.sha256).hexdigest()
    return digest[:TAG_CHARS]


def verify_tag(case_id: str, tag: str | None, key: str) -> bool:
    """Constant-time check of `tag` (case-insensitive: some mail systems fold case)."""
    if not tag or not key:
        return False
    given = tag.lower()
    if not _TAG.match(given):
        return False
    return hmac.compare_digest(reply_tag(case_id, key).encode(), given.encode())


def reply_address(case_id: str, settings: Settings) -> str:
    """`refunds+<case id>+<tag>@<REPLY_DOMAIN>`: where the customer's reply must go."""
    return f"{LOCAL_PREFIX}+{case_id}+{reply_tag(case_id, reply_key(settings))}" \
           f"@{settings.REPLY_DOMAIN}"


@dataclass(frozen=True)
class ParsedReplyAddress:
    case_id: str
    tag: str | None  # None: the untagged form `refunds+<case id>@...` (refused)


def parse_reply_address(address: str, reply_domain: str) -> ParsedReplyAddress | None:
    """The case id and tag of a bare address at `reply_domain`; None when it is not a
    case address. The tag is NOT checked here: call verify_tag."""
    local, at, host = address.strip().rpartition("@")
    if not at or host.lower() != reply_domain.lower():
        return None
    parts = local.split("+")
    if len(parts) not in (2, 3) or not parts[0]:
        return None
    case_id = parts[1]
    if not CASE_ID.match(case_id):
        return None
    return ParsedReplyAddress(case_id, parts[2] if len(parts) == 3 else None)
