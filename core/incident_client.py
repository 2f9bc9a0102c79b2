"""`IncidentClient`: the one way to open a billing incident and talk to it, shared by the
API, the CLI, the benchmark and the tests (the incident's counterpart of CaseClient)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.case_client import ActionRefused, is_not_found, refusal_of
from core.contract import (
    INCIDENT_PRIORITY,
    INCIDENT_WORKFLOW_TYPE,
    TASK_QUEUE,
    IncidentActionResult,
    IncidentProgress,
    IncidentQuery,
    IncidentReport,
    IncidentRequest,
    IncidentUpdate,
    LeadAction,
    incident_workflow_id,
)

__all__ = ["ActionRefused", "IncidentClient", "IncidentIsClosed", "IncidentNotFound",
           "IncidentStarted", "workflow_id_of"]


@dataclass(frozen=True)
class IncidentStarted:
    workflow_id: str
    started: bool  # False: an incident with this id exists (or existed)


class IncidentNotFound(Exception):
    """No incident with this id."""


class IncidentIsClosed(Exception):
    """The incident has ended: it takes no more actions."""


def workflow_id_of(value: str) -> str:
    """The workflow id from an incident id or a workflow id."""
    return value if value.startswith("incident-") else incident_workflow_id(value)


class IncidentClient:
    def __init__(self, client: Client, *, task_queue: str = TASK_QUEUE,
                 rpc_timeout: timedelta | None = None) -> None:
        self.client, self.task_queue, self.rpc_timeout = client, task_queue, rpc_timeout

    def handle(self, incident: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id_of(incident))

    async def start(self, request: IncidentRequest) -> IncidentStarted:
        """Open the incident (its dry run starts at once); nothing starts when the id was
        used before, even by an incident that has ended."""
        try:
            # (request, state): a new incident has no state yet; continue-as-new passes it.
            await self.client.start_workflow(
                INCIDENT_WORKFLOW_TYPE, args=[request, None], id=request.workflow_id,
                task_queue=self.task_queue, result_type=IncidentReport,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                priority=INCIDENT_PRIORITY, memo={"opened_by": f"lead:{request.opened_by}"},
                rpc_timeout=self.rpc_timeout)
        except WorkflowAlreadyStartedError:
            return IncidentStarted(request.workflow_id, started=False)
        return IncidentStarted(request.workflow_id, started=True)

    async def progress(self, incident: str) -> IncidentProgress:
        try:
            progress: IncidentProgress = await self.handle(incident).query(
                IncidentQuery.progress, result_type=IncidentProgress,
                rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if is_not_found(exc):
                raise IncidentNotFound(incident) from None
            raise
        return progress

    async def report(self, incident: str) -> IncidentReport:
        try:
            report: IncidentReport = await self.handle(incident).query(
                IncidentQuery.report, result_type=IncidentReport, rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if is_not_found(exc):
                raise IncidentNotFound(incident) from None
            raise
        return report

    async def act(self, incident: str, update: IncidentUpdate, action: LeadAction, *,
                  rpc_timeout: timedelta | None = None) -> IncidentActionResult:
        """A lead's action: the result, or ActionRefused with the incident's reason,
        IncidentIsClosed, IncidentNotFound."""
        handle = self.handle(incident)
        try:
            result: IncidentActionResult = await handle.execute_update(
                update, action, result_type=IncidentActionResult,
                rpc_timeout=rpc_timeout or self.rpc_timeout)
        except WorkflowUpdateFailedError as exc:
            raise refusal_of(exc) from None
        except RPCError as exc:
            if not is_not_found(exc):
                raise
            try:
                desc = await handle.describe(rpc_timeout=self.rpc_timeout)
            except RPCError as inner:
                if is_not_found(inner):
                    raise IncidentNotFound(incident) from None
                raise
            if desc.status != WorkflowExecutionStatus.RUNNING:
                raise IncidentIsClosed(incident) from None
            raise
        return result
