"""`RefundCustomer` without the customer's email: a keyed hash of the normalized address.

Search attributes are not encrypted by the payload codec (Temporal must index them), so
the attribute holds `cust_` + the first 32 hex characters (128 bits) of
HMAC-SHA256(CUSTOMER_REF_KEY, normalized email). Whoever has the key (the API, the CLI,
the console) turns an email into the same value to filter with; whoever sees only
Temporal's visibility store learns nothing about the address, and cannot test guesses
without the key.

How the value reaches the case without the workflow reading settings: the code that
starts a case (the intake, the CaseClient) computes it and sets it as the *initial*
search attribute of the start request (`customer_attribute`); the workflow never writes
RefundCustomer itself (it may read it from workflow.info().typed_search_attributes). A
new CUSTOMER_REF_KEY gives new values: cases started under the old key are then no longer
found by email, so keep the key for as long as cases are kept.

Pure: no settings import, no I/O (the workflow sandbox may import it)."""

from __future__ import annotations

import hashlib
import hmac

from temporalio.common import SearchAttributePair

from core import search_attributes as sa

PREFIX = "cust_"
HEX_CHARS = 32
_LABEL = b"refund-desk customer-ref v1\n"  # domain separation from other uses of a key


def normalize_email(email: str) -> str:
    """What makes two spellings of one address the same customer: trimmed, lower case
    (as core.models.check_email stores it)."""
    return email.strip().lower()


def customer_ref(email: str, key: str) -> str:
    """`cust_<32 hex>`: the RefundCustomer value of this email under `key`."""
    if not key:
        raise ValueError("no customer reference key: set CUSTOMER_REF_KEY")
    digest = hmac.new(key.encode(), _LABEL + normalize_email(email).encode(), hashlib.sha256)
    return PREFIX + digest.hexdigest()[:HEX_CHARS]


def customer_attribute(email: str, key: str) -> SearchAttributePair[str]:
    """The RefundCustomer pair for the start request's search attributes."""
    return SearchAttributePair(sa.CUSTOMER, customer_ref(email, key))


def is_customer_ref(value: str) -> bool:
    body = value.removeprefix(PREFIX)
    return value.startswith(PREFIX) and len(body) == HEX_CHARS and all(
        c in "0123456789abcdef" for c in body)
