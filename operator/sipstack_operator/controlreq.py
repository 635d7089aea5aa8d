"""A request for a connector's agent, written onto the AsteriskConnector by
`kubectl sipstack`, and its outcome: pure (no I/O).

The request is the annotation ``control.sipstack.com/request``: one JSON object
``{"id", "action", "args", "requestedAt"}``. An annotation, not a spec field:
it does not bump metadata.generation, so no reconcile of the children and no
Reconciled/observedGeneration churn follows from it; GitOps tools that own the
spec never see it as drift; and the spec stays the desired state, not a
one-shot command. Not under ``sipstack.com/``: kopf keeps its own state in
annotations with that prefix and leaves every annotation under it out of the
object's essence, so a change there would call no handler. The operator
(relay.py) answers in ``status.lastRequest`` ``{id, action, outcome, message,
requestedAt, finishedAt[, items]}`` and as an event; an id already in
status.lastRequest is never handled again.

Actions, and the agent's control endpoint each maps to (agent/admin/control.py):

- ``resend`` ``{since, until?, linkedids?}`` -> ``POST /control/resend``;
- ``dead-letters-retry`` ``{ids?, reason?, all?}`` -> ``POST /control/dead-letters/retry``;
- ``dead-letters-list`` ``{reason?}`` -> ``GET /control/dead-letters``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sipstack_operator.status import now_rfc3339, scrub

REQUEST_ANNOTATION = "control.sipstack.com/request"
RESEND = "resend"
RETRY = "dead-letters-retry"
LIST = "dead-letters-list"
ACTIONS = (RESEND, RETRY, LIST)

RUNNING, SUCCEEDED, FAILED, INVALID = "Running", "Succeeded", "Failed", "Invalid"
MAX_ITEMS = 100  # dead letters listed in status.lastRequest.items
MAX_ITEM = 256
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

JsonObject = dict[str, Any]


UNKNOWN = "unknown"  # the action of a request too malformed to tell


class RequestError(ValueError):
    """A malformed request; the message says which field. `request` is what can be
    recorded for it: its own id (or a digest of the annotation) and action."""

    def __init__(self, message: str, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


@dataclass(frozen=True)
class Request:
    id: str
    action: str
    args: Mapping[str, Any] = field(default_factory=dict)
    requested_at: str = ""

    def annotation(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "action": self.action,
                "args": dict(self.args),
                "requestedAt": self.requested_at,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class AgentCall:
    method: str  # GET or POST
    action: str  # the path under /control/
    body: JsonObject


@dataclass(frozen=True)
class Outcome:
    outcome: str
    message: str
    items: tuple[str, ...] = ()

    @property
    def event_type(self) -> str:
        return "Normal" if self.outcome in (SUCCEEDED, RUNNING) else "Warning"

    @property
    def event_reason(self) -> str:
        return f"Request{self.outcome}"


def check_time(name: str, text: str) -> str:
    """An ISO-8601 time with an offset (the agent never guesses the instant)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(f"{name}: {text!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise RequestError(f"{name}: {text!r} has no offset: add Z, +00:00 or the PBX's offset")
    return text.strip()


def request_id_of(annotations: Mapping[str, Any] | None) -> str | None:
    """The id of the request on a connector, if it has one that parses."""
    try:
        return parse((annotations or {}).get(REQUEST_ANNOTATION)).id
    except RequestError:
        return None


def parse(text: Any) -> Request:
    """The request annotation -> Request; RequestError names what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"{REQUEST_ANNOTATION} is empty")
    # A request too malformed to carry its own id is recorded (once) under a digest.
    digest = "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    try:
        raw = json.loads(text)
    except ValueError:
        raise RequestError(f"{REQUEST_ANNOTATION} is not JSON", Request(digest, UNKNOWN)) from None
    if not isinstance(raw, dict):
        raise RequestError(f"{REQUEST_ANNOTATION} must be a JSON object", Request(digest, UNKNOWN))
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise RequestError("id: 1 to 64 letters, digits, '.', '_' or '-'", Request(digest, UNKNOWN))
    requested_at = str(raw.get("requestedAt", "") or "")[:64]
    action = raw.get("action")
    if action not in ACTIONS:
        raise RequestError(
            f"action: one of {', '.join(ACTIONS)}", Request(rid, UNKNOWN, {}, requested_at)
        )
    args = raw.get("args", {})
    try:
        if not isinstance(args, dict):
            raise RequestError("args must be a JSON object")
        checked = _checked_args(str(action), args)
    except RequestError as e:
        raise RequestError(str(e), Request(rid, str(action), {}, requested_at)) from None
    return Request(rid, str(action), checked, requested_at)


def _checked_args(action: str, args: Mapping[str, Any]) -> JsonObject:
    known = {RESEND: {"since", "until", "linkedids"}, RETRY: {"ids", "reason", "all"}}.get(
        action, {"reason"}
    )
    unknown = sorted(set(args) - known)
    if unknown:
        raise RequestError(f"args: unknown {', '.join(unknown)} for {action}")
    out: JsonObject = {}
    if action == RESEND:
        since = args.get("since")
        if not isinstance(since, str):
            raise RequestError("args.since: an ISO-8601 time is required")
        out["since"] = check_time("args.since", since)
        if args.get("until") is not None:
            if not isinstance(args["until"], str):
                raise RequestError("args.until: an ISO-8601 time")
            out["until"] = check_time("args.until", args["until"])
        lids = args.get("linkedids", [])
        if not isinstance(lids, list) or not all(isinstance(x, str) and x for x in lids):
            raise RequestError("args.linkedids: a list of linkedids")
        if lids:
            out["linkedids"] = list(lids)
        return out
    reason = args.get("reason")
    if reason is not None:
        if not isinstance(reason, str) or not reason:
            raise RequestError("args.reason: a reason such as http_400")
        out["reason"] = reason
    if action == RETRY:
        ids = args.get("ids", [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids
        ):
            raise RequestError("args.ids: a list of dead letter ids (positive integers)")
        every = args.get("all", False)
        if not isinstance(every, bool):
            raise RequestError("args.all: true or false")
        if ids:
            out["ids"] = list(ids)
        if every:
            out["all"] = True
        if not (ids or every or reason):
            raise RequestError("args: give ids, a reason or all")
    return out


def agent_call(request: Request) -> AgentCall:
    if request.action == RESEND:
        return AgentCall("POST", "resend", dict(request.args))
    if request.action == RETRY:
        return AgentCall("POST", "dead-letters/retry", dict(request.args))
    return AgentCall("GET", "dead-letters", dict(request.args))


# --------------------------------------------------------------------------- outcome


def refused(status: int, answer: Mapping[str, Any]) -> Outcome | None:
    """The agent's answer when it refused the call itself (token, disabled, unknown)."""
    error = str(answer.get("error") or "")
    if status == 401:
        return Outcome(FAILED, "the agent refused the control token (HTTP 401)")
    if status == 403:
        return Outcome(
            FAILED,
            "the agent's control endpoint is disabled (HTTP 403: no CONTROL_TOKEN_FILE; "
            "an agent image older than the operator?)",
        )
    if status in (404, 405) and "known" in answer:
        return Outcome(FAILED, f"the agent has no such control action (HTTP {status}): {error}")
    return None


def outcome(request: Request, status: int, answer: Mapping[str, Any]) -> Outcome:
    """What the agent's answer means for the requester (message scrubbed, bounded)."""
    no = refused(status, answer)
    if no is not None:
        return no
    error = scrub(str(answer.get("error") or ""))
    if request.action == RESEND:
        return _resend_outcome(status, answer, error)
    if request.action == RETRY:
        return _retry_outcome(status, answer, error)
    return _list_outcome(status, answer, error)


def _resend_outcome(status: int, answer: Mapping[str, Any], error: str) -> Outcome:
    raw_window = answer.get("window")
    window: Mapping[str, Any] = raw_window if isinstance(raw_window, Mapping) else {}
    span = f"{window.get('since')} .. {window.get('until')}" if window else "?"
    if status == 202:
        lids = window.get("linkedids") or []
        only = f", linkedids {', '.join(map(str, lids))}" if lids else ""
        return Outcome(
            SUCCEEDED,
            scrub(
                f"resend started in the agent: {span}{only}; its progress is status.resend "
                "(resumed after an agent restart)"
            ),
        )
    if status == 409:
        return Outcome(
            FAILED,
            scrub(
                f"a resend is already running in the agent ({span}, "
                f"{answer.get('sent', 0)} sent so far): ask again when it is done"
            ),
        )
    return Outcome(FAILED, f"the agent refused the resend (HTTP {status}): {error}")


def _ids(entries: Any) -> list[str]:
    out: list[str] = []
    for e in entries if isinstance(entries, list) else []:
        out.append(str(e.get("id")) if isinstance(e, Mapping) else str(e))
    return out


def _retry_outcome(status: int, answer: Mapping[str, Any], error: str) -> Outcome:
    if status not in (200, 404) or "requeued" not in answer:
        return Outcome(FAILED, f"the agent refused the retry (HTTP {status}): {error}")
    requeued, dropped, missing = (_ids(answer.get(k)) for k in ("requeued", "dropped", "missing"))
    parts = [f"requeued {len(requeued)} dead letter(s)"]
    if requeued:
        parts[0] += f" ({', '.join(requeued[:20])}{', ...' if len(requeued) > 20 else ''})"
    if dropped:
        parts.append(
            f"{len(dropped)} dropped (superseded: a later revision, or merged into another call)"
        )
    if missing:
        parts.append(f"not found: {', '.join(missing[:20])}")
    message = scrub("; ".join(parts) + ": each is a new revision with its Idempotency-Key")
    return Outcome(FAILED if missing else SUCCEEDED, message)


def _list_outcome(status: int, answer: Mapping[str, Any], error: str) -> Outcome:
    rows = answer.get("dead_letters")
    if status != 200 or not isinstance(rows, list):
        return Outcome(FAILED, f"the agent could not list dead letters (HTTP {status}): {error}")
    by_reason: dict[str, int] = {}
    items: list[str] = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        reason = str(row.get("reason") or "?")
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if len(items) < MAX_ITEMS:
            line = (
                f"{row.get('id')} {reason} linkedid={row.get('linkedid')} "
                f"attempts={row.get('attempts')} dead_at={row.get('dead_at')}"
            )
            items.append(scrub(line)[:MAX_ITEM])
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(by_reason.items()))
    more = f" (first {MAX_ITEMS} listed)" if len(rows) > MAX_ITEMS else ""
    message = f"{len(rows)} dead letter(s){': ' + counts if counts else ''}{more}"
    return Outcome(SUCCEEDED, scrub(message), tuple(items))


def last_request(
    request: Request, result: Outcome, *, finished: datetime | None = None
) -> JsonObject:
    """status.lastRequest for this request and outcome."""
    block: JsonObject = {
        "id": request.id,
        "action": request.action,
        "outcome": result.outcome,
        "message": scrub(result.message),
        "requestedAt": request.requested_at,
        "finishedAt": now_rfc3339(finished),
        "items": list(result.items),
    }
    return block
