"""What every part of a billing incident uses: its request and state, the timeline, the
current details shown in the Temporal UI, the progress and report views, and
continue-as-new when a run has done its share."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        IncidentEvent,
        IncidentPhase,
        IncidentProgress,
        IncidentReport,
        IncidentRequest,
        IncidentState,
    )
    from core.money import plain

MAX_TIMELINE = 200  # events kept (the cases keep their own timelines)
SHOWN = 50  # events and failures the progress query shows


class IncidentCancelled(Exception):
    """A lead cancelled the incident while it waited for something."""


class IncidentRuntime:
    def __init__(self, request: IncidentRequest, state: IncidentState) -> None:
        self.request, self.state = request, state
        self.run_processed = 0  # charges handled by this run (continue-as-new)

    @property
    def refs(self) -> list[str]:
        """The incident's charges: listed by the lead, or found by the query."""
        return self.request.charges or self.state.refs

    @property
    def cancelling(self) -> bool:
        return self.state.cancelled_by is not None

    # --- the timeline and the UI ---

    def record(self, kind: str, message: str, *, actor: str = "system") -> None:
        timeline = self.state.timeline
        timeline.append(IncidentEvent(at=workflow.now(), actor=actor, kind=kind,
                                      message=message))
        del timeline[:-MAX_TIMELINE]
        self.show()

    def show(self, waiting_for: str | None = None) -> None:
        """The incident's progress as the Temporal UI's current details."""
        s, c = self.state, self.state.counts
        lines = [f"**{s.phase}**{' (paused)' if s.paused else ''}"
                 f"{' - cancelling' if self.cancelling and s.phase == 'draining' else ''}"]
        if s.dry_run is not None:
            d = s.dry_run
            lines.append(f"dry run: {d.charges} charges, {d.to_refund} to refund "
                         f"({totals_line(d.totals)})")
        if s.phase in (IncidentPhase.draining, IncidentPhase.done, IncidentPhase.cancelled):
            lines.append(f"done {c.done} of {c.charges}: refunded {c.refunded}, "
                         f"with an agent {c.to_agent}, failed {c.failed}, skipped {c.skipped}"
                         f", cancelled {c.cancelled}; in flight {len(s.in_flight)}")
            lines.append(f"refunded {totals_line(s.refunded_totals)}")
            eta = self.eta_seconds()
            if eta is not None:
                lines.append(f"about {round(eta)} s left")
        if waiting_for:
            lines.append(f"waiting for {waiting_for}")
        workflow.set_current_details("\n\n".join(lines))

    async def wait(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait for `condition` or a cancellation, showing what the incident waits for."""
        self.show(what)
        await workflow.wait_condition(lambda: self.cancelling or condition())
        self.show()

    # --- views ---

    def eta_seconds(self) -> float | None:
        """Charges left at the pace of the drain so far (paused time left out)."""
        s = self.state
        if s.drain_started_at is None or s.phase != IncidentPhase.draining:
            return None
        paused = s.paused_seconds + ((workflow.now() - s.paused_at).total_seconds()
                                     if s.paused_at else 0.0)
        elapsed = (workflow.now() - s.drain_started_at).total_seconds() - paused
        done = s.counts.done
        if done == 0 or elapsed <= 0:
            return None
        return (s.counts.charges - done) * elapsed / done

    def progress(self) -> IncidentProgress:
        s = self.state
        return IncidentProgress(
            incident_id=s.incident_id, phase=s.phase, paused=s.paused, opened_by=s.opened_by,
            approved_by=s.approved_by, cancelled_by=s.cancelled_by,
            amount_rule=self.request.amount.describe(), dry_run=s.dry_run, counts=s.counts,
            done=s.counts.done, in_flight=len(s.in_flight), refunded_totals=s.refunded_totals,
            estimated_seconds_left=self.eta_seconds(), recent_failures=s.failures[-SHOWN:],
            runs=s.runs, timeline=s.timeline[-SHOWN:])

    def report(self) -> IncidentReport:
        s, r = self.state, self.request
        return IncidentReport(
            incident_id=s.incident_id, phase=s.phase, opened_by=s.opened_by,
            approved_by=s.approved_by, cancelled_by=s.cancelled_by, root_cause=r.root_cause,
            explanation=r.explanation["en"], amount_rule=r.amount.describe(),
            started_at=s.drain_started_at, finished_at=s.finished_at, counts=s.counts,
            refunded_totals=s.refunded_totals, failures=s.failures,
            failures_unlisted=s.failures_unlisted, skipped=s.skipped,
            customers_emailed=s.customers_emailed, open_cases_joined=sorted(s.joined),
            runs=s.runs)

    # --- continue-as-new ---

    async def continue_as_new_if_due(self) -> None:
        """A run handles `charges_per_run` charges (or fewer, when Temporal suggests it):
        the history of one run stays small whatever the incident's size."""
        if self.run_processed < self.request.charges_per_run and \
                not workflow.info().is_continue_as_new_suggested():
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        self.state.runs += 1
        self.record("continued_as_new", f"Run {self.state.runs} carries on "
                    f"({self.state.counts.done} charges done)")
        workflow.continue_as_new(args=[self.request, self.state])


def totals_line(totals: dict[str, int]) -> str:
    return ", ".join(plain(amount, currency) for currency, amount in sorted(totals.items())) \
        or "nothing"
