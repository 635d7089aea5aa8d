"""The SQL poller's state and what both reading modes share (poller.py).

`PollerBase` holds one table's reading state (connection, discovered table,
position, holes, metrics) and the helpers the id mode (idmode.py) and the time
mode (timemode.py) both use: the table's time zone and parameters, max(id), and
`_ingest`, which stores rows with the position in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from ...config import Settings
from ...metrics import Metrics
from ...model import CdrRow, CelRow
from ...watermarks import ReadPacer, Watermarks
from ...zones import PbxZone
from ..cdr_end import CdrEndReader
from ..dialects import dialect_for
from ..store import SourceStore
from ..timezone import ClockCheck, ZoneResolver
from .convert import db_param, written_at
from .drivers import Db
from .table import Kind, TableInfo

__all__ = ["Hole", "PollerBase", "TimeState"]


@dataclass
class Hole:
    """An id skipped by an out-of-order commit (id mode), watched since `first_seen`."""

    first_seen: float


@dataclass
class TimeState:
    """Time mode: the rows read inside the look-back window and the last sweep."""

    seen: dict[str, datetime] = field(default_factory=dict)  # dedup_key -> row time
    last_sweep: float = 0.0


class PollerBase:
    """One PBX table's reading state; SqlSource (poller.py) is the class to use."""

    def __init__(
        self,
        settings: Settings,
        kind: Kind,
        store: SourceStore,
        metrics: Metrics,
        *,
        db: Db | None = None,
        zone: ZoneResolver | None = None,
        watermarks: Watermarks | None = None,
    ) -> None:
        if kind not in ("cel", "cdr"):
            raise ValueError(f"kind must be 'cel' or 'cdr', not {kind!r}")
        self.settings = settings
        self.dbs = settings.database
        self.kind: Kind = kind
        self.store = store
        self.metrics = metrics
        self.table = self.dbs.table_cel if kind == "cel" else self.dbs.table_cdr
        self.position_name = f"sql:{kind}:{self.table}"
        self.zones = zone or ZoneResolver(self.dbs, metrics=metrics)
        self.zone: PbxZone | None = self.zones.current
        self.tz: tzinfo = self.zone.tz if self.zone else UTC
        self._live = False  # the previous poll caught up: rows now arrive as written
        self._poll_written: datetime | None = None  # newest "written at" of this poll's rows
        self._clock = ClockCheck(self.zones, metrics, self.table, settings.calls.max_age)
        self.dialect = dialect_for(self.dbs.type)
        self._db = db
        self._own_db = db is None
        self.info: TableInfo | None = None
        self._pos: dict[str, Any] | None = None
        self._holes: dict[int, Hole] = {}
        self._recent: set[int] = set()  # ids read inside the overlap window
        self._reread_overlap = True  # first poll after (re)connect re-reads the overlap
        self._time = TimeState()
        self._builder: Callable[[tuple[Any, ...]], CelRow | CdrRow | None] | None = None
        self.backlog = False
        self.connected = False
        self.last_error: str = ""
        self.last_success: datetime | None = None
        self.rows_read = 0
        self._outage = False
        self._status = metrics.database_connection_status.labels(source=kind)
        self._lag_rows = metrics.checkpoint_lag_rows.labels(table=self.table)
        self._lag_seconds = metrics.checkpoint_lag_seconds.labels(table=self.table)
        self._newest_time: datetime | None = None
        # Watermark: the newest row time in reading order (id order: CDR end time).
        self._marks = watermarks
        self._read_newest: datetime | None = None
        if watermarks is not None:
            watermarks.register(self.position_name)
        self._pacer = ReadPacer(watermarks)  # the evaluator may ask for a read now
        self._end = (
            CdrEndReader(
                max_call_duration=settings.cdr_max_call_duration,
                lookback=max(0.0, settings.lookback_seconds),
                batch_size=settings.batch_size,
                budget=settings.max_records_per_poll,
                lookup_wait=settings.cdr_lookup_wait,
                cel_feed=settings.cel_mode != "none",
            )
            if kind == "cdr"
            else None
        )

    @property
    def source_label(self) -> str:
        epoch = int((self._pos or {}).get("epoch", 0))
        return "db" if epoch == 0 else f"db~{epoch}"

    @property
    def position(self) -> dict[str, Any] | None:
        return dict(self._pos) if self._pos is not None else None

    async def _max_id(self, info: TableInfo) -> int:
        assert self._db is not None and info.id_col
        rows = await self._db.fetch(self.dialect.select_max(info.table, info.id_col))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _time_tz(self, info: TableInfo) -> tzinfo:
        return UTC if info.time_is_aware else self.tz

    def _db_time(self, t: datetime, info: TableInfo) -> Any:
        """A UTC instant as a parameter compared with the table's time column."""
        return db_param(t, info, self.tz, self.dialect.name)

    async def _ingest(self, rows: Sequence[CelRow | CdrRow], pos: dict[str, Any]) -> int:
        for b in rows:
            t = b.eventtime if isinstance(b, CelRow) else b.calldate
            if self._newest_time is None or t > self._newest_time:
                self._newest_time = t
            w = written_at(b)  # id order is commit order
            if self._poll_written is None or w > self._poll_written:
                self._poll_written = w
            if self._read_newest is None or w > self._read_newest:
                self._read_newest = w
        if self._newest_time is not None:
            pos["newest_time"] = self._newest_time.isoformat()
        if self.kind == "cel":
            cels = [r for r in rows if isinstance(r, CelRow)]
            res = await self.store.ingest(cels, [], {self.position_name: pos})
            if cels:
                self.metrics.cels_processed.labels(source="db").inc(res.new_cels)
                if any(r.eventtype == "LINKEDID_END" for r in cels):
                    self.metrics.linkedid_end_seen.set(1)
            n = res.new_cels
        else:
            cdrs = [r for r in rows if isinstance(r, CdrRow)]
            res = await self.store.ingest([], cdrs, {self.position_name: pos})
            self.metrics.cdrs_processed.inc(res.new_cdrs)
            n = res.new_cdrs
        self._pos = pos
        return n
