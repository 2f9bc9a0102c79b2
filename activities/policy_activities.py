"""Loading the refund policy: an activity, so the version a case uses is recorded in its
history (and pinned) and the workflow never reads files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from activities.errors import permanent, transient
from core.config import Settings
from policies.library import PolicyRef, register
from policies.loader import PolicyError, parse_policy
from policies.model import Policy

LOAD_POLICY = "load_policy"  # the whole policy into history: cases started before pinning
PIN_POLICY = "pin_policy"  # a PolicyRef (version + hash): the worker holds the policy
POLICY_INVALID = "PolicyInvalid"
POLICY_UNREADABLE = "PolicyUnreadable"

# Schedule options, the one definition the workflow uses: a broken file is not retried.
POLICY_START_TO_CLOSE = timedelta(seconds=10)
POLICY_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=[POLICY_INVALID],
)
# Pinning the policy tries a few times within a workflow task's timeout (a local activity
# that retries longer keeps the task alive with extra tasks in history); past that, the case
# waits and pins again later (workflows/refund_case/policy.py).
PIN_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=4),
    maximum_attempts=4,
    non_retryable_error_types=[POLICY_INVALID],
)


class PolicyActivities:
    """Reads settings.REFUND_POLICY_FILE on each call, so a fixed file serves new cases."""

    def __init__(self, settings: Settings):
        self._path = settings.REFUND_POLICY_FILE
        self._pinned: tuple[str, PolicyRef] | None = None  # the file's text, its ref

    def activities(self) -> list[Callable[..., Any]]:
        return [self.load_policy, self.pin_policy]

    @activity.defn(name=PIN_POLICY)
    async def pin_policy(self) -> PolicyRef:
        """The policy in force, held by this worker; only its ref goes into history. A
        file whose text has not changed since the last call is not parsed again (parsing
        the YAML was a fifth of the worker's CPU per case: bench/case_throughput.py)."""
        text = await asyncio.to_thread(self._read)
        if self._pinned is not None and self._pinned[0] == text:
            return self._pinned[1]
        ref = register(self._parse(text))
        self._pinned = (text, ref)
        return ref

    @activity.defn(name=LOAD_POLICY)
    async def load_policy(self) -> Policy:
        """The policy in force. A broken file is permanent (retrying reads the same file);
        an unreadable one (e.g. a volume not mounted yet) is retried."""
        return self._parse(await asyncio.to_thread(self._read))

    def _read(self) -> str:
        if not self._path.exists():
            raise transient(POLICY_UNREADABLE, f"policy file {self._path} does not exist",
                            path=str(self._path))
        try:
            return self._path.read_text(encoding="utf-8")
        except OSError as exc:
            raise self._invalid(PolicyError(
                self._path, [f"cannot read the file ({exc.strerror or exc})"])) from exc

    def _parse(self, text: str) -> Policy:
        try:
            return parse_policy(text, self._path)
        except PolicyError as exc:
            raise self._invalid(exc) from exc

    @staticmethod
    def _invalid(exc: PolicyError) -> ApplicationError:
        return permanent(POLICY_INVALID, str(exc), path=exc.path, problems=exc.problems)
