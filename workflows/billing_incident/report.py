"""Step 4 of an incident: the report, when it is done or cancelled. Counts, totals per
currency, failures with their reasons, skipped charges, the customers emailed, the open
cases joined: emailed to ops, and answered by the `report` query (API, CLI)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.email_models import (
        EMAIL_RETRY_POLICY,
        EMAIL_START_TO_CLOSE,
        SEND_OPS_REPORT,
        EmailSent,
        OpsReport,
    )
    from core.contract import IncidentReport

    from .runtime import IncidentRuntime


def email_context(report: IncidentReport) -> dict[str, Any]:
    """The report as plain JSON for the `incident_report` template."""
    data = report.model_dump(mode="json")
    data["refunded_totals"] = [{"amount": amount, "currency": currency}
                               for currency, amount in sorted(report.refunded_totals.items())]
    data["phase"] = str(report.phase)
    return data


async def send_report(rt: IncidentRuntime) -> None:
    report = rt.report()
    try:
        sent = await workflow.execute_activity(
            SEND_OPS_REPORT, OpsReport(subject_id=rt.request.workflow_id,
                                       template="incident_report",
                                       context=email_context(report), step="incident-report"),
            result_type=EmailSent, start_to_close_timeout=EMAIL_START_TO_CLOSE,
            retry_policy=EMAIL_RETRY_POLICY, summary="Email the incident report to ops")
    except ActivityError as err:
        rt.record("report_not_sent", f"The report could not be emailed to ops: {err.cause}")
        return
    rt.record("report_sent", f"Report emailed to {sent.to}")
