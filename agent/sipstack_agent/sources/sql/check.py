"""The database part of `sipstack-agent check` (admin/check.py): read-only queries only.

Reachable, the PBX zone, each table's columns, a read-only user, indexes,
LINKEDID_END, and each table's newest rows against the clock (zones.judge). One
`rules.checks.CheckResult` per line; FAIL or WARN as rules/checks.py decides."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from ...config import DatabaseSettings, Settings
from ...model import CdrRow, CelRow
from ...rules.checks import CheckResult, Status
from ...zones import PbxZone, judge, skew_advice
from ..cdr_end import reading_plan
from ..dialects import Dialect
from ..grants import write_privileges
from ..timezone import ZoneResolver
from .convert import decode_text, row_builder, to_utc, written_at
from .discovery import discover
from .drivers import Db, connect
from .table import Kind, TableInfo

__all__ = ["inspect", "zone_line"]


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
            CheckResult.fail(
                "database reachable",
                f"{where}: {type(e).__name__}: {e}",
                "check DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME, the network and "
                "pg_hba.conf / MySQL user host",
            )
        )
        return out
    out.append(CheckResult.ok("database reachable", where))
    d = con.dialect
    try:
        try:
            zone = await ZoneResolver(db).resolve(con, d.name)
        except Exception as e:
            out.append(
                CheckResult.fail(
                    "pbx time zone",
                    f"could not read the database's zone: {type(e).__name__}: {e}",
                    "set DB_TIMEZONE to the PBX's IANA zone (e.g. America/Toronto)",
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
                    CheckResult.fail(
                        f"{kind} table and columns",
                        str(e),
                        f"set {var} to the table Asterisk writes, and GRANT SELECT on it",
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
                    Status.OK,
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
                out.append(CheckResult.ok("cdr reading", plan))
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
        return CheckResult.warn(
            "pbx time zone",
            f"{zone.describe()}: a fixed offset is wrong after a daylight-saving change",
            "set DB_TIMEZONE to the PBX's IANA zone (e.g. America/Toronto)",
        )
    hint = "set DB_TIMEZONE if Asterisk runs in another zone" if zone.found == "host" else ""
    return CheckResult("pbx time zone", Status.OK, zone.describe(), hint)


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
            out.append(CheckResult.warn(name, error))
            continue
        tz = UTC if info.time_is_aware else zone.tz
        build = row_builder(info, tz, lambda: "db")
        live: list[CelRow | CdrRow] = []
        if after is not None and live_wait > 0:
            sql = d.select_after_id(info.cols_sql, info.table, info.id_col or "", info.time_col,
                                    min_time=False)  # fmt: skip
            try:
                live = [b for r in await con.fetch(sql, (after, 500)) if (b := build(r))]
            except Exception as e:
                out.append(CheckResult.warn(name, f"could not read the newest rows: {e}"))
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
        return CheckResult.ok(name, f"{info.table} is empty: nothing to compare yet")
    now = datetime.now(UTC)
    written = max((written_at(b) for b in live), default=newest or now)
    skew = judge(zone, written, now, live=bool(live), max_age=max_age)
    if skew is not None:
        detail, _, fix = skew_advice(zone, skew).partition("; set ")
        return CheckResult.fail(name, detail, f"set {fix}" if fix else "")
    ago = (now - written).total_seconds()
    how = f"{len(live)} row(s) written in the last {live_wait:g} s" if live else "newest row"
    return CheckResult.ok(
        name, f"{how}: {written.isoformat()} ({ago:.0f} s ago), read in {zone.describe()}"
    )


async def _check_read_only(con: Db, d: Dialect, table: str, kind: str) -> CheckResult:
    name = f"{kind} read-only user"
    try:
        got = await write_privileges(con, d.name, table)
    except Exception as e:
        return CheckResult.warn(name, f"could not read privileges: {e}")
    if got is None:
        return CheckResult.ok(name, "SQLite file opened read-only (mode=ro)")
    if got.writes:
        return CheckResult.warn(
            name,
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
        return CheckResult.warn(
            name,
            f"SELECT only on {table}, but the user may SET ROLE {', '.join(got.hidden_roles)}, "
            "whose grants it cannot read",
            "REVOKE the roles the agent's user does not need",
        )
    return CheckResult.ok(name, f"SELECT only on {table}")


async def _check_indexes(
    con: Db, d: Dialect, table: str, kind: str, info: TableInfo
) -> CheckResult:
    try:
        sql, args = d.index_columns_sql(table)
        indexed = {decode_text(r[0]).lower() for r in await con.fetch(sql, args)}
    except Exception as e:
        return CheckResult.warn(f"{kind} indexes", f"could not list indexes: {e}")
    # id-less CDR tables are looked up by uniqueid (cdr_end.py), not by linkedid
    want = ["uniqueid" if kind == "cdr" and not info.id_col else "linkedid", info.time_col.lower()]
    if info.id_col:
        want.insert(0, info.id_col.lower())
    missing = [c for c in want if c not in indexed]
    if missing:
        return CheckResult.warn(
            f"{kind} indexes",
            f"{table}: no index on {', '.join(missing)}",
            "ask the PBX admin for: "
            + "; ".join(f"CREATE INDEX {table}_{c}_idx ON {table} ({c})" for c in missing),
        )
    return CheckResult.ok(f"{kind} indexes", f"{table}: indexed on {', '.join(want)}")


async def _check_linkedid_end(con: Db, d: Dialect, info: TableInfo, n: int) -> CheckResult:
    order = info.id_col or info.time_col
    try:
        rows = await con.fetch(d.select_recent_eventtypes(info.table, order, "eventtype", n))
    except Exception as e:
        return CheckResult.warn("LINKEDID_END in CEL", f"could not look: {e}")
    total, ends = (int(rows[0][0] or 0), int(rows[0][1] or 0)) if rows else (0, 0)
    if total == 0:
        return CheckResult.warn(
            "LINKEDID_END in CEL",
            f"{info.table} has no rows yet",
            "make a test call; enable CEL (cel.conf enable=yes) and the cel_pgsql/cel_odbc backend",
        )
    if ends == 0:
        return CheckResult.warn(
            "LINKEDID_END in CEL",
            f"none in the newest {total} rows: calls complete after CALL_IDLE_TIMEOUT instead",
            "add LINKEDID_END to events= in cel.conf (or events=ALL) for immediate completion",
        )
    return CheckResult.ok("LINKEDID_END in CEL", f"{ends} in the newest {total} rows")
