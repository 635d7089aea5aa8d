"""`CelCsvSource`: cel_custom's Master.csv tailed into the state store.

The file handling (which file, how far, rotations, restarts) is the CEL-agnostic
`sources.tail.Tailer`; this module is its consumer: it parses chunks with
`CelCsvParser`, drops rows older than START_FROM, quarantines malformed records,
and writes the rows and the checkpoint through `store.ingest(cels, [], {name:
position})` in one transaction. It also runs the poll loop and reports state,
metrics and watermarks: the newest eventtime read after every chunk, marked
`behind` while more of the file waits after that chunk (a backlog read from the
start, or a burst larger than a chunk), and not behind at the end of the file,
when reading fails and while the file is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from ...config import CsvSettings
from ...metrics import Metrics
from ...model import CelRow
from ...rules import backoff
from ...watermarks import ReadPacer, Watermarks
from ..store import SourceStore
from ..tail import Checkpoints, Chunk, OpenFile, Position, RotationKind, StartAt, Tailer
from ..timezone import ClockCheck
from .fileformat import MAX_RECORD_BYTES, NOT_REGULAR
from .parser import CelCsvParser, ChunkResult
from .quarantine import QuarantineSink

__all__ = ["CelCsvSource"]

log = logging.getLogger(__name__)


def _parse_start_from(start_from: str | datetime | None) -> tuple[StartAt, datetime | None]:
    if isinstance(start_from, datetime):
        return "time", start_from.astimezone(UTC)
    s = (start_from or "latest").strip()
    if s.lower() == "latest":
        return "latest", None
    if s.lower() == "beginning":
        return "beginning", None
    t = datetime.fromisoformat(s)
    return "time", (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


class CelCsvSource:
    """Tail cel_custom's Master.csv into the state store. See the module docstring.

    `run(stop)` polls every `settings.poll_interval` s until `stop` is set; `poll_once()`
    reads everything available now (in chunks of `chunk_size` bytes, one ingest
    transaction per chunk) and returns the number of rows handed to the store.

    `start_from` applies only when the store has no position for this file:
    "latest" (default: start at the end, no history), "beginning", or an ISO
    time / datetime (read from the beginning, drop rows older than it).
    `quarantine_dir` (normally STATE_DIR/quarantine) receives malformed records as
    JSONL; None keeps only the metric and the log line.
    """

    def __init__(
        self,
        settings: CsvSettings,
        store: SourceStore,
        metrics: Metrics,
        timezone: str = "UTC",
        *,
        start_from: str | datetime | None = "latest",
        quarantine_dir: str | None = None,
        position_name: str = "cel_csv",
        chunk_size: int = 1024 * 1024,
        stale_after: float | None = None,
        clock: ClockCheck | None = None,
        watermarks: Watermarks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.timezone = timezone
        self.path = settings.path
        self.name = position_name
        self.parser = CelCsvParser(settings.columns or None, timezone)
        start, self._start_time = _parse_start_from(start_from)
        self.tailer = Tailer(
            settings.path,
            Checkpoints(store, position_name),
            self,
            start=start,
            chunk_size=max(int(chunk_size), 2 * MAX_RECORD_BYTES),
            stale_after=(
                stale_after if stale_after is not None else max(30.0, 10 * settings.poll_interval)
            ),
            not_regular=f"CEL_CSV_PATH {settings.path} is not a regular file; {NOT_REGULAR}",
        )
        self.quarantine = QuarantineSink(quarantine_dir, metrics, position_name)
        self.state = "starting"  # starting | waiting_for_file | tailing | error | stopped
        self.last_error: str | None = None
        self.rows_total = 0
        self.rotations: dict[str, int] = {"rename": 0, "truncate": 0, "lost": 0}
        self.clock = clock  # the zone sanity check (sources/timezone.py)
        self._live = False  # a poll drained the file: what comes next is written now
        self._poll_written: datetime | None = None
        self._marks = watermarks
        self._read_newest: datetime | None = None  # newest eventtime read (file order)
        if watermarks is not None:
            watermarks.register(position_name)
        self._pacer = ReadPacer(watermarks)  # the evaluator may ask for a read now

    @property
    def healthy(self) -> bool:
        """False while the file is missing or reading fails (see `state`, `last_error`)."""
        return self.state in ("starting", "tailing")

    @property
    def connected(self) -> bool:
        """The app's readiness probe reads this: the file is open and being tailed."""
        return self.healthy

    # -- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = max(self.settings.poll_interval, 0.01)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    started = datetime.now(UTC)
                    self._pacer.reading()
                    await self.poll_once(stop)  # reads to the end of the file
                    if self._marks is not None:
                        self._marks.publish(
                            self.name,
                            newest=self._read_newest,
                            caught_up_at=started,
                            behind=False,
                        )
                    failures = 0
                    delay = interval
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # transient: log, mark unhealthy, back off, retry
                    failures += 1
                    self.state = "error"
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._status(0)
                    self._not_behind()  # not reading on at once any more
                    log.error("cel_custom reader failed (%s); retrying", self.last_error)
                    log.debug("cel_custom reader failure", exc_info=True)
                    delay = backoff.ceiling(interval, min(60.0, interval * 64), failures)
                if not failures:
                    await self._pacer.sleep(stop, delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            self.close()
            self.state = "stopped"

    def close(self) -> None:
        self.tailer.close()

    def _status(self, ok: int) -> None:
        self.metrics.database_connection_status.labels(source="cel_csv").set(ok)

    def position(self) -> Position | None:
        """The read position as stored (None before the file was opened)."""
        return self.tailer.position()

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        live, self._poll_written = self._live, None
        n = await self.tailer.poll(stop)
        if self.clock is not None:
            self.clock.observe(self._poll_written, live=live)
        self._live = self.tailer.current is not None
        return n

    # -- the tailer's consumer (sources.tail.TailConsumer) ------------------------

    def parse(self, chunk: Chunk, f: OpenFile) -> ChunkResult:
        prefix = f"{f.id.dev}:{f.id.ino}:"
        return self.parser.parse_chunk(chunk.data, chunk.offset, chunk.final, prefix)

    async def commit(
        self, parsed: ChunkResult, f: OpenFile, positions: dict[str, Position], *, more: bool
    ) -> int:
        rows = parsed.rows
        if self._start_time is not None and rows:
            t0 = self._start_time
            kept = [r for r in rows if r.eventtime >= t0]
            if len(kept) != len(rows):
                self.metrics.rows_discarded.labels(reason="before_start_from").inc(
                    len(rows) - len(kept)
                )
            rows = kept
        if parsed.quarantined:
            await asyncio.to_thread(
                self.quarantine.add, parsed.quarantined, file=f.path, dev=f.id.dev, ino=f.id.ino
            )
        if parsed.latin1_records:
            log.debug(
                "%d cel_custom records were not UTF-8; decoded as latin-1", parsed.latin1_records
            )
        res = await self.store.ingest(rows, [], positions)
        self._count(rows, getattr(res, "new_cels", len(rows)), more)
        return len(rows)

    def _count(self, rows: list[CelRow], new: int, more: bool) -> None:
        newest = max((r.eventtime for r in rows), default=None)
        if newest is not None and (self._poll_written is None or newest > self._poll_written):
            self._poll_written = newest
        if new:
            self.metrics.cels_processed.labels(source="csv").inc(new)
        if newest is not None and (self._read_newest is None or newest > self._read_newest):
            self._read_newest = newest
        if self._marks is not None:
            # Chunk by chunk: a backlog's calls are released as the chunks that end them are
            # stored, and while more waits the evaluator leaves the newest calls for later.
            self._marks.publish(self.name, newest=self._read_newest, behind=more)
        self.rows_total += len(rows)

    def _not_behind(self) -> None:
        if self._marks is not None:
            self._marks.publish(self.name, behind=False)

    def waiting(self) -> None:
        self.state = "waiting_for_file"
        self.last_error = f"{self.path}: no such file (yet)"
        self._status(0)
        self._not_behind()

    def tailing(self) -> None:
        self.state = "tailing"
        self.last_error = None
        self._status(1)

    def rotated(self, kind: RotationKind) -> None:
        self.rotations[kind] += 1
        self.metrics.csv_rotations.labels(kind=kind).inc()

    def resumed(self) -> None:
        self._start_time = None  # a stored position wins over START_FROM
