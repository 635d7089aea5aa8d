"""Supervision and health reporting of the agent's stages.

`Supervisor.spawn(name, factory, stop)` runs a stage as its own task: a stage
that raises (or returns before shutdown) is logged and restarted with backoff
(1 s doubling to 60 s, back to 1 s once it ran for a minute; a full state disk
is retried every DISK_FULL_RETRY s), it never takes the process down and never
dies silently. Every spawned stage is in /status `stages` and, while it
restarts, in the readiness problems.

`HealthReport` builds /readyz and /status (schemas/agent_status.v1.schema.json)
from what each part tells of itself; every part is a small Protocol below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .admin.summary import assess
from .config import Settings
from .rules import backoff
from .state import StateDiskFull, StoreStats
from .statefaults import DISK_FULL_PROBLEM, DISK_FULL_RETRY
from .status_schema import STATUS_SCHEMA_VERSION
from .watermarks import Watermarks

log = logging.getLogger("sipstack_agent.app")

StageFactory = Callable[[], Awaitable[None]]


@dataclass
class StageState:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }


class Supervisor:
    """Runs stages and restarts them; `stages` is what /status reports."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.stages: dict[str, StageState] = {}

    def spawn(self, name: str, factory: StageFactory, stop: asyncio.Event) -> asyncio.Task[None]:
        st = self.stages.setdefault(name, StageState(name))
        return asyncio.create_task(self.supervise(st, factory, stop), name=name)

    async def supervise(self, st: StageState, factory: StageFactory, stop: asyncio.Event) -> None:
        restarts = 0  # since the stage last ran a minute
        while not stop.is_set():
            started = time.monotonic()
            st.running = True
            wait = backoff.ceiling(1.0, 60.0, restarts)
            try:
                await factory()
                if stop.is_set():
                    return
                log.warning("stage %s returned before shutdown; restarting", st.name)
                st.last_error = "returned early"
            except asyncio.CancelledError:
                raise
            except StateDiskFull as e:
                repeat = st.last_error == str(e)[:500]
                st.last_error = str(e)[:500]
                wait = min(wait, DISK_FULL_RETRY)
                level = logging.DEBUG if repeat else logging.WARNING
                log.log(level, "stage %s: %s; retrying every %.0f s", st.name, e, DISK_FULL_RETRY)
            except Exception as e:
                st.last_error = f"{type(e).__name__}: {e}"[:500]
                log.exception("stage %s failed; restarting in %.0f s", st.name, wait)
            finally:
                st.running = False
            st.last_error_at = self.clock()
            st.restarts += 1
            if time.monotonic() - started > 60:
                restarts, wait = 0, min(wait, backoff.ceiling(1.0, 60.0, 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            restarts += 1

    def problems(self) -> list[str]:
        return [
            f"stage {st.name} restarting: {st.last_error}"
            for st in self.stages.values()
            if not st.running and st.restarts
        ]

    def report(self) -> dict[str, dict[str, Any]]:
        return {n: st.as_json() for n, st in self.stages.items()}


# --------------------------------------------------------------------------- health report


class Source(Protocol):
    """A PBX source as the supervisor sees it (sources.sql / cel_csv / cel_ami)."""

    @property
    def connected(self) -> bool: ...

    async def run(self, stop: asyncio.Event) -> None: ...


class Worker(Protocol):
    """An outbox worker (shipping.Shipper, shipping.RecordingShipper)."""

    def readiness_problems(self) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...


class StatusStore(Protocol):
    """The part of `state.StateStore` /status reads."""

    @property
    def disk_full(self) -> bool: ...

    async def positions(self) -> dict[str, dict[str, Any]]: ...

    async def stats(self, now: datetime) -> StoreStats: ...

    async def backlog_detail(self, now: datetime) -> dict[str, dict[str, int]]: ...


class Counts(Protocol):
    """The evaluator's counters (evaluator.Evaluator)."""

    @property
    def evaluated_total(self) -> int: ...

    @property
    def evaluation_errors(self) -> int: ...


class DiskGuard(Protocol):
    @property
    def full(self) -> bool: ...


@dataclass
class HealthReport:
    """/readyz and /status of one agent, from the parts app.Agent wired."""

    settings: Settings
    supervisor: Supervisor
    watermarks: Watermarks
    guard: DiskGuard
    started_at: datetime
    store: StatusStore | None = None
    evaluator: Counts | None = None
    shipper: Worker | None = None
    uploader: Worker | None = None
    sources: Mapping[str, Source] | None = None

    def readiness_problems(self) -> list[str]:
        problems: list[str] = []
        for name, src in (self.sources or {}).items():
            if src.connected is False:
                problems.append(f"{name}: source not connected")
        if self.store is not None and (self.store.disk_full or self.guard.full):
            problems.append(DISK_FULL_PROBLEM)
        for worker in (self.shipper, self.uploader):
            if worker is not None:
                problems.extend(worker.readiness_problems())
        problems.extend(self.supervisor.problems())
        return problems

    async def ready(self) -> tuple[bool, list[str]]:
        problems = self.readiness_problems()
        return not problems, problems

    async def status(self) -> dict[str, Any]:
        """The /status document (schemas/agent_status.v1.schema.json)."""
        s = self.settings
        ev = self.evaluator
        out: dict[str, Any] = {
            "schema_version": STATUS_SCHEMA_VERSION,
            "version": s.identity.version,
            "connector_id": s.identity.connector_id,
            "started_at": self.started_at.isoformat(),
            "cel_mode": s.cel_mode,
            "evaluated_calls": ev.evaluated_total if ev else 0,
            "evaluation_errors": ev.evaluation_errors if ev else 0,
            "stages": self.supervisor.report(),
            "ready_problems": self.readiness_problems(),
            "watermarks": {
                name: {
                    "read_through": m.read_through.isoformat() if m.read_through else None,
                    "caught_up_at": m.caught_up_at.isoformat() if m.caught_up_at else None,
                    "holds": m.holds,
                }
                for name, m in self.watermarks.marks().items()
            },
        }
        if self.store is not None:
            with contextlib.suppress(Exception):
                out["checkpoints"] = await self.store.positions()
                now = self.supervisor.clock()
                st = await self.store.stats(now)
                out["backlog"] = {
                    "outbox_depth": st.outbox_depth,
                    "oldest_undelivered_seconds": st.oldest_undelivered_age,
                    "dead_letters": st.dead_letters,
                    "open_calls": st.open_calls,
                    "dirty_calls": st.dirty_calls,
                    **await self.store.backlog_detail(now),
                }
        if self.shipper is not None:
            out["shipper"] = self.shipper.status()
        if self.uploader is not None:
            out["recording_uploader"] = self.uploader.status()
        out["sources"] = {name: source_status(src) for name, src in (self.sources or {}).items()}
        out["health"] = assess(out).as_json()
        return out


def source_status(src: Source) -> dict[str, object]:
    """/status `sources.<name>`: what a source tells of itself (SQL sources the most)."""
    connected = src.connected
    out: dict[str, object] = {"connected": connected if isinstance(connected, bool) else None}
    report = getattr(src, "status", None)  # only the SQL sources report more
    details = report() if callable(report) else {}
    if isinstance(details, dict) and "newest_row_time" in details:
        out["newest_row_at"] = details.get("newest_row_time")
        out["catching_up"] = bool(details.get("backlog"))
        out["last_success_at"] = details.get("last_success")
        out["last_error"] = details.get("last_error")
    return out
