"""A reply after the case closed: the case runs again (a new run of the same id, started
by the CaseClient with the closed state, `ContinuedCase.reopen`, and the reply as the
start's signal) instead of the reply being lost. An abandoned case decides again with the
reply; any other (denied, completed...) goes to an agent who reads it, e.g. a customer
accepting the alternative a denial offered. Either way the timeline and ops are told.
A case that follows a closed one (`RefundRequest.follows`, past the reopen window) says
so at its start."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import CaseState, CaseStatus, Reopening
    from policies.library import PolicyRef, by_version, resolve
    from policies.model import Policy

    from .gather_info import last_reply_excerpt
    from .runtime import CaseRuntime, iso

# The reply comes with the start (signal-with-start); this long at most for it to land.
REPLY_GRACE = timedelta(minutes=1)


def pinned_policy(state: CaseState) -> Policy:
    """The policy a reopened case pinned, from the worker's policies (by content hash; by
    version for cases that pinned the whole policy before hashes)."""
    if state.policy_sha256 is not None and state.policy_version is not None:
        return resolve(PolicyRef(version=state.policy_version, sha256=state.policy_sha256))
    held = by_version(state.policy_version or "")
    if held is None:
        raise RuntimeError(f"policy {state.policy_version} of the reopened case is not held "
                           "by this worker: put its file beside the policy in force")
    return held


async def reopen(rt: CaseRuntime, reopening: Reopening, replies_before: int) -> str | None:
    """Record and announce the reopening; None when the policy decides again (an
    abandoned case), else why an agent reviews the reply."""
    case, progress = rt.case, rt.case.progress
    with contextlib.suppress(TimeoutError):
        await workflow.wait_condition(lambda: progress.replies_received > replies_before,
                                      timeout=REPLY_GRACE, timeout_summary="the reply")
    progress.reopened += 1
    progress.runs += 1
    progress.closing = None  # a withdrawn or disputed case runs again, on purpose
    progress.agent_decision = None
    closed = reopening.closed_status
    when = f" on {iso(reopening.closed_at)}" if reopening.closed_at else ""
    reply = last_reply_excerpt(rt)
    rt.record("reopened", f"Reopened: the customer replied after the case closed as {closed}"
              f"{when}: {reply}", actor="customer", closed_as=str(closed),
              run=progress.runs)
    await rt.notify_ops("case_reopened", f"{case.case_id} was reopened: the customer replied "
                        f"after it closed as {closed}{when}: {reply}",
                        f"reopened_{progress.reopened}")
    if closed == CaseStatus.abandoned:
        return None
    return (f"the customer replied after the case closed as {closed}{when}: {reply}; an "
            "agent reviews the reply")


async def announce_follow_up(rt: CaseRuntime) -> None:
    """A new case that continues a closed one: linked in the timeline, ops told."""
    case = rt.case
    follows = case.request.follows
    rt.record("follows", f"Follows {follows}: the customer replied after its reopen window",
              actor="customer", follows=follows)
    await rt.notify_ops("follow_up_case", f"{case.case_id} was opened for a reply to the "
                        f"closed case {follows} after its reopen window",
                        "follow_up_case")
