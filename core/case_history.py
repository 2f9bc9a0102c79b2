"""What a case's event history holds that its `state` does not: the policy it pinned (the
`load_policy` activity's result) and every email it sent (the `send_email` activity's
input, and its result). The agent console shows emails as the customer saw them and
clauses in the words of the pinned version; `policy simulate --from-cases` compares a new
policy with the versions cases pinned. Payloads are decoded with the client's data
converter, so a payload codec (encryption) is honoured."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payloads
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError

from activities.email_models import SEND_EMAIL, EmailInput, EmailSent
from activities.policy_activities import LOAD_POLICY
from core.case_client import CaseClient, CaseNotFound, is_not_found
from core.contract import TASK_QUEUE, WORKFLOW_TYPE
from core.policy_facts import last_evaluation
from policies import library as policy_library
from policies.loader import PolicyError, load_policy
from policies.model import Policy
from policies.simulate import SimCase

STATE_TIMEOUT = timedelta(seconds=10)  # a case that cannot answer is skipped, not waited on


@dataclass
class SentEmail:
    """One customer email the case sent (or tried to): `event_id` names it in the
    console's URLs; `sent` is None while it is being sent or when it failed for good."""

    event_id: int
    scheduled_at: datetime
    email: EmailInput
    sent: EmailSent | None = None
    sent_at: datetime | None = None
    failure: str | None = None


@dataclass
class CaseHistory:
    pinned_policy: Policy | None = None
    emails: list[SentEmail] = field(default_factory=list)


def _when(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


async def _decode(client: Client, payloads: Payloads, kind: type[Any]) -> Any:
    if not payloads.payloads:
        return None
    [value] = await client.data_converter.decode(list(payloads.payloads), [kind])
    return value


async def read_history(client: Client, case_id: str, *, emails: bool = True) -> CaseHistory:
    """The pinned policy and (with `emails`) the emails of the case's current run."""
    try:
        return await _read(client, case_id, emails)
    except RPCError as exc:
        if is_not_found(exc):
            raise CaseNotFound(case_id) from None
        raise


async def _read(client: Client, case_id: str, emails: bool) -> CaseHistory:
    out = CaseHistory()
    scheduled: dict[int, str] = {}  # scheduled event id -> activity type
    by_event: dict[int, SentEmail] = {}
    async for event in client.get_workflow_handle(case_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
            if emails and attrs.activity_type.name == SEND_EMAIL:
                email = await _decode(client, attrs.input, EmailInput)
                by_event[event.event_id] = SentEmail(event.event_id, _when(event), email)
                out.emails.append(by_event[event.event_id])
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            kind = scheduled.get(done.scheduled_event_id)
            if kind == LOAD_POLICY and out.pinned_policy is None:
                out.pinned_policy = await _decode(client, done.result, Policy)
                if not emails:
                    break
            elif kind == SEND_EMAIL and done.scheduled_event_id in by_event:
                sent = by_event[done.scheduled_event_id]
                sent.sent = await _decode(client, done.result, EmailSent)
                sent.sent_at = _when(event)
        elif event.HasField("activity_task_failed_event_attributes"):
            failed = event.activity_task_failed_event_attributes
            if failed.scheduled_event_id in by_event:
                by_event[failed.scheduled_event_id].failure = failed.failure.message
    return out


class PinnedPolicies:
    """Policies by version: the file in force when it has the version asked for, else the
    version a case pinned, read once from that case's history and kept."""

    def __init__(self, policy_file: Path) -> None:
        self._file = policy_file
        self._known: dict[str, Policy] = {}
        self._file_read = False

    def remember(self, policy: Policy) -> None:
        self._known.setdefault(policy.version, policy)

    def _from_file(self) -> None:
        if self._file_read:
            return
        self._file_read = True
        # A broken file in force is no loss here: the versions beside it, and older cases'
        # histories, have theirs.
        with contextlib.suppress(PolicyError):
            self.remember(load_policy(self._file))
        policy_library.hold_folder(self._file.parent)

    async def get(self, client: Client, version: str, case_id: str) -> Policy | None:
        """The policy `version` that case `case_id` pinned (None: it pinned none yet)."""
        self._from_file()
        if version not in self._known and (held := policy_library.by_version(version)):
            self.remember(held)
        if version not in self._known:
            history = await read_history(client, case_id, emails=False)
            if history.pinned_policy is not None:
                self.remember(history.pinned_policy)
        return self._known.get(version)


@dataclass
class PastCases:
    """Past cases ready to simulate, and those left out with why."""

    cases: list[SimCase]
    skipped: list[tuple[str, str]]
    since: datetime | None

    @property
    def since_text(self) -> str:
        return f" since {self.since.date().isoformat()}" if self.since else ""

    def skipped_text(self) -> str:
        if not self.skipped:
            return ""
        why = Counter(reason for _, reason in self.skipped)
        return f"\n  {len(self.skipped)} case(s) left out: " + "; ".join(
            f"{reason} ({n})" for reason, n in why.most_common())


def cases_query(since: datetime | None, task_queue: str = TASK_QUEUE) -> str:
    """The cases of a desk (its task queue) started since `since`."""
    query = f"WorkflowType = '{WORKFLOW_TYPE}' AND TaskQueue = '{task_queue}'"
    if since is not None:
        query += f" AND StartTime >= '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    return query


async def cases_for_simulation(client: Client, policy_file: Path, since: datetime | None, *,
                               task_queue: str = TASK_QUEUE, with_pinned: bool = True,
                               pinned: PinnedPolicies | None = None) -> PastCases:
    """Every case started since `since` that the policy decided, with the facts of its
    last evaluation; `with_pinned`: each with the policy version it pinned as its baseline
    and its recorded decision (which that baseline must reproduce)."""
    cases = CaseClient(client, rpc_timeout=STATE_TIMEOUT)
    found = await cases.states(cases_query(since, task_queue))
    skipped = [(case_id, "did not answer the state query") for case_id, _ in found.skipped]
    pinned = pinned or PinnedPolicies(policy_file)
    ready: list[SimCase] = []
    for state in sorted(found.states, key=lambda s: s.case_id):
        inputs = last_evaluation(state)
        if inputs is None:
            skipped.append((state.case_id, "not evaluated by the policy yet"))
            continue
        facts, at = inputs
        baseline = None
        if with_pinned:
            version = state.policy_version or (state.decision.policy_version
                                               if state.decision else None)
            baseline = await pinned.get(client, version, state.case_id) if version else None
            if baseline is None:
                skipped.append((state.case_id, "its pinned policy could not be read"))
                continue
        ready.append(SimCase(state.case_id, facts, at, baseline,
                             state.decision if with_pinned else None))
    return PastCases(ready, skipped, since)
