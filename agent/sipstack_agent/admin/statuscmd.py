"""`sipstack-agent status`: the running agent's /status as a readable summary, or,
when it does not answer, what its state dir (SQLite, opened read-only) still tells.

Exit code: 0 healthy, 1 degraded, 2 down (admin.summary)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from ..config import Settings
from ..state import StateStore, StoreError
from ..statedir import STATE_FILE
from .agentclient import AgentUnavailable, fetch_json, monitoring_url
from .summary import Health, assess, render


@dataclass(frozen=True)
class StatusTarget:
    """Where to look: the agent's /status URL (None: not reachable over HTTP) and STATE_DIR."""

    url: str | None
    state_dir: str
    connector_id: str = ""
    configured_timezone: str = ""


@dataclass(frozen=True)
class StatusReport:
    status: dict[str, object]
    health: Health
    origin: str

    def as_json(self) -> dict[str, object]:
        return {"health": self.health.as_json(), "origin": self.origin, "status": self.status}


def status_target(
    settings: Settings | None, *, url: str | None = None, state_dir: str | None = None
) -> StatusTarget:
    """The agent of `settings` (MONITORING_HOST/PORT, STATE_DIR), or what the flags say."""
    if settings is None:
        return StatusTarget(url=url, state_dir=state_dir or "")
    return StatusTarget(
        url=url or monitoring_url(settings.monitoring_host, settings.monitoring_port, "/status"),
        state_dir=state_dir or settings.state_dir,
        connector_id=settings.identity.connector_id,
        configured_timezone=settings.database.timezone,
    )


async def from_state_dir(target: StatusTarget, now: datetime) -> dict[str, object]:
    """A /status-shaped summary from the stopped agent's state store (read-only)."""
    store = await StateStore.open_readonly(os.path.join(target.state_dir, STATE_FILE))
    try:
        stats = await store.stats(now)
        detail = await store.backlog_detail(now)
        positions = await store.positions()
    finally:
        await store.close()
    out: dict[str, object] = {
        "connector_id": target.connector_id,
        "checkpoints": positions,
        "backlog": {
            "outbox_depth": stats.outbox_depth,
            "oldest_undelivered_seconds": stats.oldest_undelivered_age,
            "dead_letters": stats.dead_letters,
            "open_calls": stats.open_calls,
            "dirty_calls": stats.dirty_calls,
            **detail,
        },
    }
    if target.configured_timezone:
        out["timezone"] = {
            "zone": target.configured_timezone,
            "source": "DB_TIMEZONE as configured; the agent is not running",
        }
    return out


def gather(target: StatusTarget, *, timeout: float = 4.0) -> StatusReport:
    now = datetime.now(UTC)
    why = "MONITORING_PORT=0: the agent cannot be asked"
    if target.url is not None:
        try:
            status = fetch_json(target.url, timeout)
            return StatusReport(status, assess(status), target.url)
        except AgentUnavailable as e:
            why = f"the agent does not answer: {e}"
    origin = f"{os.path.join(target.state_dir, STATE_FILE)} (read-only)"
    try:
        status = asyncio.run(from_state_dir(target, now))
    except (StoreError, OSError, sqlite3.Error) as e:
        return StatusReport({}, Health("down", [why, f"state store: {e}"]), origin)
    health = assess(status, answering=False)
    return StatusReport(status, Health(health.state, [why, *health.problems]), origin)


def run_status(target: StatusTarget, *, as_json: bool, out: TextIO, timeout: float = 4.0) -> int:
    report = gather(target, timeout=timeout)
    if as_json:
        print(json.dumps(report.as_json(), indent=2, default=str), file=out)
    else:
        now = datetime.now(UTC)
        out.write(render(report.status, report.health, origin=report.origin, now=now))
    return report.health.exit_code
