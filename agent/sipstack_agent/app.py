"""The agent process: wires the stages together.

    sources ──rows──▶ StateStore ──due calls──▶ Evaluator (calls.evaluate) ──documents──▶ outbox
    outbox ──▶ Shipper ──▶ API          RecordingManager ◀── evaluated calls
    outbox ──▶ RecordingShipper ──▶ API  (uploads the RecordingManager queued)
    HealthServer (/metrics /healthz /readyz /status) reads HealthReport

Each stage runs as its own supervised task (supervisor.py): a stage that
raises is logged and restarted with backoff, it never takes the process down
and never dies silently. SIGTERM/SIGINT set `stop`; every stage returns at
its next await, the store is closed, and the process exits within
`settings.shutdown_grace`. Nothing is lost by stopping at any point (even
kill -9): rows, positions, documents and ship state are committed together in
the state store before anything depends on them, and documents in flight are
simply sent again after a restart (the API drops replays by Idempotency-Key).

The seams are typed: each consumer names what it needs as a Protocol
(sources.store.SourceStore, evaluator.EvaluatorStore, shipping.OutboxStore,
recordings.manager.RecordingStore, shipping.recordings.RecordingOutbox,
supervisor.StatusStore); `StateStore` satisfies them, and `_SourceSink` adds
what the wiring adds for the sources (the full-disk backpressure, the
evaluator's wake-up) with explicit methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from .config import CDR_ONLY_WARNING, Settings
from .evaluator import Evaluator, Gaps
from .housekeeping import housekeeping
from .metrics import Metrics
from .model import CdrRow, CelRow
from .rules.redact import redact_key
from .sources.timezone import ClockCheck, ZoneResolver, start_time
from .state import IngestResult, StateStore
from .statedir import STATE_FILE, ensure_writable
from .statefaults import StateGuard, quarantine_warning, recovery_settings
from .supervisor import HealthReport, Source, StageFactory, Supervisor
from .watermarks import Watermarks
from .zones import PbxZone

if TYPE_CHECKING:
    from .admin.control import Control
    from .health import HealthServer
    from .recordings import RecordingManager
    from .shipping import AiohttpTransport, RecordingShipper, Shipper, Transport

log = logging.getLogger("sipstack_agent.app")


def utcnow() -> datetime:
    return datetime.now(UTC)


class _SourceSink:
    """What the sources write through (sources.store.SourceStore): the state store,
    holding a source back while the state disk is full, waking the evaluator."""

    def __init__(self, store: StateStore, wake: asyncio.Event, guard: StateGuard) -> None:
        self._store = store
        self._wake = wake
        self._guard = guard

    async def ingest(
        self,
        cels: Sequence[CelRow] = (),
        cdrs: Sequence[CdrRow] = (),
        positions: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> IngestResult:
        # A full state disk holds the source here (backpressure) until the batch is stored.
        res = await self._guard.write(lambda: self._store.ingest(cels, cdrs, positions))
        self._wake.set()
        return res

    async def get_position(self, name: str) -> dict[str, Any] | None:
        return await self._store.get_position(name)

    async def set_position(self, name: str, value: Mapping[str, Any]) -> None:
        await self._store.set_position(name, value)


class Agent:
    """One agent. `await Agent(settings).run(stop)`; tests may pass a transport/metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        transport: Transport | None = None,
        clock: Callable[[], datetime] = utcnow,
        evaluate_batch: int = 500,
        idle_wait: float = 0.2,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.transport = transport
        self._own_transport: AiohttpTransport | None = None  # built (and closed) by run()
        self.clock = clock
        self.evaluate_batch = evaluate_batch
        self.idle_wait = idle_wait
        self.supervisor = Supervisor(clock)
        self.store: StateStore | None = None
        self.state_guard = StateGuard(self.metrics, asyncio.Event())
        self.shipper: Shipper | None = None
        self.recordings: RecordingManager | None = None
        self.recording_shipper: RecordingShipper | None = None
        self.sources: dict[str, Source] = {}
        self.health: HealthServer | None = None
        self.control: Control | None = None  # once the monitoring port listens
        self.started_at = clock()
        self._wake = asyncio.Event()
        self._evaluator: Evaluator | None = None
        self.call_settings = settings.calls  # in the PBX zone once it is known
        # The one PBX zone (DB_TIMEZONE, found by the SQL sources when auto): every
        # reader, the recordings and the documents' `timezone` use it.
        self.zone = ZoneResolver(
            settings.database, database_enabled=settings.database_enabled, metrics=self.metrics
        )
        self.zone.subscribe(self._on_zone)
        # Sources say how far they have read; complete calls wait for all of them.
        self.watermarks = Watermarks(on_change=self._wake.set)
        self.report = HealthReport(
            settings, self.supervisor, self.watermarks, self.state_guard, self.started_at
        )

    def _on_zone(self, zone: PbxZone) -> None:
        self.call_settings = replace(
            self.settings.calls, timezone=zone.name, timezone_source=zone.found
        )
        if self._evaluator is not None:
            self._evaluator.call_settings = self.call_settings
        if self.recordings is not None:
            self.recordings.timezone = zone.name

    @property
    def evaluator(self) -> Evaluator:
        """The evaluator stage over `self.store` (built on first use)."""
        if self._evaluator is None:
            assert self.store is not None, "the evaluator needs the state store"
            self._evaluator = Evaluator(
                self.settings,
                self.store,
                self.metrics,
                self.watermarks,
                clock=self.clock,
                wake=self._wake,
                gaps=self._cel_gaps,
                batch=self.evaluate_batch,
                idle_wait=self.idle_wait,
            )
            self._evaluator.call_settings = self.call_settings
            self.report.evaluator = self._evaluator
        return self._evaluator

    async def evaluate_keys(self, keys: Sequence[str], now: datetime) -> int:
        """Load, evaluate and save the calls `keys` (evaluator.Evaluator.evaluate_keys)."""
        return await self.evaluator.evaluate_keys(keys, now)

    @property
    def evaluation_errors(self) -> int:
        return self._evaluator.evaluation_errors if self._evaluator else 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def state_path(self) -> str:
        return os.path.join(self.settings.state_dir, STATE_FILE)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every stage until `stop` is set, then stop within shutdown_grace."""
        s = self.settings
        ensure_writable(s.state_dir)
        self._log_banner()
        self.state_guard = self.report.guard = StateGuard(self.metrics, stop)
        # A full state disk at start (a migration, a fresh file) waits like a source does.
        store = await self.state_guard.write(
            lambda: StateStore.open(
                self.state_path,
                connector_id=s.identity.connector_id,
                synchronous=s.state_synchronous,
                quarantine_corrupt=True,
                min_free_mb=s.state_min_free_mb,
            )
        )
        self.store = self.report.store = store
        if store.quarantined is not None:
            self.metrics.state_quarantined.inc()
            self.settings = self.report.settings = s = recovery_settings(s, self.clock())
            warning = quarantine_warning(
                store.quarantined, s, s.start_from_time, store.revision_floor
            )
            log.warning("%s", warning)
        tasks: list[asyncio.Task[None]] = []
        try:
            self._wire(store)
            for name, factory in self._stages(store, stop):
                tasks.append(self.supervisor.spawn(name, factory, stop))
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
            if self._own_transport is not None:
                with contextlib.suppress(Exception):
                    await self._own_transport.close()
            with contextlib.suppress(Exception):
                await store.close()
            log.info("agent stopped")

    def _wire(self, store: StateStore) -> None:
        """Build the shipper, the recordings and the evaluator over the store."""
        s = self.settings
        from .shipping import AiohttpTransport, Shipper

        if self.transport is None:
            self.transport = self._own_transport = AiohttpTransport.from_settings(s.api)
        # store.stats() counts rows: every 5 s is plenty for gauges and readiness.
        self.shipper = Shipper(
            store, self.transport, s.api, s.identity, self.metrics, stats_interval=5.0
        )
        self.report.shipper = self.shipper
        self.recordings = self._build_recordings(store)
        if self.recordings is not None and s.recordings.upload:
            from .recordings import ConfinedFiles
            from .shipping import RecordingShipper

            files = ConfinedFiles(s.recordings.paths)
            self.recording_shipper = RecordingShipper(
                store, self.transport, s.recordings, s.api, s.identity, self.metrics, files=files
            )
            self.recordings.on_queued = self.recording_shipper.notify
            self.report.uploader = self.recording_shipper
        if self.zone.current is not None and self.recordings is not None:
            self.recordings.timezone = self.zone.current.name
        ev = self.evaluator
        ev.observer = self.recordings
        ev.shipper = self.shipper

    def _stages(self, store: StateStore, stop: asyncio.Event) -> list[tuple[str, StageFactory]]:
        assert self.shipper is not None
        shipper = self.shipper
        sink = _SourceSink(store, self._wake, self.state_guard)
        stages = self._source_factories(sink, stop)
        stages.append(("evaluator", self._after_zone(self.evaluator.run, stop)))
        stages.append(("shipper", lambda: shipper.run(stop)))
        if self.recordings is not None:
            stages.append(("recordings", self._after_zone(self.recordings.run, stop)))
        if self.recording_shipper is not None:
            uploader = self.recording_shipper
            stages.append(("recording_uploader", lambda: uploader.run(stop)))
        s = self.settings
        stages.append(
            (
                "housekeeping",
                lambda: housekeeping(
                    store, self.metrics, self.clock, stop, s.state_tombstone_retention
                ),
            )
        )
        return stages

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

    # ------------------------------------------------------------------ stages

    def _source_factories(
        self, sink: _SourceSink, stop: asyncio.Event
    ) -> list[tuple[str, StageFactory]]:
        s = self.settings
        out: list[tuple[str, StageFactory]] = []
        if s.database_enabled:
            from .sources.sql.poller import SqlSource

            kinds: tuple[Literal["cel", "cdr"], ...] = (
                ("cdr", "cel") if s.cel_mode == "db" else ("cdr",)
            )
            for kind in kinds:
                src = SqlSource(
                    s, kind, sink, self.metrics, zone=self.zone, watermarks=self.watermarks
                )
                self.sources[f"sql:{kind}"] = src
                if kind == "cdr":
                    self.evaluator.cdr_lookup = src
                out.append((f"source:{kind}", _runner(src, stop)))
        if s.cel_mode in ("csv", "ami"):
            # The feed's local times are read in the PBX zone: built once it is known.
            out.append(
                (f"source:cel_{s.cel_mode}", self._after_zone(self._feed_runner(sink), stop))
            )
        self.report.sources = self.sources
        return out

    def _feed_runner(self, sink: _SourceSink) -> Callable[[asyncio.Event], Awaitable[None]]:
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
                    sink,
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
                    sink,
                    self.metrics,
                    zone.name,
                    clock_check=check,
                    watermarks=self.watermarks,
                )
            self.sources[name] = src
            return src.run(stop)

        return run

    def _after_zone(
        self, run: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> StageFactory:
        """A stage factory that first waits for the PBX zone (found by the SQL sources)."""

        async def start() -> None:
            if await self.zone.wait(stop) is not None:
                await run(stop)

        return start

    def _build_recordings(self, store: StateStore) -> RecordingManager | None:
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
        )

    async def _cel_gaps(self) -> Gaps:
        """Intervals the AMI CEL feed was down (calls active then complete from CDRs)."""
        if self.settings.cel_mode != "ami" or self.store is None:
            return []
        from .sources.cel_ami import load_gaps

        return [(g.start, g.end) for g in await load_gaps(self.store)]

    # ------------------------------------------------------------------ health / status

    async def _start_health(self) -> None:
        s = self.settings
        if not s.monitoring_port:
            return
        from .admin.control import Control
        from .health import HealthServer

        try:
            assert self.store is not None
            self.control = Control(s, self.store)
            health = HealthServer(
                self.metrics,
                status_provider=self.report.status,
                ready_provider=self.report.ready,
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

    async def ready(self) -> tuple[bool, list[str]]:
        return await self.report.ready()

    async def status(self) -> dict[str, Any]:
        """The /status document (supervisor.HealthReport.status)."""
        return await self.report.status()


def _runner(src: Source, stop: asyncio.Event) -> StageFactory:
    """A supervisor factory: each (re)start calls `src.run(stop)` again."""
    return lambda: src.run(stop)


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
