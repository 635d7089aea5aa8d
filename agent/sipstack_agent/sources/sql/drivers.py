"""Read-only connection pools to the PBX database: asyncpg, aiomysql, aiosqlite.

Only SELECT statements are sent: PostgreSQL sessions are opened read-only, MySQL
sessions `SET SESSION TRANSACTION READ ONLY`, SQLite files are opened with mode=ro.
`Db` is what the rest of sources/sql/ (and resend, recordings) read through."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.parse
from collections.abc import Sequence
from typing import Any, Protocol

from ...config import DatabaseSettings
from .. import dbtls
from ..dialects import Dialect, dialect_for
from .convert import decode_text
from .table import SchemaError

__all__ = ["Db", "connect"]


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
