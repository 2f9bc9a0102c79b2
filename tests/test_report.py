"""Trend report: counts reasons, outcomes, SLA attainment, refunds and feedback right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities.stripe_models import RefundResult
from cli.report import render, summarize
from core.contract import Approval, CaseState
from core.models import CaseStatus, FeedbackSignal, RefundRequest, TimelineEntry

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


def _case(n: int, reason: str, status: CaseStatus, *, decided_after: timedelta | None = None,
          refund: tuple[int, str] | None = None, rating: int | None = None,
          breaches: tuple[str, ...] = (), agent: str | None = None,
          root_cause: str | None = None) -> CaseState:
    request = RefundRequest(request_id=f"r{n}", customer_email="c@example.com",
                            charge_id="ch_1", reason=reason)
    timeline = [TimelineEntry(at=T0, actor="system", kind="received", message="")]
    if decided_after is not None:
        timeline.append(TimelineEntry(at=T0 + decided_after, actor="system", kind="status",
                                      message="", data={"from": "awaiting_agent",
                                                        "to": "approved"}))
    return CaseState(
        case_id=request.case_id, request=request, status=status, timeline=timeline,
        sla_breaches=list(breaches), sla_breached=bool(breaches), root_cause=root_cause,
        approvals=[Approval(agent=agent, amount=1, at=T0)] if agent else [],
        feedback=FeedbackSignal(rating=rating) if rating else None,
        refund=RefundResult(refund_id=f"re_{n}", status="succeeded", amount=refund[0],
                            currency=refund[1]) if refund else None,
    )


def test_summarize_counts_every_dimension():
    report = summarize([
        _case(1, "unused", CaseStatus.completed, decided_after=timedelta(hours=1),
              refund=(1999, "usd"), rating=5),
        _case(2, "unused", CaseStatus.completed, decided_after=timedelta(hours=3),
              refund=(1001, "usd"), rating=3, agent="alice", breaches=("agent_decision",)),
        _case(3, "billing_error", CaseStatus.refunded, decided_after=timedelta(hours=2),
              refund=(5000, "jpy"), root_cause="duplicate_charge"),
        _case(4, "change_of_mind", CaseStatus.denied, breaches=("acknowledge",)),
    ])
    assert report.cases == 4
    assert report.by_reason == {"unused": 2, "billing_error": 1, "change_of_mind": 1}
    assert report.by_status["completed"] == 2
    assert report.decided_by == {"policy": 2, "agent": 1}
    assert report.sla_attainment == {"acknowledge": 0.75, "agent_decision": 0.75}
    assert report.median_hours_to_decision == 2.0
    assert report.refunded == {"jpy": "5000 JPY", "usd": "30.00 USD"}
    assert report.root_causes == {"duplicate_charge": 1}
    assert report.feedback_count == 2
    assert report.feedback_average == 4.0
    text = render(report)
    assert "SLA attainment" in text and "75.0%" in text and "30.00 USD" in text


def test_summarize_of_nothing_is_empty_not_an_error():
    report = summarize([])
    assert report.cases == 0
    assert report.median_hours_to_decision is None
    assert "0 case(s)" in render(report)
