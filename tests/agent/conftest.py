"""Shared fixtures of the agent tests: real PBX databases and the Asterisk sample.

Fixtures
--------
``pbx_db``            (function) parametrized over postgresql / mysql / sqlite: yields
                      ``PbxDb(settings, writer)`` (a tuple: ``settings, writer = pbx_db``).
                      ``settings`` is a DatabaseSettings for a SELECT-only user, with
                      table names unique to the test; ``writer`` (``PbxWriter``) writes
                      as Asterisk would through an admin connection.
``pg_database`` / ``mysql_database``  (module) a throwaway database + SELECT-only user
                      for the test module, dropped afterwards (``ServerDb``).
``make_pbx_db``       (function) factory: ``await make_pbx_db("mysql", with_id=False,
                      timezone="America/Toronto", cdr_extra_columns=("recordingfile",))``
                      (``freepbx=True``: FreePBX's id-less ``asteriskcdrdb.cdr`` layout)
                      for variants (``pg_sql_ascii=True``: a SQL_ASCII PostgreSQL
                      database); everything it creates is cleaned up.
``tcp_proxy``         (function) factory of cuttable TCP forwarders: a database restart
                      as clients see it, without stopping the shared servers.
``admin_db_settings`` (function) settings -> the same database as the admin user.
``pg_zone(server, zone, role=False)``  async context manager: the DBA's zone on a PostgreSQL
                      test database (ALTER DATABASE / ROLE ... IN DATABASE ... SET timezone).
``pg_statement_log``  (function) ``log = await pg_statement_log(role)``: the server logs
                      every statement of that role's new sessions; ``log.mark()``,
                      ``log.since_mark(role, db)`` read them back from PostgreSQL's own log.
``asterisk_sample``   the real Asterisk 20 sample rows (../shared/fixtures/asterisk20-sample)
                      as CSV dicts and as the CelRow/CdrRow a reader must produce.

Unreachable database: ``pytest.fail`` when CI=true, else ``pytest.skip`` with the reason.
Servers: PG at $SIPSTACK_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres),
MariaDB at $SIPSTACK_TEST_MYSQL_HOST/_PORT/_USER/_PASSWORD (default 127.0.0.1:3306 root "").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import errno
import os
import re
import subprocess
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from sipstack_agent.config import DatabaseSettings
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow
from sipstack_agent.scratchdb import (
    StatementLog,
    asterisk_sample_dir,
    log_every_statement,
    pg_create,
    pg_drop,
    pg_dsn,
    pg_hostport,
)
from sipstack_agent.sim.ddl import create_table_statements, freepbx_cdr_statements

SAMPLE_DIR = asterisk_sample_dir()

PG_ADMIN_DSN = os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_HOST = os.environ.get("SIPSTACK_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("SIPSTACK_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("SIPSTACK_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("SIPSTACK_TEST_MYSQL_PASSWORD", "")
RO_PASSWORD = "ro-pass-1"

DIALECTS = ("postgresql", "mysql", "sqlite")


def unreachable(what: str, err: BaseException) -> None:
    msg = (
        f"{what} not reachable ({type(err).__name__}: {err}); "
        "start it (see shared/spec/testing-notes.md)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def run_sync(coro: Awaitable[Any]) -> Any:
    """Run a coroutine to completion on a private loop in another thread."""

    async def wrap() -> Any:
        return await coro

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, wrap()).result()


def _pg_dsn(dbname: str, user: str = "postgres") -> str:
    return pg_dsn(PG_ADMIN_DSN, dbname, user)


def _pg_hostport() -> tuple[str, int]:
    return pg_hostport(PG_ADMIN_DSN)


# ----------------------------------------------------------------------------- the sample


def read_sample_csv(flavor: str, table: str) -> list[dict[str, str]]:
    """Rows of SAMPLE_DIR/<flavor>/<table>.csv (flavor: postgres | mariadb) as dicts."""
    with open(SAMPLE_DIR / flavor / f"{table}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sample_cel_rows(flavor: str = "postgres") -> list[CelRow]:
    """The CelRows a reader must produce from the sample (Asterisk wrote UTC)."""
    out = []
    for d in read_sample_csv(flavor, "cel"):
        kw: dict[str, Any] = {c: d[c] for c in CEL_COLUMNS if c != "eventtime"}
        out.append(CelRow(eventtime=_utc(d["eventtime"]), row_id=int(d["id"]), source="db", **kw))
    return out


def sample_cdr_rows(flavor: str = "postgres") -> list[CdrRow]:
    out = []
    for d in read_sample_csv(flavor, "cdr"):
        kw: dict[str, Any] = {c: d[c] for c in CDR_COLUMNS if c != "calldate"}
        for c in ("duration", "billsec"):
            kw[c] = int(kw[c] or 0)
        kw["sequence"] = int(kw["sequence"]) if kw["sequence"] != "" else None
        out.append(CdrRow(calldate=_utc(d["calldate"]), row_id=int(d["id"]), source="db", **kw))
    return out


@dataclass(frozen=True)
class AsteriskSample:
    dir: Path = SAMPLE_DIR
    read_csv: Callable[[str, str], list[dict[str, str]]] = read_sample_csv
    cel_rows: Callable[[str], list[CelRow]] = sample_cel_rows
    cdr_rows: Callable[[str], list[CdrRow]] = sample_cdr_rows


@pytest.fixture(scope="session")
def asterisk_sample() -> AsteriskSample:
    return AsteriskSample()


# ----------------------------------------------------------------------------- servers


@dataclass
class ServerDb:
    """A throwaway database on a shared server, with a SELECT-only user."""

    dialect: str
    host: str
    port: int
    name: str
    ro_user: str
    ro_password: str = RO_PASSWORD
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def settings(self, **kw: Any) -> DatabaseSettings:
        return DatabaseSettings(
            type=self.dialect,
            host=self.host,
            port=self.port,
            user=self.ro_user,
            password=self.ro_password,
            name=self.name,
            connect_timeout=5.0,
            **kw,
        )


async def _pg_create(db: str, role: str, encoding: str | None = None) -> None:
    await pg_create(PG_ADMIN_DSN, db, role, RO_PASSWORD, encoding=encoding)


async def _pg_drop(db: str, role: str) -> None:
    await pg_drop(PG_ADMIN_DSN, db, role)


async def _mysql_admin() -> Any:
    import aiomysql

    return await aiomysql.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_USER,
        password=MYSQL_PASSWORD,
        autocommit=True,
        charset="utf8mb4",
        connect_timeout=5,
    )


async def _mysql_create(db: str, user: str) -> None:
    con = await _mysql_admin()
    try:
        async with con.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{db}`")
            for host in ("%", "localhost"):
                await cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{RO_PASSWORD}'")
                await cur.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'{host}'")
    finally:
        con.close()


async def _mysql_drop(db: str, user: str) -> None:
    con = await _mysql_admin()
    try:
        async with con.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            for host in ("%", "localhost"):
                await cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
    finally:
        con.close()


def _server_db(dialect: str, encoding: str | None = None) -> Iterator[ServerDb]:
    tag = uuid.uuid4().hex[:10]
    name, user = f"sipstack_t_{tag}", f"sipstack_ro_{tag}"
    if dialect == "postgresql":
        try:
            run_sync(_pg_create(name, user, encoding))
        except (TimeoutError, OSError) as e:
            unreachable(f"PostgreSQL at {PG_ADMIN_DSN}", e)
        host, port = _pg_hostport()
        yield ServerDb("postgresql", host, port, name, user)
        run_sync(_pg_drop(name, user))
    else:
        try:
            run_sync(_mysql_create(name, user))
        except Exception as e:  # pymysql wraps connection errors in OperationalError
            if "Can't connect" in str(e) or isinstance(e, OSError | asyncio.TimeoutError):
                unreachable(f"MariaDB at {MYSQL_HOST}:{MYSQL_PORT}", e)
            raise
        yield ServerDb("mysql", MYSQL_HOST, MYSQL_PORT, name, user)
        run_sync(_mysql_drop(name, user))


async def _pg_admin(sql: str) -> None:
    import asyncpg

    con = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await con.execute(sql)
    finally:
        await con.close()


@contextlib.asynccontextmanager
async def pg_zone(server: ServerDb, zone: str, *, role: bool = False) -> AsyncIterator[None]:
    """The DBA's setting: ALTER DATABASE (or ROLE ... IN DATABASE) ... SET timezone."""
    target = f'ROLE "{server.ro_user}" IN DATABASE "{server.name}"' if role else (
        f'DATABASE "{server.name}"'
    )  # fmt: skip
    await _pg_admin(f"ALTER {target} SET timezone TO '{zone}'")
    try:
        yield
    finally:
        await _pg_admin(f"ALTER {target} RESET timezone")


@pytest.fixture(scope="module")
def pg_database() -> Iterator[ServerDb]:
    """A PostgreSQL database for this test module + a SELECT-only role (dropped after)."""
    yield from _server_db("postgresql")


@pytest.fixture(scope="module")
def pg_sql_ascii_database() -> Iterator[ServerDb]:
    """A PostgreSQL database with ENCODING SQL_ASCII (raw, possibly non-UTF-8 bytes)."""
    yield from _server_db("postgresql", encoding="SQL_ASCII")


@pytest.fixture(scope="module")
def mysql_database() -> Iterator[ServerDb]:
    """A MariaDB database for this test module + a SELECT-only user (dropped after)."""
    yield from _server_db("mysql")


# ----------------------------------------------------------------------------- the writer


_ID_LINES = re.compile(
    r"^\s*id (BIGSERIAL PRIMARY KEY|BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY|"
    r"INTEGER PRIMARY KEY AUTOINCREMENT),\s*$",
    re.M,
)
_INT_COLUMNS = frozenset({"amaflags", "duration", "billsec", "sequence"})


class PbxWriter:
    """Writes CEL/CDR rows the way Asterisk does, through an admin connection.

    Times: aware datetimes are written as naive local time in `tz` (what
    cel_pgsql / cel_odbc do without usegmtime); naive ones as given. SQLite
    stores 'YYYY-MM-DD HH:MM:SS[.ffffff]' text. Text: "" stays "" (Asterisk
    writes empty strings); None is NULL; bytes are written raw (non-UTF-8).
    A row's `row_id` (or an "id" key) is written into the id column when not None.
    """

    def __init__(
        self,
        dialect: str,
        conn: Any,
        cel_table: str,
        cdr_table: str,
        tz: str = "UTC",
        *,
        open_conn: Callable[[], Awaitable[Any]] | None = None,
        with_id: bool = True,
    ) -> None:
        self.dialect = dialect
        self.conn = conn
        self.cel_table = cel_table
        self.cdr_table = cdr_table
        self.tz = ZoneInfo(tz)
        self.with_id = with_id
        self._open_conn = open_conn
        self._extra: list[Any] = []

    # -- raw SQL --------------------------------------------------------------

    async def execute(self, sql: str, *args: Any) -> None:
        """Admin SQL with the dialect's own placeholders ($1 / %s / ?)."""
        if self.dialect == "postgresql":
            await self.conn.execute(sql, *args)
        elif self.dialect == "mysql":
            async with self.conn.cursor() as cur:
                await cur.execute(sql, args or None)
        else:
            await self.conn.execute(sql, args)
            await self.conn.commit()

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.dialect == "postgresql":
            return [tuple(r) for r in await self.conn.fetch(sql, *args)]
        if self.dialect == "mysql":
            async with self.conn.cursor() as cur:
                await cur.execute(sql, args or None)
                return list(await cur.fetchall())
        async with self.conn.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    # -- rows -----------------------------------------------------------------

    def _time(self, v: Any) -> Any:
        if isinstance(v, datetime):
            if v.tzinfo is not None:
                v = v.astimezone(self.tz).replace(tzinfo=None)
            if self.dialect == "sqlite":
                return v.isoformat(sep=" ")
            return v
        if isinstance(v, str) and self.dialect != "sqlite":
            return datetime.fromisoformat(v)
        return v

    def _values(
        self, row: CelRow | CdrRow | Mapping[str, Any], columns: Sequence[str], timecol: str
    ) -> dict[str, Any]:
        if isinstance(row, CelRow | CdrRow):
            d: dict[str, Any] = {c: getattr(row, c) for c in columns}
            if isinstance(row, CdrRow):
                d.update(dict(row.extras))
            if row.row_id is not None:
                d["id"] = row.row_id
        else:
            d = dict(row)
            if "row_id" in d:
                rid = d.pop("row_id")
                if rid is not None:
                    d["id"] = rid
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k == timecol:
                v = self._time(v)
            elif k in _INT_COLUMNS or k == "id":
                v = int(v) if v not in ("", None) else None
            out[k] = v
        if not self.with_id:
            out.pop("id", None)
        return out

    def _ph(self, i: int, v: Any) -> str:
        if self.dialect == "postgresql":
            return f"${i}"
        if self.dialect == "mysql":
            # raw (non-UTF-8) bytes go in as hex: aiomysql 0.3 cannot escape bytes parameters
            return "UNHEX(%s)" if isinstance(v, bytes) else "%s"
        return "CAST(? AS TEXT)" if isinstance(v, bytes) else "?"

    async def _insert(
        self, table: str, rows: Iterable[Any], columns: Sequence[str], timecol: str
    ) -> list[int]:
        ids: list[int] = []
        for row in rows:
            vals = self._values(row, columns, timecol)
            cols = list(vals)
            q = self._quote
            phs = ", ".join(self._ph(i + 1, vals[c]) for i, c in enumerate(cols))
            sql = f"INSERT INTO {q(table)} ({', '.join(q(c) for c in cols)}) VALUES ({phs})"
            args = [vals[c] for c in cols]
            if self.dialect == "mysql":
                args = [a.hex() if isinstance(a, bytes) else a for a in args]
            if self.dialect == "postgresql":
                if self.with_id:
                    ids.append(await self.conn.fetchval(sql + " RETURNING id", *args))
                else:
                    await self.conn.execute(sql, *args)
            elif self.dialect == "mysql":
                async with self.conn.cursor() as cur:
                    await cur.execute(sql, args)
                    ids.append(cur.lastrowid)
            else:
                cur = await self.conn.execute(sql, args)
                ids.append(cur.lastrowid or 0)
        if self.dialect == "sqlite" and not getattr(self, "_in_tx", False):
            await self.conn.commit()
        return ids

    def _quote(self, ident: str) -> str:
        return f"`{ident}`" if self.dialect == "mysql" else f'"{ident}"'

    async def insert_cel(self, rows: Iterable[CelRow | Mapping[str, Any]]) -> list[int]:
        """Insert CEL rows (one statement each, like Asterisk); returns their ids."""
        return await self._insert(self.cel_table, rows, CEL_COLUMNS, "eventtime")

    async def insert_cdr(self, rows: Iterable[CdrRow | Mapping[str, Any]]) -> list[int]:
        return await self._insert(self.cdr_table, rows, CDR_COLUMNS, "calldate")

    async def load_sample(
        self, sample: AsteriskSample | None = None, flavor: str | None = None
    ) -> tuple[int, int]:
        """Insert the real Asterisk sample (original ids) into the cel/cdr tables."""
        flavor = flavor or ("mariadb" if self.dialect == "mysql" else "postgres")
        cels = read_sample_csv(flavor, "cel")
        cdrs = read_sample_csv(flavor, "cdr")
        await self.insert_cel(cels)
        await self.insert_cdr(cdrs)
        if self.dialect == "postgresql" and self.with_id:
            for t in (self.cel_table, self.cdr_table):
                await self.execute(
                    f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                    f'(SELECT max(id) FROM "{t}"))'
                )
        return len(cels), len(cdrs)

    # -- transactions on a second connection ------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PbxWriter]:
        """A second admin connection inside an open transaction (committed on exit).

        Lets a test hold id 9 uncommitted while id 10 commits on `self`.
        SQLite allows one writer at a time: there this yields a writer that
        simply shares the main connection.
        """
        if self.dialect == "sqlite" or self._open_conn is None:
            self._in_tx = True
            try:
                yield self
            finally:
                self._in_tx = False
                await self.conn.commit()
            return
        conn = await self._open_conn()
        w = PbxWriter(
            self.dialect, conn, self.cel_table, self.cdr_table, str(self.tz), with_id=self.with_id
        )
        try:
            if self.dialect == "postgresql":
                tx = conn.transaction()
                await tx.start()
                yield w
                await tx.commit()
            else:
                await conn.begin()
                yield w
                await conn.commit()
        finally:
            if self.dialect == "postgresql":
                await conn.close()
            else:
                conn.close()

    # -- faults -------------------------------------------------------------------

    async def kill_connections(self, user: str) -> int:
        """Terminate every server connection of `user` (a DB restart as clients see it)."""
        if self.dialect == "postgresql":
            rows = await self.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", user
            )
            return len(rows)
        if self.dialect == "mysql":
            rows = await self.fetch(
                "SELECT id FROM information_schema.processlist WHERE user = %s", user
            )
            for (pid,) in rows:
                with contextlib.suppress(Exception):
                    await self.execute(f"KILL CONNECTION {int(pid)}")
            return len(rows)
        return 0

    async def truncate(self, table: str) -> None:
        if self.dialect == "postgresql":
            await self.execute(f'TRUNCATE "{table}" RESTART IDENTITY')
        elif self.dialect == "mysql":
            await self.execute(f"TRUNCATE TABLE `{table}`")
        else:
            await self.execute(f'DELETE FROM "{table}"')
            await self.execute("DELETE FROM sqlite_sequence WHERE name = ?", table)

    async def close(self) -> None:
        if self.dialect == "postgresql":
            await self.conn.close()
        elif self.dialect == "mysql":
            self.conn.close()
        else:
            await self.conn.close()


class PbxDb(NamedTuple):
    settings: DatabaseSettings
    writer: PbxWriter


def table_ddl(
    dialect: str,
    cdr_table: str,
    cel_table: str,
    *,
    with_id: bool = True,
    cdr_extra_columns: Sequence[str] = (),
) -> list[str]:
    stmts = create_table_statements(dialect, cdr_table=cdr_table, cel_table=cel_table)
    if not with_id:
        stmts = [_ID_LINES.sub("", s) for s in stmts]
    if cdr_extra_columns:
        typ = "TEXT" if dialect == "sqlite" else "VARCHAR(255)"
        q = (lambda s: f"`{s}`") if dialect == "mysql" else (lambda s: f'"{s}"')
        stmts += [f"ALTER TABLE {q(cdr_table)} ADD COLUMN {q(c)} {typ}" for c in cdr_extra_columns]
    return stmts


@pytest.fixture
async def make_pbx_db(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[PbxDb]]]:
    """Factory for PBX databases with tables unique to this test (see module docstring)."""
    writers: list[PbxWriter] = []

    async def make(
        dialect: str,
        *,
        with_id: bool = True,
        timezone: str = "UTC",
        cdr_extra_columns: Sequence[str] = (),
        suffix: str = "",
        pg_sql_ascii: bool = False,
        freepbx: bool = False,
    ) -> PbxDb:
        n = len(writers) + 1
        tag = uuid.uuid4().hex[:6]
        cel_table, cdr_table = f"cel_{tag}{suffix}", f"cdr_{tag}{suffix}"
        ddl = table_ddl(
            dialect, cdr_table, cel_table, with_id=with_id, cdr_extra_columns=cdr_extra_columns
        )
        if freepbx:  # FreePBX's id-less CDR table (the CEL table keeps its id)
            ddl = [s for s in ddl if cdr_table not in s]
            ddl += freepbx_cdr_statements(dialect, cdr_table)
            with_id = False
        opener: Callable[[], Awaitable[Any]]
        if dialect == "postgresql":
            import asyncpg

            server: ServerDb = request.getfixturevalue(
                "pg_sql_ascii_database" if pg_sql_ascii else "pg_database"
            )
            dsn = _pg_dsn(server.name)

            def opener() -> Awaitable[Any]:
                return asyncpg.connect(dsn, timeout=5)

            conn = await opener()
            settings = server.settings(table_cel=cel_table, table_cdr=cdr_table, timezone=timezone)
        elif dialect == "mysql":
            import aiomysql

            server = request.getfixturevalue("mysql_database")

            def opener() -> Awaitable[Any]:
                return aiomysql.connect(
                    host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD,
                    db=server.name, autocommit=True, charset="utf8mb4", connect_timeout=5,
                )  # fmt: skip

            conn = await opener()
            settings = server.settings(table_cel=cel_table, table_cdr=cdr_table, timezone=timezone)
        else:
            import aiosqlite

            path = tmp_path / f"asterisk{n}.sqlite"

            async def opener() -> Any:
                return await aiosqlite.connect(path)

            conn = await opener()
            settings = DatabaseSettings(
                type="sqlite",
                name=str(path),
                table_cel=cel_table,
                table_cdr=cdr_table,
                timezone=timezone,
            )
        writer = PbxWriter(
            dialect, conn, cel_table, cdr_table, timezone, open_conn=opener, with_id=with_id
        )
        writers.append(writer)
        for stmt in ddl:
            await writer.execute(stmt)
        return PbxDb(settings, writer)

    yield make
    for w in writers:
        with contextlib.suppress(Exception):
            await w.close()


@pytest.fixture(params=DIALECTS)
async def pbx_db(
    request: pytest.FixtureRequest, make_pbx_db: Callable[..., Awaitable[PbxDb]]
) -> PbxDb:
    """(DatabaseSettings of a SELECT-only user, PbxWriter) for postgresql / mysql / sqlite."""
    return await make_pbx_db(request.param)


class TcpProxy:
    """A TCP forwarder the test can cut: the database "restarts" as the client sees it
    (established connections drop, new ones are refused) without touching the server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self._writers.update((w, uw))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for t in (asyncio.create_task(pipe(r, uw)), asyncio.create_task(pipe(ur, w))):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def cut(self) -> None:
        """Stop listening and drop every connection (the server went away)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        for t in list(self._tasks):
            t.cancel()

    async def resume(self) -> None:
        """Listen again on the same port (the server is back)."""
        await self.start()

    async def close(self) -> None:
        await self.cut()


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[Callable[[str, int], Awaitable[TcpProxy]]]:
    """``proxy = await tcp_proxy(host, port)``: a cuttable TCP forwarder (see TcpProxy)."""
    proxies: list[TcpProxy] = []

    async def make(host: str, port: int) -> TcpProxy:
        p = TcpProxy(host, port)
        await p.start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        await p.close()


def admin_settings(settings: DatabaseSettings) -> DatabaseSettings:
    """The same database as the admin (writer) user: for tests that need a privileged login."""
    if settings.type == "postgresql":
        return replace(settings, user="postgres", password="")
    if settings.type == "mysql":
        return replace(settings, user=MYSQL_USER, password=MYSQL_PASSWORD)
    return settings


@pytest.fixture
def admin_db_settings() -> Callable[[DatabaseSettings], DatabaseSettings]:
    """``admin_db_settings(settings)``: DatabaseSettings of the admin user for that database."""
    return admin_settings


@pytest.fixture
def pg_statement_log() -> Callable[[str], Awaitable[StatementLog]]:
    """``log = await pg_statement_log(role)`` (see sipstack_agent.scratchdb.StatementLog)."""

    async def make(role: str) -> StatementLog:
        await log_every_statement(PG_ADMIN_DSN, role)
        return await StatementLog.open(PG_ADMIN_DSN)

    return make


@dataclass(frozen=True)
class SmallFs:
    """A real, small filesystem: `path` is its mount point; `fill()` uses up the rest."""

    path: Path

    def fill(self) -> Path:
        """Write a file here until the filesystem says ENOSPC; returns the file."""
        filler = self.path / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        return filler


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    """A real 8 MiB tmpfs (mounted as root) to run out of space on."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield SmallFs(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
