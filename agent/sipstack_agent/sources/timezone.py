"""DB_TIMEZONE=auto: the PBX's zone, found once per agent and shared by every reader.

* PostgreSQL: the session's `TimeZone` (what the DBA set for the server, the
  database or the role), checked against the session's current UTC offset.
* MySQL/MariaDB: `@@session.time_zone`; `SYSTEM` is resolved through
  `@@system_time_zone` and the server's current offset (NOW() against
  UTC_TIMESTAMP()). A name counts only when it is an IANA zone whose current
  offset matches; otherwise the fixed offset is used, with one WARN naming
  DB_TIMEZONE.
* SQLite, and the CSV/AMI feeds without a PostgreSQL/MySQL database: the agent
  host's zone (TZ, /etc/localtime), said in a log line at start-up.

`ZoneResolver` holds the one resolved `PbxZone`; the SQL sources resolve it
when they connect, every other consumer waits for it. It also owns the one WARN
of the clock sanity check (`suspect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from ..config import DatabaseSettings, Settings
from ..metrics import Metrics
from ..zones import (
    AUTO,
    PbxZone,
    Skew,
    host_zone,
    is_region_zone,
    judge,
    offset_at,
    offset_name,
    parse_offset,
    skew_advice,
    zones_at_offset,
)

__all__ = ["ClockCheck", "ZoneResolver", "database_zone", "start_time"]

log = logging.getLogger(__name__)

_NOT_ZONES = frozenset({"localtime", "posixrules", "default", "system"})


class _Fetcher(Protocol):
    async def fetch(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]: ...


def _text(v: object) -> str:
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8", "replace")
    return "" if v is None else str(v)


def _named(name: str, offset: int, now: datetime, *, region_only: bool) -> bool:
    """`name` is an IANA zone whose offset now is `offset` (region_only: Area/City or UTC)."""
    if not name or name.lower() in _NOT_ZONES or parse_offset(name) is not None:
        return False
    if region_only and not is_region_zone(name) and name.upper() not in ("UTC", "ETC/UTC"):
        return False
    try:
        return offset_at(name, now) == offset
    except ValueError:
        return False


async def database_zone(db: _Fetcher, dialect: str) -> PbxZone:
    """The zone the PostgreSQL / MySQL session reads and writes naive times in."""
    now = datetime.now(UTC)
    if dialect == "postgresql":
        rows = await db.fetch(
            "SELECT current_setting('TimeZone'), CAST(EXTRACT(TIMEZONE FROM now()) AS integer)"
        )
        name, offset = _text(rows[0][0]).strip(), int(_text(rows[0][1]) or 0)
        if _named(name, offset, now, region_only=False):
            return PbxZone(name, "database", "PostgreSQL TimeZone")
        return PbxZone(
            offset_name(offset), "offset", f"PostgreSQL TimeZone {name!r} is not an IANA zone"
        )
    rows = await db.fetch(
        "SELECT @@session.time_zone, @@system_time_zone, "
        "TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())"
    )
    session, system = _text(rows[0][0]).strip(), _text(rows[0][1]).strip()
    offset = round(int(_text(rows[0][2]) or 0) / 60.0) * 60
    if session.upper() != "SYSTEM":
        if _named(session, offset, now, region_only=False):
            return PbxZone(session, "database", "MySQL time_zone")
        return PbxZone(offset_name(offset), "offset", f"MySQL time_zone {session!r}")
    if _named(system, offset, now, region_only=True):
        return PbxZone(system, "database", "MySQL time_zone SYSTEM, system_time_zone")
    return PbxZone(
        offset_name(offset),
        "offset",
        f"MySQL time_zone SYSTEM, system_time_zone {system!r} at {offset_name(offset)}",
    )


def start_time(settings: Settings, zone: PbxZone) -> datetime | None:
    """START_FROM as an aware UTC instant (a time without offset is PBX time in `zone`);
    None for latest / beginning."""
    if settings.start_from_time is not None:
        t = settings.start_from_time
        return t if t.tzinfo else zone.local(t)
    sf = (settings.start_from or "latest").strip()
    if sf.lower() in ("latest", "beginning", ""):
        return None
    t = datetime.fromisoformat(sf)
    return t.astimezone(UTC) if t.tzinfo else zone.local(t)


def _needs_database(database: DatabaseSettings, enabled: bool) -> bool:
    return enabled and database.type in ("postgresql", "mysql")


class ZoneResolver:
    """The agent's one PBX zone. Configured and host zones are known at once; a
    PostgreSQL/MySQL zone once a source calls `resolve(db)` with its connection."""

    def __init__(
        self,
        database: DatabaseSettings,
        *,
        database_enabled: bool = True,
        metrics: Metrics | None = None,
        host: Callable[[], PbxZone] = host_zone,
    ) -> None:
        self.database = database
        self.metrics = metrics
        self.current: PbxZone | None = None
        self._event = asyncio.Event()
        self._lock = asyncio.Lock()
        self._subscribers: list[Callable[[PbxZone], None]] = []
        self._suspected = False
        setting = (database.timezone or AUTO).strip()
        if setting.lower() != AUTO:
            self._set(PbxZone(setting, "configured", "DB_TIMEZONE"))
        elif not _needs_database(database, database_enabled):
            self._set(host())

    def subscribe(self, fn: Callable[[PbxZone], None]) -> None:
        """Call `fn(zone)` once the zone is known (at once when it already is)."""
        if self.current is not None:
            fn(self.current)
        else:
            self._subscribers.append(fn)

    async def resolve(self, db: _Fetcher | None, dialect: str | None = None) -> PbxZone:
        """The zone; asks the database through `db` the first time (auto only)."""
        if self.current is not None:
            return self.current
        async with self._lock:
            if self.current is None:
                if db is None:
                    raise RuntimeError("DB_TIMEZONE=auto needs a database connection to resolve")
                self._set(await database_zone(db, dialect or self.database.type))
        assert self.current is not None
        return self.current

    async def wait(self, stop: asyncio.Event) -> PbxZone | None:
        """The zone once a source resolved it; None when `stop` is set first."""
        if self.current is not None:
            return self.current
        waiter = asyncio.ensure_future(self._event.wait())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, stopper):
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        return self.current

    def _set(self, zone: PbxZone) -> None:
        self.current = zone
        self._event.set()
        if self.metrics is not None:
            self.metrics.pbx_timezone.labels(zone=zone.name, found=zone.found).set(1)
        self._log(zone)
        subs, self._subscribers = self._subscribers, []
        for fn in subs:
            fn(zone)

    def _log(self, zone: PbxZone) -> None:
        if zone.found == "offset":
            log.warning(
                "PBX time zone: no single IANA zone fits (%s); reading PBX times at the fixed "
                "offset %s, which is wrong after a daylight-saving change: set DB_TIMEZONE "
                "to the PBX's zone%s",
                zone.detail,
                zone.name,
                _examples(zone.name),
            )
        elif zone.found == "host":
            level = logging.WARNING if zone.detail.startswith("no TZ") else logging.INFO
            log.log(
                level,
                "PBX time zone: DB_TIMEZONE=auto reads %s times in the agent host's zone %s; "
                "set DB_TIMEZONE if Asterisk runs in another zone (in a container: TZ or a "
                "mounted /etc/localtime)",
                "SQLite" if self.database.type == "sqlite" else "CSV/AMI",
                zone.describe(),
            )
        else:
            log.info("PBX time zone: %s", zone.describe())

    def suspect(self, table: str, skew: Skew) -> None:
        """A wrong zone is likely (see zones.judge): metric, and ONE WARN per agent."""
        if self.metrics is not None:
            self.metrics.timezone_suspect.labels(table=table).set(1)
        if self._suspected or self.current is None:
            return
        self._suspected = True
        log.warning("%s: %s", table, skew_advice(self.current, skew))

    def clear(self, table: str) -> None:
        if self.metrics is not None:
            self.metrics.timezone_suspect.labels(table=table).set(0)


class ClockCheck:
    """The zone sanity check of one reader (a table, the CSV feed): each poll's newest
    row written -> `sipstack_clock_skew_seconds`, and `zones.judge` -> the resolver's
    one WARN and `sipstack_timezone_suspect`."""

    def __init__(self, zones: ZoneResolver, metrics: Metrics, table: str, max_age: float):
        self.zones = zones
        self.table = table
        self.max_age = max_age
        self._skew = metrics.clock_skew.labels(table=table)

    def observe(self, written: datetime | None, *, live: bool) -> None:
        """`written`: the newest time a row of this poll says it was written; `live`:
        the reader had caught up before this poll (not a backlog, no reconnect)."""
        zone = self.zones.current
        if written is None or zone is None:
            return
        now = datetime.now(UTC)
        if live:
            self._skew.set((written - now).total_seconds())
        skew = judge(zone, written, now, live=live, max_age=self.max_age)
        if skew is not None:
            self._skew.set(skew.seconds)
            self.zones.suspect(self.table, skew)
        elif live:
            self.zones.clear(self.table)


def _examples(fixed: str) -> str:
    off = parse_offset(fixed)
    zones = zones_at_offset(off, datetime.now(UTC), limit=3) if off is not None else []
    if not zones:
        return ""
    also = f" ({', '.join(zones[1:])} share this offset now)" if zones[1:] else ""
    return f", e.g. DB_TIMEZONE={zones[0]}{also}"
