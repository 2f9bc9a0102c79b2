"""Step 1: acknowledge the request within the acknowledgment SLA. A breach (late, or an
email that cannot be sent at all) is recorded and escalated; the case goes on.

The SLA runs from when the request reached us (the intake's receipt time), not from when a
worker first ran the case: a paused or busy worker makes the acknowledgment late, and a late
acknowledgment is a breach however it was late (patch agents-lifecycle)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from . import patches
    from .incident import skips_acknowledgment
    from .runtime import CaseRuntime, iso


async def acknowledge(rt: CaseRuntime) -> None:
    if skips_acknowledgment(rt):
        return
    sla = rt.policy.sla.acknowledge
    received = workflow.info().start_time
    if rt.paths.sla_from_receipt:
        received = rt.case.request.received_at or received
    due = received + sla
    # What the customer is promised: a decision (or our questions) within the agent SLA.
    next_update = received + rt.policy.sla.agent_decision
    email = rt.email_input("acknowledgment", "ack", {
        "reason": rt.case.request.reason.value, "next_update_by": iso(next_update)})
    handle = rt.start_email(email, f"Acknowledge the request (due {iso(due)})")
    rt.show_waiting("the acknowledgment email", due)
    left = max(due - workflow.now(), timedelta(seconds=1))
    try:
        if not (rt.paths.sla_from_receipt and due <= workflow.now()):  # else late already
            await workflow.wait_condition(handle.done, timeout=left,
                                          timeout_summary="acknowledgment SLA")
    except TimeoutError:
        await rt.breach("acknowledge", f"The acknowledgment was not sent within {sla}")
    sent = await rt.email_done(handle, email)
    if sent and rt.paths.sla_from_receipt and workflow.now() > due:
        await rt.breach("acknowledge", f"The acknowledgment went out "
                        f"{_seconds(workflow.now() - received)} after the request arrived "
                        f"({iso(received)}); the SLA is {sla}")
    rt.show_waiting(None, None)
    if not sent and patches.has(patches.ACK_FAILURE_BREACH):
        await rt.breach("acknowledge", "The acknowledgment email could not be sent")
    rt.checkpoint()


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f} s"
