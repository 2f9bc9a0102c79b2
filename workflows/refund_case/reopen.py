"""A reply after the case closed is never lost (patch `replies-reopen-closed-cases`).

Within the policy's reopen window the CaseClient starts a new run of the same case id with
the closed run's state and the reply (`ContinuedCase.reopen`): an abandoned case is
evaluated again with the reply; a denied or completed one goes to an agent who reads it
(e.g. a customer accepting the alternative a denial offered). Past the window it opens a
new case whose memo `follows` names the closed one; that case says so in its timeline and
goes the same way. Either way the timeline shows it and ops are told."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import FOLLOWS_MEMO, CaseState, CaseStatus, FollowedCase, Reopening
    from policies.library import PolicyRef, by_version, resolve
    from policies.model import Policy

    from . import patches
    from .gather_info import last_reply_excerpt, on_reply
    from .runtime import CaseRuntime, iso


def pinned_policy(state: CaseState) -> Policy:
    """The policy a reopened case pinned, from the worker's policies: by content hash, or
    by version for cases that pinned the whole policy before hashes. Not held: the
    workflow task fails saying so, and is retried once the file is there."""
    if state.policy_sha256 is not None and state.policy_version is not None:
        return resolve(PolicyRef(version=state.policy_version, sha256=state.policy_sha256))
    held = by_version(state.policy_version or "")
    if held is None:
        raise RuntimeError(f"policy {state.policy_version} of the reopened case is not held "
                           "by this worker: put its file beside the policy in force")
    return held


def _review(closed: CaseStatus, when: str, reply: str) -> str | None:
    """None: the policy decides again (the case was abandoned for want of an answer);
    otherwise why an agent reads the reply first."""
    if closed == CaseStatus.abandoned:
        return None
    return (f"the customer replied after the case closed as {closed}{when}: {reply}; "
            "an agent reviews the reply")


async def reopen(rt: CaseRuntime, reopening: Reopening) -> str | None:
    """Take the reply, record and announce the reopening; see `_review`."""
    case, progress = rt.case, rt.case.progress
    progress.reopened += 1
    progress.runs += 1
    progress.closing = None  # a withdrawn or disputed case runs again, on purpose
    progress.agent_decision = None
    progress.reevaluate = False
    case.approvals = []
    on_reply(rt, reopening.reply)
    closed = reopening.closed_status
    when = f" on {iso(reopening.closed_at)}" if reopening.closed_at else ""
    reply = last_reply_excerpt(rt)
    rt.set_status(CaseStatus.assessing, f"reopened: the customer replied after the case "
                  f"closed as {closed}{when}", actor="customer")
    rt.record("reopened", f"Reopened: the customer replied after the case closed as "
              f"{closed}{when}: {reply}", actor="customer", closed_as=str(closed),
              closed_run_id=reopening.closed_run_id, run=progress.runs)
    await rt.notify_ops("case_reopened", f"{case.case_id} was reopened: the customer replied "
                        f"after it closed as {closed}{when}: {reply}",
                        f"reopened_{progress.reopened}")
    return _review(closed, when, reply)


async def announce_follow_up(rt: CaseRuntime) -> str | None:
    """A case opened by a reply to a closed case past its reopen window: linked in the
    timeline, ops told; see `_review` (None too for any other case)."""
    memo = workflow.memo_value(FOLLOWS_MEMO, None)
    if memo is None or not patches.has(patches.REPLY_REOPENS):
        return None
    follows = FollowedCase.model_validate(memo)
    case = rt.case
    rt.record("follows", f"Follows {follows.case_id} (closed as {follows.closed_status}): "
              "the customer replied after its reopen window; the reply is this case's "
              "request", actor="customer", follows=follows.case_id)
    await rt.notify_ops("follow_up_case", f"{case.case_id} was opened for a reply to "
                        f"{follows.case_id} (closed as {follows.closed_status}) after its "
                        "reopen window", "follow_up_case")
    excerpt = " ".join(case.request.message.split())[:300] if case.request.message else ""
    return _review(follows.closed_status, f" (case {follows.case_id})", f"“{excerpt}”")
