"""A PBX database for one test: tables unique to it, a SELECT-only reader, a writer.

`await create_pbx_db("mysql", server=..., with_id=False, timezone="America/Toronto",
cdr_extra_columns=("recordingfile",))` (`freepbx=True`: FreePBX's id-less cdr
layout) gives `PbxDb(settings, writer)`: `settings` is a DatabaseSettings for the
SELECT-only user of `server` (SQLite: the file `sqlite_path`), `writer` the
simulator's `PbxWriter` on an admin connection, writing as Asterisk would.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from sipstack_agent.config import DatabaseSettings
from sipstack_agent.sim.ddl import table_statements
from sipstack_agent.sim.writers import PbxWriter

from .servers import MYSQL, ServerDb, pg_admin_dsn


class PbxDb(NamedTuple):
    settings: DatabaseSettings
    writer: PbxWriter


def admin_opener(
    dialect: str, server: ServerDb | None, sqlite_path: Path
) -> Callable[[], Awaitable[object]]:
    """Opens an admin connection to the test's database (autocommit, as a PBX writes)."""
    if dialect == "postgresql":
        import asyncpg

        assert server is not None
        dsn = pg_admin_dsn(server.name)
        return lambda: asyncpg.connect(dsn, timeout=5)
    if dialect == "mysql":
        import aiomysql

        assert server is not None
        db = server.name
        return lambda: aiomysql.connect(
            host=MYSQL.host, port=MYSQL.port, user=MYSQL.user, password=MYSQL.password,
            db=db, autocommit=True, charset="utf8mb4", connect_timeout=5,
        )  # fmt: skip
    import aiosqlite

    return lambda: aiosqlite.connect(sqlite_path)


async def create_pbx_db(
    dialect: str,
    *,
    server: ServerDb | None,
    sqlite_path: Path,
    with_id: bool = True,
    timezone: str = "UTC",
    cdr_extra_columns: Sequence[str] = (),
    suffix: str = "",
    freepbx: bool = False,
) -> PbxDb:
    tag = uuid.uuid4().hex[:6]
    cel_table, cdr_table = f"cel_{tag}{suffix}", f"cdr_{tag}{suffix}"
    ddl = table_statements(
        dialect,
        cdr_table,
        cel_table,
        with_id=with_id,
        cdr_extra_columns=cdr_extra_columns,
        freepbx=freepbx,
    )
    opener = admin_opener(dialect, server, sqlite_path)
    writer = PbxWriter(
        dialect,
        await opener(),
        cdr_table=cdr_table,
        cel_table=cel_table,
        tz=timezone,
        owns=True,
        with_id=with_id and not freepbx,
        open_conn=opener,
    )
    tables = {"table_cel": cel_table, "table_cdr": cdr_table, "timezone": timezone}
    if server is not None:
        settings = server.settings(**tables)
    else:
        settings = DatabaseSettings(type="sqlite", name=str(sqlite_path), **tables)
    try:
        for stmt in ddl:
            await writer.execute(stmt)
    except BaseException:
        await writer.close()
        raise
    return PbxDb(settings, writer)
