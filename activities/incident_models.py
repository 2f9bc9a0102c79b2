"""Messages, names and schedule options of the billing-incident activities (starting the
incident's cases, finding open cases), kept apart from the activity code so the workflow
sandbox imports them without the Temporal client."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio.common import RetryPolicy

from core.models import RefundRequest, Strict

# Activity names: the workflow and its test doubles use these strings.
START_CASES = "incident_start_cases"
OPEN_CASES = "incident_open_cases"

INCIDENT_TRANSIENT = "IncidentTransient"  # Temporal did not answer: retried

INCIDENT_START_TO_CLOSE = timedelta(seconds=60)
INCIDENT_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,  # starting a case is idempotent (its id): keep trying
)


class StartCasesInput(Strict):
    incident_id: str
    requests: list[RefundRequest] = Field(max_length=200)


class StartedCase(BaseModel):
    case_id: str
    started: bool = Field(description="False: it existed already (an earlier attempt).")


class StartCasesResult(BaseModel):
    cases: list[StartedCase]


class PurchaseRef(Strict):
    """A charge as the open-case check needs it."""

    ref: str
    charge_id: str | None = None
    payment_intent_id: str | None = None
    customer_id: str | None = None
    customer_email: str | None = None


class OpenCasesInput(Strict):
    incident_id: str
    purchases: list[PurchaseRef] = Field(max_length=200)


class OpenCases(BaseModel):
    on_charge: dict[str, str] = Field(default_factory=dict,
                                      description="ref -> the open case on that charge")
    of_customer: dict[str, str] = Field(
        default_factory=dict, description="ref -> an open case of its customer (another "
                                          "charge)")
