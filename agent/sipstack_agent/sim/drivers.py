"""The three async database drivers behind one small interface (sim.writers uses it).

asyncpg, aiomysql and aiosqlite differ in how a statement is run, how a
transaction starts and how a connection closes; each adapter here hides
exactly that and nothing else (SQL text differences live in sim.dialects).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .dialects import Value


class Driver(Protocol):
    async def execute(self, sql: str, args: Sequence[Value]) -> None: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Value]]) -> None: ...
    async def fetch(self, sql: str, args: Sequence[Value]) -> list[tuple[Any, ...]]: ...
    async def insert(self, sql: str, args: Sequence[Value], *, want_id: bool) -> int | None: ...
    async def begin(self) -> None: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...
    async def close(self) -> None: ...


class _Asyncpg:
    """asyncpg: autocommit unless a transaction was begun."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._tx: Any = None

    async def execute(self, sql: str, args: Sequence[Value]) -> None:
        await self.conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Value]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Value]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(sql, *args)]

    async def insert(self, sql: str, args: Sequence[Value], *, want_id: bool) -> int | None:
        if want_id:
            return int(await self.conn.fetchval(sql + " RETURNING id", *args))
        await self.conn.execute(sql, *args)
        return None

    async def begin(self) -> None:
        self._tx = self.conn.transaction()
        await self._tx.start()

    async def commit(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.commit()

    async def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.rollback()

    async def close(self) -> None:
        await self.conn.close()


class _Aiomysql:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Value]) -> None:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, tuple(args) or None)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Value]]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Value]) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, tuple(args) or None)
            return [tuple(r) for r in await cur.fetchall()]

    async def insert(self, sql: str, args: Sequence[Value], *, want_id: bool) -> int | None:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, tuple(args))
            return int(cur.lastrowid or 0)

    async def begin(self) -> None:
        await self.conn.begin()

    async def commit(self) -> None:
        await self.conn.commit()

    async def rollback(self) -> None:
        await self.conn.rollback()

    async def close(self) -> None:
        self.conn.close()


class _Aiosqlite:
    """aiosqlite: sqlite3 opens the transaction itself before the first write."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, args: Sequence[Value]) -> None:
        await self.conn.execute(sql, tuple(args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Value]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, args: Sequence[Value]) -> list[tuple[Any, ...]]:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def insert(self, sql: str, args: Sequence[Value], *, want_id: bool) -> int | None:
        cur = await self.conn.execute(sql, tuple(args))
        return int(cur.lastrowid or 0)

    async def begin(self) -> None:
        return None

    async def commit(self) -> None:
        await self.conn.commit()

    async def rollback(self) -> None:
        await self.conn.rollback()

    async def close(self) -> None:
        await self.conn.close()


DRIVERS: dict[str, Callable[[Any], Driver]] = {
    "postgresql": _Asyncpg,
    "mysql": _Aiomysql,
    "sqlite": _Aiosqlite,
}


async def connect_driver(dialect: str, params: Mapping[str, Any]) -> object:
    """postgresql: asyncpg.connect(**params); mysql: aiomysql.connect(**params), no
    autocommit; sqlite: aiosqlite.connect(params['database'])."""
    if dialect == "postgresql":
        import asyncpg

        return await asyncpg.connect(**params)
    if dialect == "mysql":
        import aiomysql

        return await aiomysql.connect(autocommit=False, **params)
    if dialect == "sqlite":
        import aiosqlite

        return await aiosqlite.connect(params["database"], timeout=30)
    raise ValueError(f"unknown dialect {dialect!r}")
