"""The fleet table of `kubectl sipstack status`, from AsteriskConnector objects: pure.

Columns: NAMESPACE (with -A), NAME, READY (the Ready condition and its reason),
BACKLOG (status.backlog), LAG (age of status.newestRowAt: how far the source
furthest behind is from now), LAST SHIPPED (age of status.lastShippedAt), DEAD
LETTERS (status.deadLetters), VERSION (status.agentVersion). "-" where the
operator has not read the agent yet. Below the table, one line per connector
that is not ready: the Ready condition's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sipstack_operator.status import READY, TRUE

HEADERS = ("NAME", "READY", "BACKLOG", "LAG", "LAST SHIPPED", "DEAD LETTERS", "VERSION")


@dataclass(frozen=True)
class Row:
    namespace: str
    name: str
    ready: bool
    ready_text: str  # e.g. "True", "False (SecretNotFound)"
    why: str  # the Ready message when not ready
    backlog: str
    lag: str
    last_shipped: str
    dead_letters: str
    version: str

    def cells(self, *, namespaced: bool) -> list[str]:
        cells = [
            self.name,
            self.ready_text,
            self.backlog,
            self.lag,
            self.last_shipped,
            self.dead_letters,
            self.version,
        ]
        return cells if namespaced else [self.namespace, *cells]


def age(text: Any, now: datetime) -> str:
    """`5s`, `3m`, `2h5m`, `4d` from an RFC 3339 time; "-" when there is none."""
    if not isinstance(text, str) or not text:
        return "-"
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{seconds // 86400}d"


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def row(cr: Mapping[str, Any], now: datetime) -> Row:
    meta = cr.get("metadata") or {}
    status = cr.get("status") or {}
    ready = next(
        (
            c
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == READY
        ),
        None,
    )
    if ready is None:
        ready_text, is_ready, why = "Unknown (not reconciled yet)", False, "no status yet"
    else:
        is_ready = ready.get("status") == TRUE
        reason = str(ready.get("reason") or "")
        ready_text = str(ready.get("status")) + ("" if is_ready or not reason else f" ({reason})")
        why = "" if is_ready else str(ready.get("message") or reason)
    return Row(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        ready=is_ready,
        ready_text=ready_text,
        why=why,
        backlog=_count(status.get("backlog")),
        lag=age(status.get("newestRowAt"), now),
        last_shipped=age(status.get("lastShippedAt"), now)
        + (" ago" if status.get("lastShippedAt") else ""),
        dead_letters=_count(status.get("deadLetters")),
        version=str(status.get("agentVersion") or "-"),
    )


def rows(crs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> list[Row]:
    now = now or datetime.now(tz=UTC)
    return sorted((row(cr, now) for cr in crs), key=lambda r: (r.namespace, r.name))


def render(table: Sequence[Row], *, namespaced: bool) -> str:
    """The table as kubectl prints one (columns padded by 3 spaces), then the reasons."""
    headers = list(HEADERS) if namespaced else ["NAMESPACE", *HEADERS]
    lines = [headers, *(r.cells(namespaced=namespaced) for r in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = [
        "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    not_ready = [r for r in table if not r.ready]
    if not_ready:
        out.append("")
        for r in not_ready:
            who = r.name if namespaced else f"{r.namespace}/{r.name}"
            out.append(f"{who}: {r.why}")
    return "\n".join(out) + "\n"
