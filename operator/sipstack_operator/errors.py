"""Why a reconcile stopped: the error types (messages safe to show, no secret
values), the condition reasons of a refusal, and the `reason` label of the
failure metric. Pure."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from sipstack_operator import status as st
from sipstack_operator.spec import SpecError

NOT_ALLOWED = "NotAllowed"  # condition reason: the install's allow-list refused the CR
NOT_OWNED = "NotOwned"  # condition reason: a child's name is taken by an object not ours


class ReconcileError(Exception):
    """The reconcile could not finish; the message is safe to show (no secret values)."""


class SecretsUnresolvedError(ReconcileError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ApplyError(ReconcileError):
    pass


class NotAllowedError(ReconcileError):
    """The connector breaks the install's allow-list (or would adopt a foreign object):
    nothing was applied; retrying does not help until the CR or the install changes."""

    def __init__(self, reason: str, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.reason = reason
        self.problems = problems


def failure_reason(error: Exception) -> str:
    """The `reason` label of a failed reconcile (sipstack_operator.metrics.FAILURE_REASONS)."""
    if isinstance(error, SpecError):
        return "invalid_spec"
    if isinstance(error, NotAllowedError):
        return "not_allowed"
    if isinstance(error, SecretsUnresolvedError):
        return "secrets_unresolved"
    if isinstance(error, ApplyError):
        return "apply_failed"
    if isinstance(error, ApiException):
        return "api_error"
    return "error"


def api_message(e: ApiException) -> str:
    """The Status message of an API error (never the request body)."""
    try:
        message = json.loads(e.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    return st.scrub(f"HTTP {e.status} {e.reason or ''}: {message}".strip())
