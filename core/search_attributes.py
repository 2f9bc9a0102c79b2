"""The custom search attributes of DESIGN.md: one definition used by the workflow, the
API's visibility queries, the local stack and the tests that register them."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("RefundStatus")
REASON = SearchAttributeKey.for_keyword("RefundReason")
CUSTOMER = SearchAttributeKey.for_keyword("RefundCustomer")
CHARGE_ID = SearchAttributeKey.for_keyword("RefundChargeId")
AMOUNT = SearchAttributeKey.for_int("RefundAmount")
CURRENCY = SearchAttributeKey.for_keyword("RefundCurrency")
RISK = SearchAttributeKey.for_keyword("RefundRisk")
SLA_BREACHED = SearchAttributeKey.for_bool("RefundSlaBreached")
POLICY_VERSION = SearchAttributeKey.for_keyword("RefundPolicyVersion")
# The billing incident a case belongs to (its id), on the incident's own cases and on the
# open cases it joined.
INCIDENT = SearchAttributeKey.for_keyword("RefundIncident")

# Kept for the agent console: who holds the case, and when what it waits for is due (the
# deadline of the current wait; once escalated past its SLA, when the SLA was breached).
ASSIGNEE = SearchAttributeKey.for_keyword("RefundAssignee")
DEADLINE = SearchAttributeKey.for_datetime("RefundDeadline")

ALL: tuple[SearchAttributeKey[Any], ...] = (
    STATUS, REASON, CUSTOMER, CHARGE_ID, AMOUNT, CURRENCY, RISK, SLA_BREACHED, POLICY_VERSION,
    ASSIGNEE, DEADLINE, INCIDENT,
)

def cli_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL:
        type_name = IndexedValueType.Name(int(key.indexed_value_type)).removeprefix(  # type: ignore[arg-type]  # protobuf enum stubs want their own int
            "INDEXED_VALUE_TYPE_"
        )
        flags += ["--search-attribute", f"{key.name}={type_name.capitalize()}"]
    return flags


def indexed_types() -> dict[str, int]:
    """Name -> IndexedValueType, for operator_service.add_search_attributes."""
    return {key.name: int(key.indexed_value_type) for key in ALL}
