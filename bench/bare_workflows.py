"""The floor the workflow benchmarks compare RefundCase with: what Temporal itself costs for
the same steps, with no-op activities and nothing else.

`BenchBareCase` runs the five activities a case runs up to its Stripe refund, in the same
order and under the same activity type names (load policy, acknowledgment email, Stripe
facts, approval email, create refund), so the benchmarks read both histories the same way.
`BenchBareParked` runs the first three and then waits, as a case waiting for an agent does.
Both take the same input as RefundCase (core.models.RefundRequest).

The workflows live in this module (not in a script) because the workflow sandbox
re-imports the module that defines them.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from core.models import CaseStatus, RefundRequest
    from core.search_attributes import STATUS

# Activity type names recorded in every RefundCase history (renaming one would break the
# replay of running cases, so they are as stable as the workflow type name).
LOAD_POLICY = "load_policy"
SEND_EMAIL = "send_email"
GATHER_FACTS = "stripe_gather_facts"
CREATE_REFUND = "stripe_create_refund"

BARE_CASE = "BenchBareCase"
BARE_PARKED = "BenchBareParked"

_TIMEOUT = timedelta(seconds=30)
PARKED_STATUS = CaseStatus.awaiting_agent.value
PARK_FOR = timedelta(hours=24)  # as long as a case waits for an agent before escalating


@activity.defn(name=LOAD_POLICY)
async def load_policy() -> None:
    """No-op stand-in."""


@activity.defn(name=SEND_EMAIL)
async def send_email(template: str) -> None:
    """No-op stand-in."""


@activity.defn(name=GATHER_FACTS)
async def gather_facts(case_id: str) -> None:
    """No-op stand-in."""


@activity.defn(name=CREATE_REFUND)
async def create_refund(case_id: str) -> None:
    """No-op stand-in."""


ACTIVITIES = [load_policy, send_email, gather_facts, create_refund]


async def _first_three(case_id: str) -> None:
    await workflow.execute_activity(LOAD_POLICY, start_to_close_timeout=_TIMEOUT)
    await workflow.execute_activity(SEND_EMAIL, "acknowledgment",
                                    start_to_close_timeout=_TIMEOUT)
    await workflow.execute_activity(GATHER_FACTS, case_id, start_to_close_timeout=_TIMEOUT)


@workflow.defn(name=BARE_CASE)
class BenchBareCase:
    @workflow.run
    async def run(self, request: RefundRequest) -> None:
        case_id = workflow.info().workflow_id
        await _first_three(case_id)
        await workflow.execute_activity(SEND_EMAIL, "approval", start_to_close_timeout=_TIMEOUT)
        await workflow.execute_activity(CREATE_REFUND, case_id, start_to_close_timeout=_TIMEOUT)


@workflow.defn(name=BARE_PARKED)
class BenchBareParked:
    """Parks as a case waiting for an agent does; its one addition to the bare steps is the
    RefundStatus upsert that lets the benchmark (and ops) count it as parked."""

    @workflow.run
    async def run(self, request: RefundRequest) -> None:
        await _first_three(workflow.info().workflow_id)
        workflow.upsert_search_attributes([STATUS.value_set(PARKED_STATUS)])
        await workflow.sleep(PARK_FOR)


WORKFLOWS = [BenchBareCase, BenchBareParked]
