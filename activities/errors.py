"""Typed activity errors. Each says, by its type and `non_retryable`, whether a retry can
help, so Temporal retries transient failures and the workflow routes permanent ones."""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError


def transient(error_type: str, message: str, /, **details: Any) -> ApplicationError:
    """A failure a later attempt may not see (rate limit, connection, 5xx)."""
    return ApplicationError(message, details, type=error_type, non_retryable=False)


def permanent(error_type: str, message: str, /, **details: Any) -> ApplicationError:
    """A failure no retry can fix (already refunded, disputed, bad amount, auth)."""
    return ApplicationError(message, details, type=error_type, non_retryable=True)
