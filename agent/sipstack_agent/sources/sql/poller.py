"""The SQL poller: one CEL or CDR table on PostgreSQL, MySQL/MariaDB or SQLite.

`SqlSource` connects (drivers.py), discovers the table (discovery.py), picks up
its position and reads it in id mode (idmode.py) or time mode (timemode.py) until
stopped, reconnecting with backoff (rules/backoff.py); the reading position is
described in the package docstring. Rows read live are checked against the clock
(sources/timezone.py ClockCheck: a wrong zone gives one WARN and a metric)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ...rules.backoff import reconnect_delay
from ..timezone import start_time
from .convert import iso, parse_iso, row_builder, to_utc
from .discovery import discover
from .drivers import connect
from .idmode import IdModeReading
from .table import SchemaError, TableInfo
from .timemode import TimeModeReading

__all__ = ["SqlSource"]

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 60.0


class SqlSource(IdModeReading, TimeModeReading):
    """Polls one PBX table (CEL or CDR) into the state store. See the package docstring."""

    # ------------------------------------------------------------ lifecycle

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
            "newest_row_time": iso(self._newest_time),
            "last_success": iso(self.last_success),
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
            self._builder = row_builder(info, self.tz, lambda: self.source_label)
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
            self._newest_time = parse_iso(self._pos.get("newest_time") or self._pos.get("time"))
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
                if self._marks is not None:  # not reading on at once any more
                    self._marks.publish(self.position_name, behind=False)
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
                behind=self.backlog,
            )
        if self._newest_time is not None:
            age = (datetime.now(UTC) - self._newest_time).total_seconds()
            self._lag_seconds.set(max(0.0, age))
        return n


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
