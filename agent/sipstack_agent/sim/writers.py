"""The PBX writer: rows into the cdr / cel tables as Asterisk commits them.

One writer for the simulator, the demo, the benches and the tests. `PbxWriter`
(async) takes an asyncpg, aiomysql or aiosqlite connection; what differs
between the databases is asked from the dialect table (sim.dialects), what
differs between the drivers' APIs is one small adapter each (`_DRIVERS`).

- `write(writes)`: simulated rows (sim.timeline.Write), one transaction per call,
  one executemany per run of same-table rows (commit order kept across tables).
- `insert_cel(rows)` / `insert_cdr(rows)`: one INSERT per row, like cel_pgsql /
  cel_odbc; CelRow / CdrRow or dicts, with their ids; returns the ids.
- `transaction()`: a second connection inside an open transaction (a test holds
  an id uncommitted while the next one commits); `execute` / `fetch`: admin SQL;
  `kill_connections`, `truncate`, `load_sample`: what the tests do to the PBX.

`write_dbapi` / `write_sqlite` / `create_sqlite_pbx`: the same rows through any
DB-API 2 connection (sqlite3 for the demo).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import closing
from typing import Any
from zoneinfo import ZoneInfo

from ..model import CdrRow, CelRow
from ..scratchdb import read_sample_csv
from .ddl import create_table_statements
from .dialects import Value, db_values, dialect_of, driver_args, insert_sql, quote, row_values
from .drivers import DRIVERS, Driver, connect_driver
from .timeline import Write

Row = CelRow | CdrRow | Mapping[str, Value]


def runs(writes: Sequence[Write]) -> Iterator[tuple[str, list[Write]]]:
    """Consecutive writes of the same table (keeps commit order across tables)."""
    batch: list[Write] = []
    for w in writes:
        if batch and batch[-1].kind != w.kind:
            yield batch[0].kind, batch
            batch = []
        batch.append(w)
    if batch:
        yield batch[0].kind, batch


# ----------------------------------------------------------------------------- DB-API


def write_dbapi(
    conn: Any,
    dialect: str,
    writes: Sequence[Write],
    *,
    cdr_table: str = "cdr",
    cel_table: str = "cel",
    tz: str = "UTC",
    paramstyle: str | None = None,
    commit: bool = True,
) -> None:
    """Write rows through any DB-API 2 connection (sqlite3, pymysql, psycopg...)."""
    cur = conn.cursor()
    for kind, batch in runs(writes):
        table = cel_table if kind == "cel" else cdr_table
        sql = insert_sql(dialect, kind, table, paramstyle)
        cur.executemany(sql, [db_values(kind, w.row, dialect, tz) for w in batch])
    if commit:
        conn.commit()


def create_sqlite_pbx(path: str, *, cdr_table: str = "cdr", cel_table: str = "cel") -> None:
    """Create a SQLite PBX database (WAL, so a reader never blocks the writer)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for stmt in create_table_statements("sqlite", cdr_table, cel_table):
            conn.execute(stmt.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS "))
        conn.commit()


def write_sqlite(
    path: str,
    writes: Sequence[Write],
    *,
    cdr_table: str = "cdr",
    cel_table: str = "cel",
    tz: str = "UTC",
) -> None:
    """Append rows to a SQLite PBX database (one transaction)."""
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        write_dbapi(conn, "sqlite", writes, cdr_table=cdr_table, cel_table=cel_table, tz=tz)


# ----------------------------------------------------------------------------- async


class PbxWriter:
    """Writes CEL/CDR rows the way Asterisk does (see the module docstring).

    `await PbxWriter.connect("postgresql", dsn=...)`, or wrap a connection:
    `PbxWriter(dialect, conn, owns=True, open_conn=...)` (`open_conn` opens another
    connection for `transaction()`; `owns`: `close()` closes `conn`). `with_id=False`:
    tables without an id column (ids of the rows are dropped)."""

    def __init__(
        self,
        dialect: str,
        conn: object,
        *,
        cdr_table: str = "cdr",
        cel_table: str = "cel",
        tz: str = "UTC",
        owns: bool = False,
        with_id: bool = True,
        open_conn: Callable[[], Awaitable[object]] | None = None,
        in_transaction: bool = False,
    ) -> None:
        self.dialect = dialect
        self.conn = conn
        self.driver: Driver = DRIVERS[dialect](conn)
        self.cdr_table = cdr_table
        self.cel_table = cel_table
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self.owns = owns
        self.with_id = with_id
        self._open_conn = open_conn
        self._in_tx = in_transaction

    @classmethod
    async def connect(cls, dialect: str, **params: Any) -> PbxWriter:
        """postgresql: asyncpg.connect(**params); mysql: aiomysql.connect(**params);
        sqlite: aiosqlite.connect(params['database']). Table/tz keywords are taken out."""
        opts = {k: params.pop(k) for k in ("cdr_table", "cel_table", "tz") if k in params}

        def opener() -> Awaitable[object]:
            return connect_driver(dialect, dict(params))

        conn = await opener()
        return cls(dialect, conn, owns=True, open_conn=opener, **opts)

    def quote(self, ident: str) -> str:
        return quote(self.dialect, ident)

    # -- admin SQL ------------------------------------------------------------------

    async def create_tables(self) -> None:
        for stmt in create_table_statements(self.dialect, self.cdr_table, self.cel_table):
            try:
                await self.execute(stmt)
            except Exception as e:  # index already exists (re-runs): fine
                if "exist" not in str(e).lower() and "duplicate" not in str(e).lower():
                    raise

    async def execute(self, sql: str, *args: Value) -> None:
        """Admin SQL with the dialect's own placeholders ($1 / %s / ?), committed."""
        await self.driver.execute(sql, args)
        await self._commit()

    async def fetch(self, sql: str, *args: Value) -> list[tuple[Any, ...]]:
        return await self.driver.fetch(sql, args)

    async def _commit(self) -> None:
        if not self._in_tx:
            await self.driver.commit()

    # -- rows -----------------------------------------------------------------------

    async def write(self, writes: Sequence[Write]) -> None:
        """Simulated rows, one transaction."""
        if not writes:
            return
        if not self._in_tx:
            await self.driver.begin()
        try:
            for kind, batch in runs(writes):
                table = self.cel_table if kind == "cel" else self.cdr_table
                await self.driver.executemany(
                    insert_sql(self.dialect, kind, table),
                    [db_values(kind, w.row, self.dialect, self.tz) for w in batch],
                )
        except BaseException:
            if not self._in_tx:
                await self.driver.rollback()
            raise
        await self._commit()

    async def insert_cel(self, rows: Iterable[Row]) -> list[int]:
        """Insert CEL rows (one statement each, like Asterisk); returns their ids."""
        return await self._insert("cel", self.cel_table, rows)

    async def insert_cdr(self, rows: Iterable[Row]) -> list[int]:
        return await self._insert("cdr", self.cdr_table, rows)

    async def _insert(self, kind: str, table: str, rows: Iterable[Row]) -> list[int]:
        ids: list[int] = []
        for row in rows:
            vals = row_values(kind, row, self.dialect, self.zone)
            if not self.with_id:
                vals.pop("id", None)
            sql = insert_sql(self.dialect, kind, table, cols=list(vals), values=list(vals.values()))
            args = driver_args(self.dialect, list(vals.values()))
            new_id = await self.driver.insert(sql, args, want_id=self.with_id)
            if new_id is not None:
                ids.append(new_id)
        await self._commit()
        return ids

    async def load_sample(self, flavor: str | None = None) -> tuple[int, int]:
        """Insert the real Asterisk sample (original ids) into the cel/cdr tables."""
        flavor = flavor or ("mariadb" if self.dialect == "mysql" else "postgres")
        cels = read_sample_csv(flavor, "cel")
        cdrs = read_sample_csv(flavor, "cdr")
        await self.insert_cel(cels)
        await self.insert_cdr(cdrs)
        reset = dialect_of(self.dialect).reset_serial
        if self.with_id and reset:
            for t in (self.cel_table, self.cdr_table):
                await self.execute(reset.format(t=t, q=self.quote(t)))
        return len(cels), len(cdrs)

    # -- a second connection ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PbxWriter]:
        """A second connection inside an open transaction (committed on exit).

        Lets a test hold id 9 uncommitted while id 10 commits on `self`. SQLite
        allows one writer at a time: there this yields `self`, committing on exit."""
        if self.dialect == "sqlite" or self._open_conn is None:
            self._in_tx = True
            try:
                yield self
            finally:
                self._in_tx = False
                await self.driver.commit()
            return
        w = PbxWriter(
            self.dialect,
            await self._open_conn(),
            cdr_table=self.cdr_table,
            cel_table=self.cel_table,
            tz=self.tz,
            owns=True,
            with_id=self.with_id,
            in_transaction=True,
        )
        try:
            await w.driver.begin()
            yield w
            await w.driver.commit()
        finally:
            await w.close()

    # -- faults -----------------------------------------------------------------------

    async def kill_connections(self, user: str) -> int:
        """Terminate every server connection of `user` (a DB restart as clients see it)."""
        d = dialect_of(self.dialect)
        if d.sessions_of is None:
            return 0
        rows = await self.fetch(d.sessions_of, user)
        if d.kill_session is not None:
            for (pid,) in rows:
                with contextlib.suppress(Exception):  # the session ended meanwhile
                    await self.execute(d.kill_session.format(id=int(pid)))
        return len(rows)

    async def truncate(self, table: str) -> None:
        """Empty `table`; its ids start at 1 again."""
        for sql in dialect_of(self.dialect).truncate:
            await self.execute(sql.format(q=self.quote(table), t=table))

    async def close(self) -> None:
        if self.owns:
            await self.driver.close()
