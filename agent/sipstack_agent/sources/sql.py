"""The SQL poller: CEL and CDR tables on PostgreSQL, MySQL/MariaDB and SQLite.

One class, `SqlSource`, for the three databases (asyncpg, aiomysql,
aiosqlite); `dialects.py` holds the SQL text. Read-only always: only SELECT
statements are sent, PostgreSQL sessions are opened read-only, MySQL sessions
`SET SESSION TRANSACTION READ ONLY`, SQLite files are opened with mode=ro.

Reading position (stored in the state store as "sql:<kind>:<table>", saved in
the same transaction as the rows it covers):

* Tables with an id column: `{"mode": "id", "id": N, "epoch": E, ...}`. Each
  poll reads `id > N ORDER BY id LIMIT batch_size`, page after page up to
  max_records_per_poll, and goes on at once while there is backlog. Ids can
  commit out of order (id 10 visible before 9): the ids skipped inside the last
  `overlap_ids` below the checkpoint are remembered as holes and re-read (one
  small indexed range query) until they appear or are older than a minute. The
  first poll after start-up or a reconnect re-reads `id > N - overlap_ids`;
  the store's de-duplication by row id makes re-reads harmless. If max(id)
  goes below the checkpoint (table truncated or restored) the reader logs it,
  counts it (sipstack_id_regressions_total) and re-anchors: epoch + 1 (the
  rows' `source` becomes "db~E" so their dedup keys cannot collide with rows
  read before), id 0, and only rows at or after the newest time read before.
* Tables without an id: `{"mode": "time", "time": ISO}`; polls read
  `time >= newest - 1 s` and every lookback/4 seconds sweep
  `time >= newest - lookback_seconds`, de-duplicated by row hash.

Naive DB times are PBX-local in the zone `ZoneResolver` found (DB_TIMEZONE,
sources/timezone.py) and converted to aware UTC; rows read live are checked
against the clock (zones.judge: a wrong zone gives one WARN and a metric); text
that is not valid UTF-8 is decoded as latin-1; NULL is "".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal, Protocol

from ..calls.derive import cdr_end
from ..config import DatabaseSettings, Settings
from ..metrics import Metrics
from ..model import CDR_COLUMNS, CDR_OPTIONAL_COLUMNS, CEL_COLUMNS, CdrRow, CelRow, row_layout
from ..rules.backoff import reconnect_delay
from ..state import StateStore
from ..watermarks import ReadPacer, Watermarks
from ..zones import PbxZone, judge, skew_advice
from . import dbtls
from .cdr_end import CdrEndReader, reading_plan
from .dialects import Dialect, dialect_for, valid_identifier
from .grants import write_privileges
from .timezone import ClockCheck, ZoneResolver, start_time

__all__ = [
    "CDR_REQUIRED",
    "CEL_REQUIRED",
    "CheckResult",
    "SchemaError",
    "SqlSource",
    "TableInfo",
    "connect",
    "db_param",
    "discover",
    "inspect",
    "row_builder",
]

log = logging.getLogger(__name__)

Kind = Literal["cel", "cdr"]

CEL_REQUIRED: tuple[str, ...] = ("eventtype", "eventtime", "uniqueid", "linkedid", "channame")
CDR_REQUIRED: tuple[str, ...] = (
    "calldate",
    "uniqueid",
    "linkedid",
    "src",
    "dst",
    "channel",
    "disposition",
    "duration",
    "billsec",
)
ID_CANDIDATES: tuple[str, ...] = ("id", "acctid", "cel_id", "cdr_id")
_CDR_INT = frozenset({"duration", "billsec"})

HOLE_TTL = 60.0  # seconds an out-of-order hole is watched
BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 60.0


class SchemaError(Exception):
    """The PBX table is missing or lacks required columns (a configuration problem)."""


# --------------------------------------------------------------------------- values


def decode_text(v: Any) -> str:
    """Column value -> str: NULL -> "", bytes as UTF-8 else latin-1 (never raises)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b.decode("latin-1")
    return str(v)


def _to_int(v: Any) -> int:
    if v is None or v == "" or v == b"":
        return 0
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return int(float(decode_text(v)))
        except ValueError:
            return 0


def _to_opt_int(v: Any) -> int | None:
    if v is None or v == "" or v == b"":
        return None
    return _to_int(v)


def to_utc(v: Any, tz: tzinfo) -> datetime | None:
    """A DB time value -> aware UTC. Naive values are PBX-local time in `tz`.

    Accepts datetime (naive or aware), ISO-like text ("2026-11-24 04:39:20.51011"),
    and numbers / numeric text as Unix epoch seconds. None when unusable.
    """
    if v is None:
        return None
    if isinstance(v, datetime):
        vz = v.tzinfo
        if vz is None:
            if tz is UTC:  # (astimezone(UTC) of a UTC time is the time itself)
                return v.replace(tzinfo=UTC)
            return v.replace(tzinfo=tz).astimezone(UTC)
        return v if vz is UTC else v.astimezone(UTC)
    if isinstance(v, int | float):
        return datetime.fromtimestamp(float(v), UTC)
    s = decode_text(v).strip()
    if not s:
        return None
    try:
        return datetime.fromtimestamp(float(s), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def written_at(row: CelRow | CdrRow) -> datetime:
    """When the PBX wrote the row: a CEL row at its event, a CDR row at its call's end."""
    return row.eventtime if isinstance(row, CelRow) else cdr_end(row)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _parse_iso(s: Any) -> datetime | None:
    if not s:
        return None
    dt = datetime.fromisoformat(str(s))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- connections


class Db(Protocol):
    dialect: Dialect

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    async def close(self) -> None: ...


async def _keep_session(con: Any) -> None:
    """asyncpg pool `reset=`: release a connection without the reset query.

    The default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release (one more statement per query on the PBX server).
    The agent takes no advisory locks, opens no cursors, never LISTENs and sets no
    session state after connecting, so there is nothing to reset; asyncpg still
    rolls back a transaction left open before it calls this."""


class _PgDb:
    def __init__(self, pool: Any, dialect: Dialect, raw_text: bool = False) -> None:
        self.pool = pool
        self.dialect = dialect
        self.raw_text = raw_text  # SQL_ASCII database: read text columns as bytes

    @classmethod
    async def open(cls, db: DatabaseSettings, pool_size: int) -> _PgDb:
        import asyncpg

        pool = await asyncpg.create_pool(
            host=db.host or "localhost",
            port=db.port or 5432,
            user=db.user or None,
            password=db.password or None,
            database=db.name or None,
            ssl=dbtls.plan(db).asyncpg_ssl(),
            timeout=db.connect_timeout,
            command_timeout=max(30.0, db.connect_timeout),
            min_size=1,
            max_size=max(1, pool_size),
            reset=_keep_session,
            server_settings={
                "default_transaction_read_only": "on",
                "application_name": "sipstack-agent",
            },
        )
        try:
            enc = await pool.fetchval("SELECT current_setting('server_encoding')")
        except BaseException:
            await pool.close()
            raise
        return cls(pool, dialect_for("postgresql"), raw_text=str(enc).upper() == "SQL_ASCII")

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self.pool.fetch(sql, *args)
        return [tuple(r) for r in rows]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 5)
        self.pool.terminate()


def _mysql_conversions() -> dict[Any, Any]:
    from decimal import Decimal

    from pymysql.constants import FIELD_TYPE
    from pymysql.converters import conversions

    conv = dict(conversions)
    for t in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        conv[t] = lambda b: Decimal(b.decode("ascii") if isinstance(b, bytes) else b)
    return conv


class _MyDb:
    def __init__(self, pool: Any, dialect: Dialect) -> None:
        self.pool = pool
        self.dialect = dialect

    @classmethod
    async def open(cls, db: DatabaseSettings, pool_size: int) -> _MyDb:
        import aiomysql

        dbtls.guard_mysql()  # a required mode refuses a server without TLS, every connection
        pool = await aiomysql.create_pool(
            minsize=1,
            maxsize=max(1, pool_size),
            host=db.host or "localhost",
            port=db.port or 3306,
            user=db.user or None,
            password=db.password or "",
            db=db.name or None,
            charset="utf8mb4",
            use_unicode=False,  # bytes: decoded by decode_text (latin-1 fallback, no crash)
            conv=_mysql_conversions(),
            autocommit=True,  # else InnoDB's REPEATABLE READ pins one snapshot forever
            connect_timeout=db.connect_timeout,
            ssl=dbtls.plan(db).context,
            init_command="SET SESSION TRANSACTION READ ONLY",
            pool_recycle=3600,
        )
        return cls(pool, dialect_for("mysql"))

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.pool.acquire() as con, con.cursor() as cur:
            await cur.execute(sql, tuple(args) if args else None)
            rows = await cur.fetchall()
        return [tuple(r) for r in rows]

    async def close(self) -> None:
        self.pool.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.wait_closed(), 5)


class _SqliteDb:
    def __init__(self, con: Any, dialect: Dialect) -> None:
        self.con = con
        self.dialect = dialect

    @classmethod
    async def open(cls, db: DatabaseSettings) -> _SqliteDb:
        import aiosqlite

        if not db.name:
            raise SchemaError("DB_NAME must be the path of the SQLite database file")
        if not await asyncio.to_thread(os.path.isfile, db.name):
            # (checked first: a failed aiosqlite connect leaves its thread finishing late)
            raise FileNotFoundError(f"SQLite database {db.name!r} does not exist")
        uri = "file:" + urllib.parse.quote(db.name) + "?mode=ro"
        con = await aiosqlite.connect(
            uri, uri=True, isolation_level=None, timeout=db.connect_timeout
        )
        con.text_factory = decode_text
        await con.execute("PRAGMA query_only = 1")
        await con.execute(f"PRAGMA busy_timeout = {int(db.connect_timeout * 1000)}")
        return cls(con, dialect_for("sqlite"))

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.con.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.con.close()


async def connect(db: DatabaseSettings, pool_size: int | None = None) -> Db:
    """Open a read-only connection pool to the PBX database."""
    d = dialect_for(db.type)
    size = pool_size if pool_size is not None else db.pool_size
    if d.name == "postgresql":
        return await _PgDb.open(db, size)
    if d.name == "mysql":
        return await _MyDb.open(db, size)
    return await _SqliteDb.open(db)


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class TableInfo:
    table: str
    kind: Kind
    columns: tuple[str, ...]  # actual column names, table order
    types: dict[str, str]  # lower name -> data type
    id_col: str | None
    time_col: str  # actual name of eventtime / calldate
    select: tuple[str, ...]  # actual names in the order of `wanted`
    wanted: tuple[str, ...]  # logical names of the selected columns ("id" first when present)
    time_is_aware: bool = False  # timestamptz / MySQL TIMESTAMP (session in UTC)
    time_is_epoch: bool = False  # sqlite numeric time
    optional: tuple[str, ...] = ()  # optional CDR columns present (recordingfile, did, ...)
    cols_sql: str = ""  # the SELECT list


async def discover(db: Db, table: str, kind: Kind) -> TableInfo:
    """Column discovery; SchemaError naming the table and missing columns."""
    d = db.dialect
    if not valid_identifier(table):
        raise SchemaError(f"table name {table!r} is not a plain SQL identifier")
    sql, args = d.columns_sql(table)
    rows = await db.fetch(sql, args)
    if not rows:
        raise SchemaError(f"table {table!r} not found (or not visible to this database user)")
    actual = {decode_text(r[0]).lower(): decode_text(r[0]) for r in rows}
    types = {decode_text(r[0]).lower(): decode_text(r[1]).lower() for r in rows}
    required = CEL_REQUIRED if kind == "cel" else CDR_REQUIRED
    missing = [c for c in required if c not in actual]
    if missing:
        raise SchemaError(
            f"table {table!r} lacks required {kind.upper()} column(s): {', '.join(missing)}"
        )
    base = CEL_COLUMNS if kind == "cel" else CDR_COLUMNS
    time_col = "eventtime" if kind == "cel" else "calldate"
    wanted: list[str] = []
    id_col = next((actual[c] for c in ID_CANDIDATES if c in actual and _is_int(types[c])), None)
    if id_col is not None:
        wanted.append("id")
    wanted.extend(c for c in base if c in actual)
    optional: tuple[str, ...] = ()
    if kind == "cdr":
        optional = tuple(c for c in CDR_OPTIONAL_COLUMNS if c in actual)
        wanted.extend(optional)
    select = tuple(id_col if c == "id" and id_col else actual[c] for c in wanted)
    ttype = types[time_col]
    # MySQL TIMESTAMP comes back in the session time zone (the server's, normally the
    # PBX's): treated like DATETIME, i.e. local time in DB_TIMEZONE.
    aware = ttype == "timestamp with time zone"
    epoch = False
    if d.name == "sqlite":
        probe = await db.fetch(d.select_time_type_probe(table, actual[time_col]))
        epoch = bool(probe) and decode_text(probe[0][0]) in ("integer", "real")
    elif any(k in ttype for k in ("int", "numeric", "decimal", "double", "real", "float")):
        epoch = True
    raw: list[str] = []
    if getattr(db, "raw_text", False):
        raw = [a for a in select if _is_text(types[a.lower()])]
    return TableInfo(
        cols_sql=d.column_list(select, raw),
        table=table,
        kind=kind,
        columns=tuple(actual.values()),
        types=types,
        id_col=id_col,
        time_col=actual[time_col],
        select=select,
        wanted=tuple(wanted),
        time_is_aware=aware,
        time_is_epoch=epoch,
        optional=optional,
    )


def _is_text(t: str) -> bool:
    return "char" in t or t == "text"


def _is_int(t: str) -> bool:
    return "int" in t or t in ("serial", "bigserial", "numeric", "")


# --------------------------------------------------------------------------- row builders


# Rows are built positionally (a dataclass's keyword call costs twice as much): a copy
# of the model's defaults with the selected columns written over it (model.row_layout).
_CEL_POS, _CEL_DEFAULTS = row_layout(CelRow)
_CDR_POS, _CDR_DEFAULTS = row_layout(CdrRow)


def _cel_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CelRow | None]:
    idx = {name: i for i, name in enumerate(info.wanted)}
    i_id = idx.get("id")
    i_time = idx["eventtime"]
    text_fields = [(_CEL_POS[c], idx[c]) for c in CEL_COLUMNS if c != "eventtime" and c in idx]
    template = _CEL_DEFAULTS
    p_time, p_id, p_source = _CEL_POS["eventtime"], _CEL_POS["row_id"], _CEL_POS["source"]

    def build(r: tuple[Any, ...]) -> CelRow | None:
        t = to_utc(r[i_time], tz)
        if t is None:
            return None
        a = template.copy()
        for p, i in text_fields:
            v = r[i]
            a[p] = v if v.__class__ is str else "" if v is None else decode_text(v)
        a[p_time] = t
        if i_id is not None:
            a[p_id] = int(r[i_id])
        a[p_source] = source()
        return CelRow(*a)

    return build


def _cdr_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CdrRow | None]:
    idx = {name: i for i, name in enumerate(info.wanted)}
    i_id = idx.get("id")
    i_time = idx["calldate"]
    i_seq = idx.get("sequence")
    text_fields = [
        (_CDR_POS[c], idx[c])
        for c in CDR_COLUMNS
        if c not in ("calldate", "sequence") and c not in _CDR_INT and c in idx
    ]
    int_fields = [(_CDR_POS[c], idx[c]) for c in CDR_COLUMNS if c in _CDR_INT and c in idx]
    opt = [(c, idx[c]) for c in info.optional]
    template = _CDR_DEFAULTS
    p_time, p_seq, p_extras = _CDR_POS["calldate"], _CDR_POS["sequence"], _CDR_POS["extras"]
    p_id, p_source = _CDR_POS["row_id"], _CDR_POS["source"]

    def build(r: tuple[Any, ...]) -> CdrRow | None:
        t = to_utc(r[i_time], tz)
        if t is None:
            return None
        a = template.copy()
        for p, i in text_fields:
            v = r[i]
            a[p] = v if v.__class__ is str else "" if v is None else decode_text(v)
        for p, i in int_fields:
            v = r[i]
            a[p] = v if v.__class__ is int else _to_int(v)
        a[p_time] = t
        if i_seq is not None:
            a[p_seq] = _to_opt_int(r[i_seq])
        if opt:
            a[p_extras] = tuple((c, decode_text(r[i])) for c, i in opt)
        if i_id is not None:
            a[p_id] = int(r[i_id])
        a[p_source] = source()
        return CdrRow(*a)

    return build


def db_param(t: datetime, info: TableInfo, tz: tzinfo, dialect: str) -> Any:
    """A UTC instant as a parameter compared with the table's time column (`tz`: the PBX zone)."""
    if info.time_is_epoch:
        return t.timestamp()
    if info.time_is_aware:
        aware = t.astimezone(UTC)
        return aware if dialect == "postgresql" else aware.replace(tzinfo=None)
    local = t.astimezone(tz).replace(tzinfo=None)
    if dialect == "sqlite":
        return local.isoformat(sep=" ")
    return local


def row_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CelRow | CdrRow | None]:
    """The row builder of a discovered table (CEL or CDR), `tz` the zone of its times."""
    if info.kind == "cel":
        return _cel_builder(info, tz, source)
    return _cdr_builder(info, tz, source)


# --------------------------------------------------------------------------- the poller


@dataclass
class _Hole:
    first_seen: float


@dataclass
class _TimeState:
    seen: dict[str, datetime] = field(default_factory=dict)  # dedup_key -> row time
    last_sweep: float = 0.0


class SqlSource:
    """Polls one PBX table (CEL or CDR) into the state store. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        kind: Kind,
        store: StateStore,
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
        self._holes: dict[int, _Hole] = {}
        self._recent: set[int] = set()  # ids read inside the overlap window
        self._reread_overlap = True  # first poll after (re)connect re-reads the overlap
        self._time = _TimeState()
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

    # ------------------------------------------------------------ lifecycle

    @property
    def source_label(self) -> str:
        epoch = int((self._pos or {}).get("epoch", 0))
        return "db" if epoch == 0 else f"db~{epoch}"

    @property
    def position(self) -> dict[str, Any] | None:
        return dict(self._pos) if self._pos is not None else None

    def status(self) -> dict[str, Any]:
        """For /status: position, connection, backlog, last success and error."""
        return {
            "name": self.position_name,
            "table": self.table,
            "mode": ("id" if self.info.id_col else "time") if self.info else None,
            "position": self.position,
            "connected": self.connected,
            "backlog": self.backlog,
            "rows_read": self.rows_read,
            "newest_row_time": _iso(self._newest_time),
            "last_success": _iso(self.last_success),
            "last_error": self.last_error,
            **(
                {"cdr_lookups_pending": len(self._end.pending), "cdr_lookups": self._end.lookups}
                if self._end is not None
                else {}
            ),
        }

    async def _ensure(self) -> TableInfo:
        if self._db is None:
            pool = max(1, min(self.dbs.pool_size, 2))
            self._db = await connect(self.dbs, pool)
            self._reread_overlap = True
        if self.zone is None:
            self.zone = await self.zones.resolve(self._db, self.dialect.name)
            self.tz = self.zone.tz
        if self.info is None:
            info = await discover(self._db, self.table, self.kind)
            self.info = info
            label = lambda: self.source_label  # noqa: E731
            if self.kind == "cel":
                self._builder = _cel_builder(info, self.tz, label)
            else:
                self._builder = _cdr_builder(info, self.tz, label)
            log.info(
                "reading %s table %r (%s mode, %d columns%s)",
                self.kind.upper(),
                self.table,
                "id" if info.id_col else "time",
                len(info.select),
                f", optional: {', '.join(info.optional)}" if info.optional else "",
            )
        if self._pos is None:
            self._pos = await self.store.get_position(self.position_name)
            if self._pos is None or self._pos.get("mode") != ("id" if self.info.id_col else "time"):
                self._pos = await self._fresh_position(self.info)
                await self.store.set_position(self.position_name, self._pos)
                log.info("%s: fresh start at %s", self.position_name, self._pos)
            self._newest_time = _parse_iso(self._pos.get("newest_time") or self._pos.get("time"))
            if (
                self._end is not None
                and self._pos["mode"] == "time"
                and "end_time" not in self._pos
            ):
                self._pos.update(self._end.upgraded_fields(self._pos, self._end.lookback))
        return self.info

    async def close(self) -> None:
        if self._db is not None and self._own_db:
            await self._db.close()
        if self._own_db:
            self._db = None
        self.connected = False

    async def _drop_connection(self) -> None:
        db, self._db = self._db, None
        if db is not None and self._own_db:
            with contextlib.suppress(Exception):
                await db.close()
        if not self._own_db:
            self._db = db
        self.connected = False
        self._reread_overlap = True
        self._live = False

    def _start_time(self) -> datetime | None:
        assert self.zone is not None
        return start_time(self.settings, self.zone)

    async def _fresh_position(self, info: TableInfo) -> dict[str, Any]:
        assert self._db is not None
        d = self.dialect
        sf = (self.settings.start_from or "latest").strip().lower()
        start = self._start_time()
        if info.id_col:
            if start is not None:
                rows = await self._db.fetch(
                    d.select_min_id_since(info.table, info.id_col, info.time_col),
                    (self._db_time(start, info),),
                )
                first = rows[0][0] if rows else None
                if first is None:
                    cp = await self._max_id(info)
                else:
                    cp = int(first) - 1
            elif sf == "beginning":
                cp = 0
            else:
                cp = await self._max_id(info)
            # floor: the overlap re-read never goes below the fresh-start anchor (no history)
            return {"mode": "id", "id": cp, "epoch": 0, "floor": cp, "start_from": sf}
        if start is not None:
            t = start
        elif sf == "beginning":
            t = datetime(1970, 1, 2, tzinfo=UTC)
        else:
            rows = await self._db.fetch(d.select_max(info.table, info.time_col))
            t = (to_utc(rows[0][0], self._time_tz(info)) if rows else None) or datetime.now(UTC)
            t += timedelta(microseconds=1)  # strictly after the newest existing row
        pos: dict[str, Any] = {
            "mode": "time",
            "time": t.isoformat(),
            "epoch": 0,
            "floor_time": t.isoformat(),
            "start_from": sf,
        }
        if self._end is not None:
            pos.update(await self._end.fresh_fields(self._db, info, self, datetime.now(UTC)))
        return pos

    async def _max_id(self, info: TableInfo) -> int:
        assert self._db is not None and info.id_col
        rows = await self._db.fetch(self.dialect.select_max(info.table, info.id_col))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _time_tz(self, info: TableInfo) -> tzinfo:
        return UTC if info.time_is_aware else self.tz

    def _db_time(self, t: datetime, info: TableInfo) -> Any:
        """A UTC instant as a parameter compared with the table's time column."""
        return db_param(t, info, self.tz, self.dialect.name)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; never raises on database trouble (reconnects)."""
        failures = 0
        while not stop.is_set():
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                self._on_error(e)
                await self._drop_connection()
                self.info = None  # rediscover columns after reconnecting
                delay = reconnect_delay(BACKOFF_INITIAL, BACKOFF_CAP, failures - 1, random.random())
                await _wait(stop, delay)
                continue
            failures = 0
            if not self.backlog:
                await self._pacer.sleep(stop, self.settings.poll_interval)
            else:
                await asyncio.sleep(0)  # let the other stages run between pages
        await self.close()

    def _on_error(self, e: BaseException) -> None:
        self._status.set(0)
        self.metrics.db_reconnects.labels(source=self.kind).inc()
        msg = f"{type(e).__name__}: {e}".strip()
        self.last_error = msg
        if not self._outage:
            self._outage = True
            if isinstance(e, SchemaError):
                log.error("%s: %s", self.position_name, e)
            else:
                log.warning(
                    "%s: database unavailable (%s); reconnecting with backoff",
                    self.position_name,
                    msg,
                )
        else:
            log.debug("%s: still unavailable: %s", self.position_name, msg)

    def _on_success(self) -> None:
        self._status.set(1)
        self.connected = True
        self.last_success = datetime.now(UTC)
        if self._outage:
            self._outage = False
            log.info("%s: database reachable again", self.position_name)

    async def poll_once(self) -> int:
        """One poll: read what is new, store it with the position. Returns rows stored.

        Raises on database errors (run() handles them); usable directly in tests.
        """
        started = datetime.now(UTC)
        self._pacer.reading()
        info = await self._ensure()
        live = self._live
        self._poll_written = None
        if info.id_col:
            n = await self._poll_ids(info)
        else:
            n = await self._poll_time(info)
        self._on_success()
        self._clock.observe(self._poll_written, live=live)
        self._live = not self.backlog
        if self._marks is not None:
            newest = self._read_newest if info.id_col else self._time_mode_mark()
            self._marks.publish(
                self.position_name,
                newest=newest,
                caught_up_at=None if self.backlog else started,
            )
        if self._newest_time is not None:
            age = (datetime.now(UTC) - self._newest_time).total_seconds()
            self._lag_seconds.set(max(0.0, age))
        return n

    # ------------------------------------------------------------ id mode

    async def _poll_ids(self, info: TableInfo) -> int:
        assert self._db is not None and self._pos is not None and info.id_col
        d = self.dialect
        db = self._db
        batch = max(1, self.settings.batch_size)
        budget = max(batch, self.settings.max_records_per_poll)
        overlap = max(0, self.settings.overlap_ids)
        stored = 0
        read = 0
        min_time = _parse_iso(self._pos.get("min_time"))
        sql = d.select_after_id(
            info.cols_sql, info.table, info.id_col, info.time_col, min_time=bool(min_time)
        )

        # 1. holes (ids skipped by out-of-order commits) and the post-(re)connect overlap
        cp = int(self._pos["id"])
        lo_hi: tuple[int, int] | None = None
        floor = int(self._pos.get("floor", 0))
        if self._reread_overlap and overlap and cp > floor:
            lo_hi = (max(floor + 1, cp - overlap + 1), cp)
        elif self._holes:
            self._track_holes(cp, [], cp, overlap)  # expire the old ones
            if self._holes:
                lo_hi = (min(self._holes), max(self._holes))
        self._reread_overlap = False
        if lo_hi is not None:
            rows = await db.fetch(d.select_id_range(info.cols_sql, info.table, info.id_col), lo_hi)
            rows = [r for r in rows if int(r[0]) not in self._recent]
            if min_time is not None:
                rows = self._filter_min_time(rows, info, min_time)
            if rows:
                stored += await self._store(rows, cp, info)
            for r in rows:
                self._holes.pop(int(r[0]), None)

        # 2. new rows, page after page; the next page is fetched while this one is stored
        def page_args(after: int, limit: int) -> list[Any]:
            args: list[Any] = [after]
            if min_time is not None:
                args.append(self._db_time(min_time, info))
            args.append(limit)
            return args

        # The first page starts AT the checkpoint row (id > cp - 1, one row more): while
        # that row is there, max(id) >= cp is proven without a second statement, so an
        # idle poll costs this one indexed query. Only when it is gone and nothing is
        # newer (max(id) < cp: table truncated or restored) is max(id) asked (step 3).
        cp = int(self._pos["id"])
        limit = min(batch, budget)
        anchored = cp > 0
        rows = await db.fetch(
            sql, page_args(cp - 1, limit + 1) if anchored else page_args(cp, limit)
        )
        cp_row_seen = False
        if anchored:
            cp_row_seen = bool(rows) and int(rows[0][0]) == cp
            rows = rows[1:] if cp_row_seen else rows[:limit]
        full = False
        while rows:
            read += len(rows)
            new_cp = int(rows[-1][0])
            full = len(rows) >= limit
            nxt: asyncio.Task[list[tuple[Any, ...]]] | None = None
            if full and read < budget:
                limit = min(batch, budget - read)
                nxt = asyncio.ensure_future(db.fetch(sql, page_args(new_cp, limit)))
            try:
                self._track_holes(cp, [int(r[0]) for r in rows], new_cp, overlap)
                stored += await self._store(rows, new_cp, info)
            except BaseException:
                if nxt is not None:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                raise
            if nxt is None:
                break
            cp = new_cp
            rows = await nxt
            if not rows:
                full = False
        self.backlog = full
        self.rows_read += read

        # 3. max(id), only for the lag of a backlog and when the checkpoint row vanished
        cp = int(self._pos["id"])
        if full or (anchored and not cp_row_seen and not read):
            max_id = await self._max_id(info)
            if max_id < cp:
                await self._reanchor(info, max_id, cp)
            else:
                self._lag_rows.set(max_id - cp)
        else:
            self._lag_rows.set(0)  # the last page was not full: all committed rows are read
        return stored

    def _filter_min_time(
        self, rows: list[tuple[Any, ...]], info: TableInfo, min_time: datetime
    ) -> list[tuple[Any, ...]]:
        i = info.wanted.index("eventtime" if self.kind == "cel" else "calldate")
        tz = self._time_tz(info)
        return [r for r in rows if (to_utc(r[i], tz) or min_time) >= min_time]

    def _track_holes(self, cp: int, ids: list[int], new_cp: int, overlap: int) -> None:
        """Remember ids skipped between cp and the ids read; give up (counted, logged)
        on those older than HOLE_TTL or below the overlap window."""
        if not overlap:
            return
        window_lo = new_cp - overlap
        now = time.monotonic()
        got = set(ids)
        prev = cp
        for i in ids:
            if i - prev > 1:
                for h in range(max(prev + 1, window_lo + 1), i):
                    if h not in got:
                        self._holes.setdefault(h, _Hole(now))
            prev = i
        self._recent.update(got)
        if len(self._recent) > 4 * overlap + 1000:
            self._recent = {i for i in self._recent if i > window_lo}
        for reason, gone in (
            ("timeout", [h for h, v in self._holes.items() if now - v.first_seen > HOLE_TTL]),
            ("window", [h for h in self._holes if h <= window_lo]),
        ):
            if not gone:
                continue
            for h in gone:
                self._holes.pop(h, None)
            self.metrics.id_holes_dropped.labels(table=self.table, reason=reason).inc(len(gone))
            log.warning(
                "%s: %d skipped id(s) of %r never appeared (%d..%d, %s); a row committed "
                "that late is not read (rolled-back inserts also leave such holes)",
                self.position_name,
                len(gone),
                self.table,
                min(gone),
                max(gone),
                f"older than {HOLE_TTL:.0f} s"
                if reason == "timeout"
                else f"below the POLL_OVERLAP_IDS={overlap} window",
            )

    async def _reanchor(self, info: TableInfo, max_id: int, cp: int) -> None:
        assert self._pos is not None
        epoch = int(self._pos.get("epoch", 0)) + 1
        newest = self._newest_time
        log.warning(
            "%s: max(id) of %r went down from checkpoint %d to %d (table truncated or "
            "restored?): re-anchoring at id 0, rows from %s on (epoch %d)",
            self.position_name,
            self.table,
            cp,
            max_id,
            newest.isoformat() if newest else "the beginning",
            epoch,
        )
        self.metrics.id_regressions.labels(table=self.table).inc()
        self._pos = {
            **self._pos,
            "id": 0,
            "floor": 0,
            "epoch": epoch,
            "min_time": _iso(newest),
            "reanchored_at": datetime.now(UTC).isoformat(),
        }
        self._holes.clear()
        self._recent.clear()
        await self.store.set_position(self.position_name, self._pos)
        self._lag_rows.set(max_id)
        self.backlog = True

    # ------------------------------------------------------------ time mode

    async def _poll_time(self, info: TableInfo) -> int:
        assert self._db is not None and self._pos is not None
        d = self.dialect
        db = self._db
        batch = max(1, self.settings.batch_size)
        budget = max(batch, self.settings.max_records_per_poll)
        lookback = max(0.0, self.settings.lookback_seconds)
        newest = _parse_iso(self._pos["time"]) or datetime.now(UTC)
        now_m = time.monotonic()
        sweep = self._reread_overlap or now_m - self._time.last_sweep >= max(lookback / 4, 1.0)
        self._reread_overlap = False
        since = newest - timedelta(seconds=lookback if sweep else 1.0)
        floor = _parse_iso(self._pos.get("floor_time"))
        if floor is not None and since < floor:
            since = floor
        if sweep:
            self._time.last_sweep = now_m
        sql = d.select_after_time(info.cols_sql, info.table, info.time_col)
        stored = read = 0
        limit = batch
        i_time = info.wanted.index("eventtime" if self.kind == "cel" else "calldate")
        tz = self._time_tz(info)
        full = False
        while read < budget:
            rows = await db.fetch(sql, (self._db_time(since, info), limit))
            read += len(rows)
            if not rows:
                break
            times = [to_utc(r[i_time], tz) for r in rows]
            last = max((t for t in times if t is not None), default=since)
            full = len(rows) >= limit
            if full and last <= since:
                # a page of rows sharing one timestamp: widen (not counted against the
                # budget, so a second with more rows than max_records_per_poll still passes)
                read -= len(rows)
                limit *= 2
                continue
            stored += await self._store_time(rows)
            if not full:
                break
            since = last
            limit = batch
        self.backlog = full
        self.rows_read += read
        # forget hashes older than the look-back window
        horizon = (_parse_iso(self._pos["time"]) or newest) - timedelta(seconds=lookback + 5)
        if len(self._time.seen) > 1000:
            self._time.seen = {k: t for k, t in self._time.seen.items() if t >= horizon}
        self._lag_rows.set(0 if not full else budget)
        if self._end is not None:
            stored += await self._poll_cdr_end(info)
        return stored

    # ------------------------------------------------------------ id-less CDR (cdr_end.py)

    @property
    def cdr_lookup_active(self) -> bool:
        """CDR rows of ended calls are fetched by uniqueid (id-less CDR table, CEL feed)."""
        return (
            self._end is not None
            and self._end.cel_feed
            and self.info is not None
            and (not self.info.id_col)
        )

    def _time_mode_mark(self) -> datetime | None:
        """Time mode: read through the position's time, or the newest call end read (CDR)."""
        pos = self._pos or {}
        known = [t for t in (_parse_iso(pos.get("time")), _parse_iso(pos.get("end_time"))) if t]
        return max(known) if known else None

    def request_cdr_lookup(self, call_key: str, uniqueids: Sequence[str], since: datetime) -> None:
        if self._end is not None:
            self._end.request(call_key, uniqueids, since)

    async def _poll_cdr_end(self, info: TableInfo) -> int:
        assert self._end is not None and self._db is not None and self._pos is not None
        run, full = self._end.due(time.monotonic(), self.settings.poll_interval)
        stored = 0
        if run:
            stored += await self._end.sweep(self._db, info, self._pos, self, full=full)
            self.backlog = self.backlog or self._end.backlog
        if self._end.pending:
            stored += await self._end.lookup(self._db, info, self)
        return stored

    def db_time(self, t: datetime, info: TableInfo) -> object:
        return self._db_time(t, info)

    def row_time(self, value: object, info: TableInfo) -> datetime | None:
        return to_utc(value, self._time_tz(info))

    def time_zone(self, info: TableInfo) -> tzinfo:
        return self._time_tz(info)

    def build_cdr(self, row: tuple[object, ...]) -> CdrRow | None:
        assert self._builder is not None
        built = self._builder(row)
        if built is None:
            self.metrics.rows_discarded.labels(reason="bad_time").inc()
        return built if isinstance(built, CdrRow) else None

    async def store_cdrs(self, rows: Sequence[CdrRow], end_time: datetime | None) -> int:
        assert self._pos is not None
        pos = dict(self._pos)
        if end_time is not None:
            pos["end_time"] = end_time.isoformat()
        return await self._ingest(rows, pos)

    async def _store_time(self, rows: list[tuple[Any, ...]]) -> int:
        assert self._builder is not None and self._pos is not None
        built = [self._builder(r) for r in rows]
        good = [b for b in built if b is not None]
        if len(good) < len(built):
            self.metrics.rows_discarded.labels(reason="bad_time").inc(len(built) - len(good))
        fresh = [b for b in good if b.dedup_key not in self._time.seen]
        newest = _parse_iso(self._pos["time"])
        for b in good:
            t = b.eventtime if isinstance(b, CelRow) else b.calldate
            self._time.seen[b.dedup_key] = t
            if newest is None or t > newest:
                newest = t
        pos = {**self._pos, "time": _iso(newest)}
        if not fresh and pos == self._pos:
            return 0
        n = await self._ingest(fresh, pos)
        return n

    # ------------------------------------------------------------ storing

    async def _store(self, rows: list[tuple[Any, ...]], new_cp: int, info: TableInfo) -> int:
        assert self._builder is not None and self._pos is not None
        built = [self._builder(r) for r in rows]
        good = [b for b in built if b is not None]
        if len(good) < len(built):
            self.metrics.rows_discarded.labels(reason="bad_time").inc(len(built) - len(good))
        pos = dict(self._pos)
        if new_cp > int(pos["id"]):
            pos["id"] = new_cp
        return await self._ingest(good, pos)

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


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    fatal: bool = False  # the agent cannot run until this is fixed


async def inspect(
    db: DatabaseSettings,
    *,
    cel: bool = True,
    cdr: bool = True,
    recent_rows: int = 5000,
    max_age: float = 6 * 3600.0,
    live_wait: float = 3.0,
    settings: Settings | None = None,
) -> list[CheckResult]:
    """Preflight of the PBX database for `sipstack-agent check` (read-only queries only)."""
    out: list[CheckResult] = []
    where = f"{db.type} {db.host}:{db.port or ''}/{db.name}" if db.type != "sqlite" else db.name
    try:
        con = await asyncio.wait_for(connect(db, 1), timeout=db.connect_timeout + 5)
    except Exception as e:
        out.append(
            CheckResult(
                "database reachable",
                False,
                f"{where}: {type(e).__name__}: {e}",
                "check DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME, the network and "
                "pg_hba.conf / MySQL user host",
                fatal=True,
            )
        )
        return out
    out.append(CheckResult("database reachable", True, where))
    d = con.dialect
    try:
        try:
            zone = await ZoneResolver(db).resolve(con, d.name)
        except Exception as e:
            out.append(
                CheckResult(
                    "pbx time zone",
                    False,
                    f"could not read the database's zone: {type(e).__name__}: {e}",
                    "set DB_TIMEZONE to the PBX's IANA zone (e.g. America/Toronto)",
                    fatal=True,
                )
            )
            return out
        out.append(zone_line(zone))
        tables: list[tuple[Kind, str]] = []
        if cdr:
            tables.append(("cdr", db.table_cdr))
        if cel:
            tables.append(("cel", db.table_cel))
        infos: list[TableInfo] = []
        for kind, table in tables:
            try:
                info = await discover(con, table, kind)
            except Exception as e:
                var = "DB_TABLE_CEL" if kind == "cel" else "DB_TABLE_CDR"
                out.append(
                    CheckResult(
                        f"{kind} table and columns",
                        False,
                        str(e),
                        f"set {var} to the table Asterisk writes, and GRANT SELECT on it",
                        fatal=True,
                    )
                )
                continue
            extra = f"; optional: {', '.join(info.optional)}" if info.optional else ""
            mode = (
                f"id column {info.id_col!r}" if info.id_col else "no id column: time-based reading"
            )
            out.append(
                CheckResult(
                    f"{kind} table and columns",
                    True,
                    f"{table}: {len(info.columns)} columns, {mode}{extra}",
                    "" if info.id_col else "an auto-increment id column makes reading exact",
                )
            )
            out.append(await _check_read_only(con, d, table, kind))
            out.append(await _check_indexes(con, d, table, kind, info))
            if kind == "cdr" and not info.id_col:
                s = settings or Settings(database=db, cel_mode="db" if cel else "none")
                plan = reading_plan(
                    info.columns,
                    db.name if d.name != "sqlite" else "",
                    table,
                    max_call_duration=s.cdr_max_call_duration,
                    lookback=s.lookback_seconds,
                    lookup_wait=s.cdr_lookup_wait,
                    cel_feed=s.cel_mode != "none",
                )
                out.append(CheckResult("cdr reading", True, plan))
            if kind == "cel":
                out.append(await _check_linkedid_end(con, d, info, recent_rows))
            infos.append(info)
        out.extend(await _check_clocks(con, infos, zone, max_age, live_wait))
    finally:
        await con.close()
    return out


def zone_line(zone: PbxZone) -> CheckResult:
    """The `check` line naming the PBX zone and how it was found."""
    if zone.found == "offset":
        return CheckResult(
            "pbx time zone",
            False,
            f"{zone.describe()}: a fixed offset is wrong after a daylight-saving change",
            "set DB_TIMEZONE to the PBX's IANA zone (e.g. America/Toronto)",
        )
    hint = "set DB_TIMEZONE if Asterisk runs in another zone" if zone.found == "host" else ""
    return CheckResult("pbx time zone", True, zone.describe(), hint)


async def _check_clocks(
    con: Db, infos: Sequence[TableInfo], zone: PbxZone, max_age: float, live_wait: float
) -> list[CheckResult]:
    """Each table's newest row against the clock; rows written while we wait `live_wait`
    seconds (tables with an id) are judged as live rows (zones.judge)."""
    d = con.dialect
    seen: list[tuple[TableInfo, datetime | None, int | None, str]] = []
    for info in infos:
        tz = UTC if info.time_is_aware else zone.tz
        try:
            rows = await con.fetch(d.select_max(info.table, info.time_col))
            newest = to_utc(rows[0][0], tz) if rows else None
            top = await con.fetch(d.select_max(info.table, info.id_col)) if info.id_col else []
            after = int(top[0][0] or 0) if top else None
            seen.append((info, newest, after, ""))
        except Exception as e:
            seen.append((info, None, None, f"could not read the newest rows: {e}"))
    if live_wait > 0 and any(after is not None for _, _, after, _ in seen):
        await asyncio.sleep(live_wait)
    out: list[CheckResult] = []
    for info, newest, after, error in seen:
        name = f"{info.kind} times"
        if error:
            out.append(CheckResult(name, False, error))
            continue
        tz = UTC if info.time_is_aware else zone.tz
        build = (_cel_builder if info.kind == "cel" else _cdr_builder)(info, tz, lambda: "db")
        live: list[CelRow | CdrRow] = []
        if after is not None and live_wait > 0:
            sql = d.select_after_id(info.cols_sql, info.table, info.id_col or "", info.time_col,
                                    min_time=False)  # fmt: skip
            try:
                live = [b for r in await con.fetch(sql, (after, 500)) if (b := build(r))]
            except Exception as e:
                out.append(CheckResult(name, False, f"could not read the newest rows: {e}"))
                continue
        out.append(_clock_result(name, info, zone, newest, live, max_age, live_wait))
    return out


def _clock_result(
    name: str,
    info: TableInfo,
    zone: PbxZone,
    newest: datetime | None,
    live: Sequence[CelRow | CdrRow],
    max_age: float,
    live_wait: float,
) -> CheckResult:
    if newest is None and not live:
        return CheckResult(name, True, f"{info.table} is empty: nothing to compare yet")
    now = datetime.now(UTC)
    written = max((written_at(b) for b in live), default=newest or now)
    skew = judge(zone, written, now, live=bool(live), max_age=max_age)
    if skew is not None:
        detail, _, fix = skew_advice(zone, skew).partition("; set ")
        return CheckResult(name, False, detail, f"set {fix}" if fix else "", fatal=True)
    ago = (now - written).total_seconds()
    how = f"{len(live)} row(s) written in the last {live_wait:g} s" if live else "newest row"
    return CheckResult(
        name, True, f"{how}: {written.isoformat()} ({ago:.0f} s ago), read in {zone.describe()}"
    )


async def _check_read_only(con: Db, d: Dialect, table: str, kind: str) -> CheckResult:
    name = f"{kind} read-only user"
    try:
        got = await write_privileges(con, d.name, table)
    except Exception as e:
        return CheckResult(name, False, f"could not read privileges: {e}")
    if got is None:
        return CheckResult(name, True, "SQLite file opened read-only (mode=ro)")
    if got.writes:
        return CheckResult(
            name,
            False,
            f"the database user can {', '.join(got.writes)} on {table}",
            "use a SELECT-only user (the agent only reads): "
            + (
                f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM <user> (and from "
                "the roles named)"
                if d.name == "postgresql"
                else "REVOKE the write privileges from the user and the roles named, "
                "or CREATE USER ... ; GRANT SELECT ON <db>.* TO ..."
            ),
        )
    if got.hidden_roles:
        return CheckResult(
            name,
            False,
            f"SELECT only on {table}, but the user may SET ROLE {', '.join(got.hidden_roles)}, "
            "whose grants it cannot read",
            "REVOKE the roles the agent's user does not need",
        )
    return CheckResult(name, True, f"SELECT only on {table}")


async def _check_indexes(
    con: Db, d: Dialect, table: str, kind: str, info: TableInfo
) -> CheckResult:
    try:
        sql, args = d.index_columns_sql(table)
        indexed = {decode_text(r[0]).lower() for r in await con.fetch(sql, args)}
    except Exception as e:
        return CheckResult(f"{kind} indexes", False, f"could not list indexes: {e}")
    # id-less CDR tables are looked up by uniqueid (cdr_end.py), not by linkedid
    want = ["uniqueid" if kind == "cdr" and not info.id_col else "linkedid", info.time_col.lower()]
    if info.id_col:
        want.insert(0, info.id_col.lower())
    missing = [c for c in want if c not in indexed]
    if missing:
        return CheckResult(
            f"{kind} indexes",
            False,
            f"{table}: no index on {', '.join(missing)}",
            "ask the PBX admin for: "
            + "; ".join(f"CREATE INDEX {table}_{c}_idx ON {table} ({c})" for c in missing),
        )
    return CheckResult(f"{kind} indexes", True, f"{table}: indexed on {', '.join(want)}")


async def _check_linkedid_end(con: Db, d: Dialect, info: TableInfo, n: int) -> CheckResult:
    order = info.id_col or info.time_col
    try:
        rows = await con.fetch(d.select_recent_eventtypes(info.table, order, "eventtype", n))
    except Exception as e:
        return CheckResult("LINKEDID_END in CEL", False, f"could not look: {e}")
    total, ends = (int(rows[0][0] or 0), int(rows[0][1] or 0)) if rows else (0, 0)
    if total == 0:
        return CheckResult(
            "LINKEDID_END in CEL",
            False,
            f"{info.table} has no rows yet",
            "make a test call; enable CEL (cel.conf enable=yes) and the cel_pgsql/cel_odbc backend",
        )
    if ends == 0:
        return CheckResult(
            "LINKEDID_END in CEL",
            False,
            f"none in the newest {total} rows: calls complete after CALL_IDLE_TIMEOUT instead",
            "add LINKEDID_END to events= in cel.conf (or events=ALL) for immediate completion",
        )
    return CheckResult("LINKEDID_END in CEL", True, f"{ends} in the newest {total} rows")
