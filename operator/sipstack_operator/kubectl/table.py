"""The fleet table of `kubectl sipstack status`, from AsteriskConnector objects: pure.

Columns: NAMESPACE (with -A), NAME, READY (the Ready condition and its reason),
BACKLOG (status.backlog), LAG (age of status.newestRowAt: how far the source
furthest behind is from now), LAST SHIPPED (age of status.lastShippedAt), DEAD
LETTERS (status.deadLetters), VERSION (status.agentVersion). "-" where the
operator has not read the agent yet. Below the table, one line per connector
that is not ready: the Ready condition's message.

`-o wide` adds IMAGE (status.agent.image) and MESSAGE (the Ready message, so
no lines below); `-o json` prints the same fields as a list of objects, plain
values for scripts (`as_json`: counts as numbers, ages in seconds next to the
times they come from, null where the table shows "-").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sipstack_operator.status import READY, TRUE, parse_rfc3339

HEADERS = ("NAME", "READY", "BACKLOG", "LAG", "LAST SHIPPED", "DEAD LETTERS", "VERSION")
WIDE_HEADERS = ("IMAGE", "MESSAGE")


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
    image: str
    # The plain values behind the cells (-o json).
    ready_status: str = "Unknown"
    ready_reason: str = ""
    backlog_count: int | None = None
    newest_row_at: str | None = None
    lag_seconds: int | None = None
    last_shipped_at: str | None = None
    last_shipped_seconds: int | None = None
    dead_letter_count: int | None = None

    def cells(self, *, namespaced: bool, wide: bool = False) -> list[str]:
        cells = [
            self.name,
            self.ready_text,
            self.backlog,
            self.lag,
            self.last_shipped,
            self.dead_letters,
            self.version,
        ]
        if wide:
            cells += [self.image, self.why or "-"]
        return cells if namespaced else [self.namespace, *cells]

    def as_json(self) -> dict[str, Any]:
        """The row for scripts: the table's fields as plain values (null: not known)."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "ready": self.ready,
            "readyStatus": self.ready_status,
            "readyReason": self.ready_reason,
            "message": self.why,
            "backlog": self.backlog_count,
            "newestRowAt": self.newest_row_at,
            "lagSeconds": self.lag_seconds,
            "lastShippedAt": self.last_shipped_at,
            "lastShippedSecondsAgo": self.last_shipped_seconds,
            "deadLetters": self.dead_letter_count,
            "agentVersion": None if self.version == "-" else self.version,
            "image": None if self.image == "-" else self.image,
        }


def seconds_since(text: Any, now: datetime) -> int | None:
    """Whole seconds from an RFC 3339 time to `now` (0 if in the future); None when
    there is none or it does not parse."""
    when = parse_rfc3339(text)
    return None if when is None else max(0, int((now - when).total_seconds()))


def age(text: Any, now: datetime) -> str:
    """`5s`, `3m`, `2h5m`, `4d` from an RFC 3339 time; "-" when there is none."""
    if not isinstance(text, str) or not text:
        return "-"
    seconds = seconds_since(text, now)
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{seconds // 86400}d"


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else str(number)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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
        ready_status, reason = "Unknown", ""
    else:
        is_ready = ready.get("status") == TRUE
        ready_status = str(ready.get("status"))
        reason = str(ready.get("reason") or "")
        ready_text = ready_status + ("" if is_ready or not reason else f" ({reason})")
        why = "" if is_ready else str(ready.get("message") or reason)
    agent_block = status.get("agent")
    agent: Mapping[str, Any] = agent_block if isinstance(agent_block, Mapping) else {}
    newest, shipped = _text(status.get("newestRowAt")), _text(status.get("lastShippedAt"))
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
        image=str(agent.get("image") or "-"),
        ready_status=ready_status,
        ready_reason=reason,
        backlog_count=_number(status.get("backlog")),
        newest_row_at=newest,
        lag_seconds=seconds_since(newest, now),
        last_shipped_at=shipped,
        last_shipped_seconds=seconds_since(shipped, now),
        dead_letter_count=_number(status.get("deadLetters")),
    )


def rows(crs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> list[Row]:
    now = now or datetime.now(tz=UTC)
    return sorted((row(cr, now) for cr in crs), key=lambda r: (r.namespace, r.name))


def render(table: Sequence[Row], *, namespaced: bool, wide: bool = False) -> str:
    """The table as kubectl prints one (columns padded by 3 spaces), then the reasons
    (wide: in the MESSAGE column instead)."""
    headers = [*HEADERS, *WIDE_HEADERS] if wide else list(HEADERS)
    headers = headers if namespaced else ["NAMESPACE", *headers]
    lines = [headers, *(r.cells(namespaced=namespaced, wide=wide) for r in table)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = [
        "   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    not_ready = [] if wide else [r for r in table if not r.ready]
    if not_ready:
        out.append("")
        for r in not_ready:
            who = r.name if namespaced else f"{r.namespace}/{r.name}"
            out.append(f"{who}: {r.why}")
    return "\n".join(out) + "\n"


def render_json(table: Sequence[Row]) -> str:
    """The rows as a JSON list of objects (`as_json`), one document, newline-terminated."""
    return json.dumps([r.as_json() for r in table], indent=2) + "\n"
