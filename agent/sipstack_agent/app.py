"""The agent process: wires the stages together and keeps them running.

    sources ──rows──▶ StateStore ──due calls──▶ evaluator (calls.evaluate) ──documents──▶ outbox
    outbox ──▶ Shipper ──▶ API          RecordingManager ◀── evaluated calls
    HealthServer (/metrics /healthz /readyz /status) reads every stage

Each stage runs as its own supervised task: a stage that raises is logged and
restarted with backoff (1 s doubling to 60 s), it never takes the process down
and never dies silently. SIGTERM/SIGINT set `stop`; every stage returns at
its next await, the store is closed, and the process exits within
`settings.shutdown_grace`. Nothing is lost by stopping at any point (even
kill -9): rows, positions, documents and ship state are committed together in
the state store before anything depends on them, and documents in flight are
simply sent again after a restart (the API drops replays by Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .admin.summary import assess
from .calls import evaluate
from .config import CDR_ONLY_WARNING, Settings
from .metrics import Metrics
from .model import ShipState
from .rules import backoff
from .rules.redact import redact_key
from .sources.timezone import ClockCheck, ZoneResolver, start_time
from .state import StateDiskFull, StateStore
from .statedir import STATE_FILE, ensure_writable
from .statefaults import (
    DISK_FULL_PROBLEM,
    DISK_FULL_RETRY,
    StateGuard,
    quarantine_warning,
    recovery_settings,
)
from .status_schema import STATUS_SCHEMA_VERSION
from .watermarks import Watermarks
from .zones import PbxZone

log = logging.getLogger("sipstack_agent.app")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Deferred:
    """An evaluation stand-in that parks a call whose evaluation raised."""

    ship: ShipState
    next_check_at: datetime | None
    documents: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


class _NotifyingStore:
    """The StateStore, plus a wake-up for the evaluator whenever rows arrive."""

    def __init__(self, store: StateStore, wake: asyncio.Event, guard: StateGuard) -> None:
        self._store = store
        self._wake = wake
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def ingest(self, *args: Any, **kwargs: Any) -> Any:
        # A full state disk holds the source here (backpressure) until the batch is stored.
        res = await self._guard.write(lambda: self._store.ingest(*args, **kwargs))
        self._wake.set()
        return res

    async def add_recordings(self, *args: Any, **kwargs: Any) -> Any:
        res = await self._store.add_recordings(*args, **kwargs)
        self._wake.set()
        return res


@dataclass
class StageState:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None


class Agent:
    """One agent. `await Agent(settings).run(stop)`; tests may pass a transport/metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        transport: Any = None,
        clock: Callable[[], datetime] = utcnow,
        evaluate_batch: int = 500,
        idle_wait: float = 0.2,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.transport = transport
        self._owns_transport = transport is None
        self.clock = clock
        self.evaluate_batch = evaluate_batch
        self.idle_wait = idle_wait
        self.stages: dict[str, StageState] = {}
        self.store: StateStore | None = None
        self.state_guard = StateGuard(self.metrics, asyncio.Event())
        self.shipper: Any = None
        self.recordings: Any = None
        self.sources: dict[str, Any] = {}
        self.health: Any = None
        self.control: Any = None  # admin.control.Control once the monitoring port listens
        self.started_at = clock()
        self.evaluated_total = 0
        self.evaluation_errors = 0
        self._wake = asyncio.Event()
        self._linkedid_end_seen = False
        # The one PBX zone (DB_TIMEZONE, found by the SQL sources when auto): every
        # reader, the recordings and the documents' `timezone` use it.
        self.zone = ZoneResolver(
            settings.database, database_enabled=settings.database_enabled, metrics=self.metrics
        )
        self.call_settings = settings.calls
        self.zone.subscribe(self._on_zone)
        # Sources say how far they have read; complete calls wait for all of them.
        self.watermarks = Watermarks(on_change=self._wake.set)

    def _on_zone(self, zone: PbxZone) -> None:
        self.call_settings = replace(
            self.settings.calls, timezone=zone.name, timezone_source=zone.found
        )
        if self.recordings is not None:
            self.recordings.timezone = zone.name

    # ------------------------------------------------------------------ lifecycle

    @property
    def state_path(self) -> str:
        return os.path.join(self.settings.state_dir, STATE_FILE)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every stage until `stop` is set, then stop within shutdown_grace."""
        s = self.settings
        ensure_writable(s.state_dir)
        self._log_banner()
        self.state_guard = StateGuard(self.metrics, stop)
        # A full state disk at start (a migration, a fresh file) waits like a source does.
        store = await self.state_guard.write(
            lambda: StateStore.open(
                self.state_path,
                connector_id=s.identity.connector_id,
                synchronous=s.state_synchronous,
                quarantine_corrupt=True,
            )
        )
        self.store = store
        if store.quarantined is not None:
            self.metrics.state_quarantined.inc()
            self.settings = s = recovery_settings(s, self.clock())
            log.warning("%s", quarantine_warning(store.quarantined, s, s.start_from_time))
        nstore: Any = _NotifyingStore(store, self._wake, self.state_guard)
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.transport is None:
                from .shipping import AiohttpTransport

                self.transport = AiohttpTransport.from_settings(s.api)
            from .shipping import Shipper

            # StateStore satisfies shipping.OutboxStore (outbox_dead returns a bool there).
            outbox: Any = store
            # store.stats() counts rows: every 5 s is plenty for gauges and readiness.
            self.shipper = Shipper(
                outbox, self.transport, s.api, s.identity, self.metrics, stats_interval=5.0
            )
            self.recordings = self._build_recordings(nstore)
            if self.zone.current is not None and self.recordings is not None:
                self.recordings.timezone = self.zone.current.name
            for name, factory in self._source_factories(nstore, stop):
                tasks.append(self._spawn(name, factory, stop))
            tasks.append(self._spawn("evaluator", lambda: self._evaluator(stop), stop))
            tasks.append(self._spawn("shipper", lambda: self.shipper.run(stop), stop))
            if self.recordings is not None:
                rec = self.recordings
                tasks.append(self._spawn("recordings", self._after_zone(rec.run, stop), stop))
            tasks.append(self._spawn("housekeeping", lambda: self._housekeeping(stop), stop))
            await self._start_health()
            log.info("agent running (%d stages)", len(tasks))
            await stop.wait()
            log.info("stopping (grace %.0f s)", s.shutdown_grace)
            self._wake.set()
            _, pending = await asyncio.wait(tasks, timeout=max(0.5, s.shutdown_grace - 1.5))
            for t in pending:
                t.cancel()
            if pending:
                log.warning(
                    "stages still busy at shutdown, cancelled: %s",
                    ", ".join(t.get_name() for t in pending),
                )
                await asyncio.wait(pending, timeout=1.0)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await self._stop_health()
            if self._owns_transport and self.transport is not None:
                with contextlib.suppress(Exception):
                    await self.transport.close()
            with contextlib.suppress(Exception):
                await store.close()
            log.info("agent stopped")

    def _log_banner(self) -> None:
        s = self.settings
        db = s.database
        where = db.name if db.type == "sqlite" else f"{db.host}:{db.port or 'default'}/{db.name}"
        log.info(
            "sipstack-agent %s connector_id=%s api=%s key=%s db=%s %s cel_mode=%s "
            "shipping=%s state=%s",
            s.identity.version,
            s.identity.connector_id,
            s.api.url,
            redact_key(s.api.api_key),
            db.type if s.database_enabled else "none",
            where if s.database_enabled else "",
            s.cel_mode,
            s.calls.shipping_mode,
            s.state_dir,
        )
        for w in s.warnings:
            log.warning("%s", w)
        if s.cel_mode == "none":
            log.warning("%s", CDR_ONLY_WARNING)

    # ------------------------------------------------------------------ supervision

    def _spawn(
        self, name: str, factory: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> asyncio.Task[None]:
        st = self.stages.setdefault(name, StageState(name))
        return asyncio.create_task(self._supervise(st, factory, stop), name=name)

    async def _supervise(
        self, st: StageState, factory: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
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

    # ------------------------------------------------------------------ stages

    def _source_factories(
        self, store: Any, stop: asyncio.Event
    ) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        s = self.settings
        out: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if s.database_enabled:
            from .sources.sql.poller import SqlSource

            kinds: tuple[Literal["cel", "cdr"], ...] = (
                ("cdr", "cel") if s.cel_mode == "db" else ("cdr",)
            )
            for kind in kinds:
                src = SqlSource(
                    s, kind, store, self.metrics, zone=self.zone, watermarks=self.watermarks
                )
                self.sources[f"sql:{kind}"] = src
                out.append((f"source:{kind}", _runner(src, stop)))
        if s.cel_mode in ("csv", "ami"):
            # The feed's local times are read in the PBX zone: built once it is known.
            out.append(
                (f"source:cel_{s.cel_mode}", self._after_zone(self._feed_runner(store), stop))
            )
        return out

    def _feed_runner(self, store: Any) -> Callable[[asyncio.Event], Awaitable[None]]:
        s = self.settings

        def run(stop: asyncio.Event) -> Awaitable[None]:
            zone = self.zone.current
            assert zone is not None
            name = f"cel_{s.cel_mode}"
            check = ClockCheck(self.zone, self.metrics, name, s.calls.max_age)
            src = self.sources.get(name)
            if src is None and s.cel_mode == "csv":
                from .sources.cel_csv import CelCsvSource

                src = CelCsvSource(
                    s.csv,
                    store,
                    self.metrics,
                    zone.name,
                    start_from=start_time(s, zone) or s.start_from,
                    quarantine_dir=os.path.join(s.state_dir, "quarantine"),
                    clock=check,
                    watermarks=self.watermarks,
                )
            elif src is None:
                from .sources.cel_ami import CelAmiSource

                src = CelAmiSource(
                    s.ami,
                    store,
                    self.metrics,
                    zone.name,
                    clock_check=check,
                    watermarks=self.watermarks,
                )
            self.sources[name] = src
            result: Awaitable[None] = src.run(stop)
            return result

        return run

    def _after_zone(
        self, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> Callable[[], Awaitable[None]]:
        """A stage factory that first waits for the PBX zone (found by the SQL sources)."""

        async def start() -> None:
            if await self.zone.wait(stop) is not None:
                await run(stop)

        return start

    def _build_recordings(self, store: Any) -> Any:
        s = self.settings
        if not s.recordings.paths and not s.database.table_recordings:
            log.info("recordings: off (RECORDING_PATHS=none and no DB_TABLE_RECORDINGS)")
            return None
        from .recordings import RecordingManager

        return RecordingManager(
            s.recordings,
            store,
            self.metrics,
            identity=s.identity,
            database=s.database if s.database_enabled else None,
            api=s.api,
            transport=self.transport,
        )

    async def _evaluator(self, stop: asyncio.Event) -> None:
        """Evaluate due calls in batches; wake on new rows, poll timers every idle_wait."""
        assert self.store is not None
        store = self.store
        if await self.zone.wait(stop) is None:
            return
        while not stop.is_set():
            now = self.clock()
            keys = await store.due_calls(now, self.evaluate_batch, watermark=self.watermarks.low())
            if not keys:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_wait)
                continue
            await self.evaluate_keys(keys, now)
            await asyncio.sleep(0)  # let sources and the shipper run between batches

    async def _cel_gaps(self) -> list[tuple[datetime, datetime | None]]:
        """Intervals the AMI CEL feed was down (calls active then complete from CDRs)."""
        if self.settings.cel_mode != "ami" or self.store is None:
            return []
        from .sources.cel_ami import load_gaps

        return [(g.start, g.end) for g in await load_gaps(self.store)]

    async def evaluate_keys(self, keys: Sequence[str], now: datetime) -> int:
        """Load, evaluate and save the calls `keys`; returns the documents enqueued."""
        assert self.store is not None
        s = self.settings
        records = await self.store.load_calls(list(keys))
        gaps = await self._cel_gaps()
        watermark = self.watermarks.low()
        cdr_src = self.sources.get("sql:cdr")
        lookup = cdr_src is not None and bool(cdr_src.cdr_lookup_active)
        calls = (
            replace(self.call_settings, cdr_wait=s.cdr_lookup_wait)
            if lookup
            else self.call_settings
        )
        results: list[tuple[str, Any]] = []
        notes: list[tuple[Any, Any]] = []
        n_docs = 0
        for rec in records:
            try:
                ev = evaluate(
                    rec.cels,
                    rec.cdrs,
                    rec.recordings,
                    rec.ship,
                    call_key=rec.call_key,
                    now=now,
                    settings=calls,
                    identity=s.identity,
                    gaps=gaps,
                    watermark=watermark,
                )
            except Exception:
                self.evaluation_errors += 1
                log.exception("evaluating call %s failed; retrying in 60 s", rec.call_key)
                results.append((rec.call_key, _Deferred(rec.ship, now + timedelta(seconds=60))))
                continue
            results.append((rec.call_key, ev))
            notes.append((rec, ev))
            n_docs += len(ev.documents)
        if results:
            await self.store.save_evaluations(results, now=now)
        if any(w is not None and (watermark is None or w > watermark) for w in _waits(results)):
            self.watermarks.want_read()  # held for a read after the end: ask for it now
        self.evaluated_total += len(notes)
        for rec, ev in notes:
            call = ev.call
            if cdr_src is not None and lookup and call.awaiting_cdr:
                uids = [*(ch.uniqueid for ch in call.channels), *call.linkedids]
                cdr_src.request_cdr_lookup(call.call_key, uids, call.derived.start)
            if ev.closed and ev.documents and rec.ship.last_phase != "complete":
                reason = call.completion_reason or "unknown"
                self.metrics.calls_completed.labels(reason).inc()
                if reason == "linkedid_end" and not self._linkedid_end_seen:
                    self._linkedid_end_seen = True
                    self.metrics.linkedid_end_seen.set(1)
            if self.recordings is not None:
                try:
                    await self.recordings.on_call(
                        rec.call_key,
                        rec.cels,
                        rec.cdrs,
                        rec.recordings,
                        complete=bool(call.is_complete),
                        document=ev.documents[-1] if ev.documents else None,
                    )
                except Exception:
                    log.exception("recordings: on_call failed for %s", rec.call_key)
        if n_docs and self.shipper is not None:
            self.shipper.notify()
        return n_docs

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Store stats -> metrics every 10 s; prune delivered calls every 60 s."""
        assert self.store is not None
        last_prune = 0.0
        while not stop.is_set():
            now = self.clock()
            stats = await self.store.stats(now)
            self.metrics.open_calls.set(stats.open_calls)
            if time.monotonic() - last_prune >= 60:
                last_prune = time.monotonic()
                res = await self.store.prune(
                    now,
                    keep_closed_for=3600.0,
                    keep_delivered_for=self.settings.state_tombstone_retention,
                )
                if res.calls:
                    log.debug("pruned %d delivered calls", res.calls)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=10.0)

    # ------------------------------------------------------------------ health / status

    async def _start_health(self) -> None:
        s = self.settings
        if not s.monitoring_port:
            return
        from .health import HealthServer

        try:
            from .admin.control import Control

            assert self.store is not None
            self.control = Control(s, self.store)
            health = HealthServer(
                self.metrics,
                status_provider=self.status,
                ready_provider=self.ready,
                control=self.control.actions(),
                control_token=s.control_token,
            )
            await health.start(s.monitoring_host, s.monitoring_port)
            self.health = health
        except OSError as e:
            # A busy port must not stop the pipeline: log loudly, keep shipping.
            log.error(
                "MONITORING_PORT %d: cannot listen (%s); metrics and probes unavailable",
                s.monitoring_port,
                e,
            )
            self.health = None

    async def _stop_health(self) -> None:
        if self.health is not None:
            with contextlib.suppress(Exception):
                await self.health.stop()
        if self.control is not None:
            await self.control.close()

    def readiness_problems(self) -> list[str]:
        problems: list[str] = []
        for name, src in self.sources.items():
            connected = getattr(src, "connected", None)
            if connected is False:
                problems.append(f"{name}: source not connected")
        if self.store is not None and (self.store.disk_full or self.state_guard.full):
            problems.append(DISK_FULL_PROBLEM)
        if self.shipper is not None:
            problems.extend(self.shipper.readiness_problems())
        for st in self.stages.values():
            if not st.running and st.restarts:
                problems.append(f"stage {st.name} restarting: {st.last_error}")
        return problems

    async def ready(self) -> tuple[bool, list[str]]:
        problems = self.readiness_problems()
        return not problems, problems

    async def status(self) -> dict[str, Any]:
        """The /status document (schemas/agent_status.v1.schema.json)."""
        out: dict[str, Any] = {
            "schema_version": STATUS_SCHEMA_VERSION,
            "version": self.settings.identity.version,
            "connector_id": self.settings.identity.connector_id,
            "started_at": self.started_at.isoformat(),
            "cel_mode": self.settings.cel_mode,
            "evaluated_calls": self.evaluated_total,
            "evaluation_errors": self.evaluation_errors,
            "stages": {
                n: {
                    "running": st.running,
                    "restarts": st.restarts,
                    "last_error": st.last_error,
                    "last_error_at": st.last_error_at.isoformat() if st.last_error_at else None,
                }
                for n, st in self.stages.items()
            },
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
                st = await self.store.stats(self.clock())
                out["backlog"] = {
                    "outbox_depth": st.outbox_depth,
                    "oldest_undelivered_seconds": st.oldest_undelivered_age,
                    "dead_letters": st.dead_letters,
                    "open_calls": st.open_calls,
                    "dirty_calls": st.dirty_calls,
                    **await self.store.backlog_detail(self.clock()),
                }
        if self.shipper is not None:
            out["shipper"] = self.shipper.status()
        out["sources"] = {name: source_status(src) for name, src in self.sources.items()}
        out["health"] = assess(out).as_json()
        return out


def _waits(results: Sequence[tuple[str, Any]]) -> list[datetime | None]:
    return [getattr(ev, "wait_mark", None) for _, ev in results]


def _runner(src: Any, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A supervisor factory: each (re)start calls `src.run(stop)` again."""

    def start() -> Awaitable[None]:
        result: Awaitable[None] = src.run(stop)
        return result

    return start


async def run_agent(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run an agent until `stop` (or SIGTERM/SIGINT when `stop` is None)."""
    import signal

    own_stop = stop is None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if own_stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    await agent.run(stop)


def source_status(src: object) -> dict[str, object]:
    """/status `sources.<name>`: what a source tells of itself (SQL sources the most)."""
    connected = getattr(src, "connected", None)
    out: dict[str, object] = {"connected": connected if isinstance(connected, bool) else None}
    report = getattr(src, "status", None)
    details = report() if callable(report) else {}
    if isinstance(details, dict) and "newest_row_time" in details:
        out["newest_row_at"] = details.get("newest_row_time")
        out["catching_up"] = bool(details.get("backlog"))
        out["last_success_at"] = details.get("last_success")
        out["last_error"] = details.get("last_error")
    return out
