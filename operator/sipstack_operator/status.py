"""Conditions and the CR status: from the reconcile outcome, the Deployment and
the agent's /status JSON.

Pure functions (plus `fetch_agent_status`, one HTTP GET). Rules:

- the condition types are Ready, Reconciled, SecretsResolved, AgentAvailable
  and MonitoringConfigured, always in that order. Reconciled says whether the
  last apply of the desired state succeeded (as Flux's Ready/Crossplane's
  Synced); AgentAvailable whether the agent runs. Ready needs both, so a
  status refresh never turns Ready True while the last apply failed;
- lastTransitionTime changes only when a condition's status changes; reason
  and message are updated when they change; nothing is written when nothing
  changed (`status_patch` returns None);
- a transition (status or reason changed) yields one `Transition`, which the
  caller posts as an Event on the CR;
- nothing secret goes into the status: messages name Secrets and keys only,
  and the agent's lastError is scrubbed of anything that looks like an API key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiohttp

READY = "Ready"
RECONCILED = "Reconciled"
SECRETS_RESOLVED = "SecretsResolved"
AGENT_AVAILABLE = "AgentAvailable"
MONITORING_CONFIGURED = "MonitoringConfigured"
CONDITION_TYPES = (READY, RECONCILED, SECRETS_RESOLVED, AGENT_AVAILABLE, MONITORING_CONFIGURED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
READY_DRAINING = "Draining"  # Ready's reason while a deleted connector's agent drains
MAX_MESSAGE = 1024
# Reasons of a False status that are not a problem (posted as Normal events).
BENIGN_REASONS = frozenset(
    {"Paused", "ServiceMonitorDisabled", READY_DRAINING, "Drained", "DrainSkipped"}
)

_API_KEY_RE = re.compile(r"sk_[A-Za-z0-9_\-]{4,}")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Transition:
    type: str
    status: str
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        return "Normal" if self.status == TRUE or self.reason in BENIGN_REASONS else "Warning"


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(tz=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrub(text: str) -> str:
    """Truncate, and redact anything that looks like a SIPSTACK API key."""

    def _redact(m: re.Match[str]) -> str:
        return "sk_…" + m.group(0)[-4:]

    text = _API_KEY_RE.sub(_redact, text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


# --------------------------------------------------------------------------- conditions


def agent_condition(
    deployment: Mapping[str, Any] | None,
    *,
    paused: bool,
    agent_doc: Mapping[str, Any] | None = None,
) -> Condition:
    """The agent is healthy: its Deployment has a ready pod, and its /status
    (when it could be read) lists no readiness problem (`ready_problems`)."""
    if paused:
        return Condition(
            AGENT_AVAILABLE, FALSE, "Paused", "spec.paused is true: the agent is scaled to 0"
        )
    if deployment is None:
        return Condition(
            AGENT_AVAILABLE, FALSE, "DeploymentMissing", "the agent Deployment is gone"
        )
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    problems = (agent_doc or {}).get("ready_problems")
    if ready >= 1 and isinstance(problems, list) and problems:
        return Condition(
            AGENT_AVAILABLE,
            FALSE,
            "AgentProblems",
            scrub("the agent reports: " + "; ".join(str(p) for p in problems)),
        )
    if ready >= 1:
        return Condition(AGENT_AVAILABLE, TRUE, "AgentReady", "the agent pod is ready")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == FALSE:
            return Condition(
                AGENT_AVAILABLE,
                FALSE,
                str(cond.get("reason") or "ProgressFailed"),
                scrub(str(cond.get("message") or "")),
            )
    return Condition(
        AGENT_AVAILABLE, FALSE, "AgentNotReady", "waiting for the agent pod to become ready"
    )


def monitoring_condition(*, enabled: bool, available: bool) -> Condition:
    if not enabled:
        return Condition(
            MONITORING_CONFIGURED,
            TRUE,
            "ServiceMonitorDisabled",
            "monitoring.serviceMonitor.enabled is false; scrape Service <name>-metrics port "
            "metrics yourself",
        )
    if not available:
        return Condition(
            MONITORING_CONFIGURED,
            FALSE,
            "ServiceMonitorCRDMissing",
            "monitoring.coreos.com/v1 servicemonitors is not served by this cluster: install "
            "the Prometheus Operator CRDs or disable monitoring.serviceMonitor",
        )
    return Condition(
        MONITORING_CONFIGURED, TRUE, "ServiceMonitorApplied", "ServiceMonitor <name>-agent applied"
    )


def ready_condition(conditions: Mapping[str, Condition], *, paused: bool) -> Condition:
    """Ready = Reconciled and SecretsResolved and AgentAvailable (monitoring does not block it)."""
    if paused and conditions.get(RECONCILED, Condition(RECONCILED, TRUE, "")).status == TRUE:
        return Condition(READY, FALSE, "Paused", "spec.paused is true: the agent is scaled to 0")
    for kind in (RECONCILED, SECRETS_RESOLVED, AGENT_AVAILABLE):
        cond = conditions.get(kind)
        if cond is None:
            return Condition(READY, UNKNOWN, "Reconciling", f"{kind} not known yet")
        if cond.status != TRUE:
            return Condition(READY, FALSE, cond.reason, cond.message)
    return Condition(READY, TRUE, "AgentReady", "the agent is running")


def reconciled_condition(generation: int | None, children: Sequence[str]) -> Condition:
    """Reconciled=True after every child was applied."""
    what = f"generation {generation}" if generation is not None else "the spec"
    return Condition(RECONCILED, TRUE, "Applied", f"applied {what}: {', '.join(children)}")


def conditions_from_status(status: Mapping[str, Any] | None) -> dict[str, Condition]:
    result: dict[str, Condition] = {}
    for raw in (status or {}).get("conditions") or []:
        if isinstance(raw, Mapping) and raw.get("type"):
            result[str(raw["type"])] = Condition(
                type=str(raw["type"]),
                status=str(raw.get("status") or UNKNOWN),
                reason=str(raw.get("reason") or ""),
                message=str(raw.get("message") or ""),
            )
    return result


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    now: str,
    generation: int | None = None,
) -> tuple[list[dict[str, Any]], list[Transition]]:
    """New condition list (known types first, in order) and the transitions."""
    by_type: dict[str, dict[str, Any]] = {
        str(c["type"]): dict(c) for c in (old or []) if isinstance(c, Mapping) and c.get("type")
    }
    transitions: list[Transition] = []
    for cond in new:
        prev = by_type.get(cond.type)
        message = scrub(cond.message)
        changed_status = prev is None or prev.get("status") != cond.status
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": message,
            "lastTransitionTime": now
            if changed_status
            else (prev or {}).get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        elif prev is not None and "observedGeneration" in prev:
            entry["observedGeneration"] = prev["observedGeneration"]
        if changed_status or (prev or {}).get("reason") != cond.reason:
            transitions.append(Transition(cond.type, cond.status, cond.reason, message))
        by_type[cond.type] = entry
    ordered = [by_type.pop(t) for t in CONDITION_TYPES if t in by_type]
    ordered.extend(by_type[t] for t in sorted(by_type))
    return ordered, transitions


# --------------------------------------------------------------------------- agent /status

# The agent's /status is described by data/agent_status.v1.schema.json, a byte-identical
# copy of the agent's schema (tools/sync-chart-crd.py keeps it; the operator never
# imports the agent). The version this code reads is the one that file declares.
AGENT_STATUS_SCHEMA_FILE = "agent_status.v1.schema.json"
# Bigger answers are not read: a healthy agent's /status is a few KiB.
MAX_AGENT_STATUS_BYTES = 256 * 1024


def agent_status_schema() -> dict[str, Any]:
    text = resources.files("sipstack_operator").joinpath("data", AGENT_STATUS_SCHEMA_FILE)
    value = json.loads(text.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{AGENT_STATUS_SCHEMA_FILE} is not a JSON object")
    return value


AGENT_STATUS_VERSION: int = int(agent_status_schema()["properties"]["schema_version"]["const"])


# The status fields that count what the agent holds now (agent_fields).
AGENT_COUNTS = ("backlog", "deadLetters", "deadLettersByReason")


def agent_fields(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The agent's /status -> the CR status fields the fleet reads (those it holds).

    backlog = backlog.outbox_depth, deadLetters = backlog.dead_letters,
    deadLettersByReason = backlog.dead_letters_by_reason, lastShippedAt =
    shipper.last_success_at, lastError = shipper.last_error (scrubbed; "" when
    there is none), agentVersion = version, newestRowAt = the oldest of the
    sources' newest_row_at (the source furthest behind: its age is the
    connector's lag, as the agent's `status` shows it; a time, not a number of
    seconds, so the status is not rewritten on every refresh), resend = the
    progress of the agent's last resend (checkpoints.resend). A document of
    another schema_version, or a field of the wrong type, gives nothing.

    The counts (backlog, deadLetters, deadLettersByReason) are always in the
    result: None when they could not be read (no document, the agent's store not
    open, an odd value), which the merge patch turns into an absent field, so a
    count in the status is never one left from an earlier read. The other fields
    are facts of the past (the last delivery, the newest row) and keep their
    last value.
    """
    out: dict[str, Any] = dict.fromkeys(AGENT_COUNTS)
    if not doc or doc.get("schema_version") != AGENT_STATUS_VERSION:
        return out
    backlog = _object(doc.get("backlog"))
    depth = backlog.get("outbox_depth")
    if _count(depth):
        out["backlog"] = depth
    dead = backlog.get("dead_letters")
    if _count(dead):
        out["deadLetters"] = dead
    by_reason = _object(backlog.get("dead_letters_by_reason"))
    if "dead_letters_by_reason" in backlog:
        out["deadLettersByReason"] = {
            str(k)[:63]: v for k, v in sorted(by_reason.items())[:32] if _count(v)
        }
    version = doc.get("version")
    if isinstance(version, str) and version:
        out["agentVersion"] = version[:64]
    newest = [
        when
        for src in _object(doc.get("sources")).values()
        if isinstance(t := _object(src).get("newest_row_at"), str)
        and (when := _normalize_time(t)) is not None
    ]
    if newest:
        out["newestRowAt"] = min(newest)  # same format: text order is time order
    resend = resend_progress(_object(doc.get("checkpoints")).get("resend"))
    if resend is not None:
        out["resend"] = resend
    shipper = _object(doc.get("shipper"))
    shipped = shipper.get("last_success_at")
    if isinstance(shipped, str) and (when := _normalize_time(shipped)) is not None:
        out["lastShippedAt"] = when
    if "last_error" in shipper:
        err = shipper.get("last_error")
        out["lastError"] = scrub(str(err)) if err else ""
    return out


def resend_progress(cursor: Any) -> dict[str, Any] | None:
    """The agent's resend cursor (checkpoints.resend) -> status.resend
    {since, until, readThrough, sent, done}; None when there is none or it is odd."""
    cur = _object(cursor)
    try:
        since, until, _linkedids = json.loads(str(cur.get("window")))
    except (TypeError, ValueError):
        return None
    sent, done = cur.get("sent"), cur.get("done")
    times = [_normalize_time(t) if isinstance(t, str) else None for t in (since, until)]
    through = cur.get("read_through")
    read_through = _normalize_time(through) if isinstance(through, str) else None
    if None in times or read_through is None or not _count(sent) or not isinstance(done, bool):
        return None
    return {
        "since": times[0],
        "until": times[1],
        "readThrough": read_through,
        "sent": sent,
        "done": done,
    }


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_rfc3339(text: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 time as an aware datetime (UTC when it names no zone);
    None when it is not a string or does not parse."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _normalize_time(text: str) -> str | None:
    parsed = parse_rfc3339(text)
    return None if parsed is None else now_rfc3339(parsed)


async def fetch_agent_status(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float = 3.0,
    max_bytes: int = MAX_AGENT_STATUS_BYTES,
) -> dict[str, Any] | None:
    """GET the agent's /status; None when it cannot be read or is too big (never raises)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return None
            if resp.content_length is not None and resp.content_length > max_bytes:
                return None
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body.extend(chunk)
                if len(body) > max_bytes:
                    return None
        doc = json.loads(bytes(body))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --------------------------------------------------------------------------- the patch


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Top-level status keys whose value changed (a merge patch), or None."""
    old = old or {}
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    return patch or None
