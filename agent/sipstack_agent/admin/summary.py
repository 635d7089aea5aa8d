"""The one reading of a /status document (schemas/agent_status.v1.schema.json):
its health and the readable summary `sipstack-agent status` prints.

Health, and the exit code of `sipstack-agent status`:
- healthy (0): the agent answers, every stage runs, it is ready, the API accepts
  its key, nothing is stuck and no dead letter waits;
- degraded (1): the agent answers but one of those is not true (`problems` says which);
- down (2): the agent does not answer on its monitoring port (stopped, crashed,
  MONITORING_PORT=0); what is known then comes from its state dir.

The agent serves `assess()` of its own /status as `health`; the status page shows
it; this module is the only place the rule lives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

JsonObj = Mapping[str, object]

HEALTHY = "healthy"
DEGRADED = "degraded"
DOWN = "down"
EXIT_CODES: Mapping[str, int] = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}

AGE_LABELS: Mapping[str, str] = {
    "under_a_minute": "< 1 min",
    "under_an_hour": "1 min - 1 h",
    "under_a_day": "1 h - 1 day",
    "over_a_day": "> 1 day",
}


@dataclass(frozen=True)
class Health:
    state: str
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def as_json(self) -> dict[str, object]:
        return {"state": self.state, "problems": list(self.problems)}


def obj(v: object) -> JsonObj:
    return v if isinstance(v, Mapping) else {}


def _int(v: object) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def assess(status: JsonObj, *, answering: bool = True) -> Health:
    """healthy / degraded from a /status the agent served; down when it did not answer."""
    problems: list[str] = []

    def add(p: str) -> None:
        if p and p not in problems:
            problems.append(p)

    ready = status.get("ready_problems")
    for p in ready if isinstance(ready, list) else []:
        add(str(p))
    for name, st in obj(status.get("stages")).items():
        stage = obj(st)
        if stage.get("running") is False and not any(
            p.startswith(f"stage {name} ") for p in problems
        ):
            err = _text(stage.get("last_error"))
            add(f"stage {name} not running" + (f": {err}" if err else ""))
    for name, src in obj(status.get("sources")).items():
        if obj(src).get("connected") is False:
            add(f"{name}: source not connected")
    shipper = obj(status.get("shipper"))
    if not isinstance(ready, list):  # the agent's readiness already says these
        if shipper.get("auth_failed") is True:
            add("the API rejects the key (401/403): fix API_KEY")
        if shipper.get("stuck") is True:
            add("documents wait longer than the stuck threshold: the API does not accept them")
    dead = _int(obj(status.get("backlog")).get("dead_letters"))
    if dead:
        add(f"{dead} dead letter(s) the API refused: sipstack-agent dead-letters list")
    if not answering:
        return Health(DOWN, problems)
    return Health(DEGRADED if problems else HEALTHY, problems)


def _timezone_keys(status: JsonObj) -> list[str]:
    """`timezone` first, then any other top-level key naming one (`db_timezone`...)."""
    named = [k for k in status if "timezone" in k or "time_zone" in k]
    return sorted(named, key=lambda k: (k not in ("timezone", "time_zone"), k))


def timezone_of(status: JsonObj) -> tuple[str, str] | None:
    """(zone, how it was found) when /status reports it (`timezone`, a string or an object)."""
    for key in _timezone_keys(status):
        v = status.get(key)
        if isinstance(v, str) and v:
            return v, ""
        tz = obj(v)
        if tz:
            zone = next((_text(tz[k]) for k in ("zone", "name", "value", "tz") if k in tz), "")
            how_keys = ("source", "how", "origin", "found_by", "detected_from", "method")
            how = next((str(tz[k]) for k in how_keys if tz.get(k) not in (None, "")), "")
            return zone or ", ".join(f"{k}={tz[k]}" for k in sorted(tz)), how
    return None


def ago(when: object, now: datetime) -> str:
    """`2026-12-01T09:40:00+00:00 (12s ago)`, or `never`."""
    if not isinstance(when, str) or not when:
        return "never"
    try:
        t = datetime.fromisoformat(when)
    except ValueError:
        return when
    return f"{when} ({duration((now - t).total_seconds())} ago)"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def position_text(pos: JsonObj) -> str:
    keys = [k for k in ("id", "time", "offset", "file", "session", "n") if k in pos]
    keys = keys or sorted(pos)[:4]
    return " ".join(f"{k}={pos[k]}" for k in keys)


def render(status: JsonObj, health: Health, *, origin: str, now: datetime) -> str:
    """The readable summary (what `sipstack-agent status` prints)."""
    out: list[str] = []
    head = f"sipstack-agent {_text(status.get('version')) or '(not running)'}"
    head += f"  connector {_text(status.get('connector_id')) or '?'}"
    out.append(f"{head}  {health.state.upper()} (exit {health.exit_code})")
    out.append(f"  read from {origin}")
    if status.get("started_at"):
        out.append(f"  started {ago(status.get('started_at'), now)}")
    if health.problems:
        out.append("problems:")
        out.extend(f"  - {p}" for p in health.problems)
    stages = obj(status.get("stages"))
    if stages:
        out.append("stages:")
        for name, st in stages.items():
            stage = obj(st)
            line = f"  {name:<16} {'running' if stage.get('running') else 'STOPPED'}"
            if _int(stage.get("restarts")):
                line += f", {_int(stage.get('restarts'))} restart(s)"
            if stage.get("last_error"):
                line += f", last error {ago(stage.get('last_error_at'), now)}: "
                line += _text(stage.get("last_error"))
            out.append(line)
    tz = timezone_of(status)
    if tz is None:
        out.append("time zone: not reported by this agent (DB_TIMEZONE, see `check`)")
    else:
        out.append(f"time zone: {tz[0]}" + (f" ({tz[1]})" if tz[1] else ""))
    sources = obj(status.get("sources"))
    if sources:
        out.append("sources:")
        for name, sv in sources.items():
            src = obj(sv)
            conn = src.get("connected")
            state = "-" if conn is None else "connected" if conn is True else "NOT CONNECTED"
            line = f"  {name:<16} {state}"
            newest = src.get("newest_row_at")
            if isinstance(newest, str) and newest:
                lag = (now - datetime.fromisoformat(newest)).total_seconds()
                line += f", lag {duration(lag)} (newest row read: {newest})"
            if src.get("catching_up") is True:
                line += ", catching up (full batches)"
            if src.get("last_error"):
                line += f", last error: {_text(src.get('last_error'))}"
            out.append(line)
    checkpoints = obj(status.get("checkpoints"))
    if checkpoints:
        out.append("read positions:")
        for name, pos in checkpoints.items():
            out.append(f"  {name:<24} {position_text(obj(pos))}")
    backlog = obj(status.get("backlog"))
    if backlog:
        oldest = float(_int(backlog.get("oldest_undelivered_seconds")))
        out.append(
            f"backlog: {_int(backlog.get('outbox_depth'))} document(s) waiting"
            + (f" (oldest {duration(oldest)})" if _int(backlog.get("outbox_depth")) else "")
            + f", {_int(backlog.get('open_calls'))} open call(s),"
            f" {_int(backlog.get('dirty_calls'))} to evaluate"
        )
        by_age = obj(backlog.get("by_age"))
        if by_age:
            cells = [f"{AGE_LABELS.get(k, k)}: {_int(v)}" for k, v in by_age.items()]
            out.append("  by age: " + ", ".join(cells))
    shipper = obj(status.get("shipper"))
    if shipper:
        out.append(f"last shipped: {ago(shipper.get('last_success_at'), now)}")
        out.append(f"  to {_text(shipper.get('url'))}")
        if shipper.get("last_error"):
            out.append(
                f"  last error {ago(shipper.get('last_error_at'), now)}: "
                f"{_text(shipper.get('last_error'))}"
            )
    elif status.get("stages") is None:
        out.append("last shipped: unknown (the agent is not running)")
    if backlog:
        dead = _int(backlog.get("dead_letters"))
        out.append(f"dead letters: {dead}")
        for reason, n in obj(backlog.get("dead_letters_by_reason")).items():
            out.append(f"  {reason or '(no reason)':<20} {_int(n)}")
    return "\n".join(out) + "\n"


__all__: Sequence[str] = [
    "DEGRADED",
    "DOWN",
    "EXIT_CODES",
    "HEALTHY",
    "Health",
    "assess",
    "render",
    "timezone_of",
]
