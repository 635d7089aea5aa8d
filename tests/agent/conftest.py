"""Shared fixtures of the agent tests: real PBX databases and the Asterisk sample.

Fixtures only; the helpers behind them are in tests/agent/support/.

Fixtures
--------
``pbx_db``            (function) parametrized over postgresql / mysql / sqlite: yields
                      ``PbxDb(settings, writer)`` (a tuple: ``settings, writer = pbx_db``).
                      ``settings`` is a DatabaseSettings for a SELECT-only user, with
                      table names unique to the test; ``writer`` is the simulator's
                      ``sipstack_agent.sim.writers.PbxWriter`` on an admin connection.
``pg_database`` / ``mysql_database``  (module) a throwaway database + SELECT-only user
                      for the test module, dropped afterwards (``support.servers.ServerDb``).
``make_pbx_db``       (function) factory: ``await make_pbx_db("mysql", with_id=False,
                      timezone="America/Toronto", cdr_extra_columns=("recordingfile",))``
                      (``freepbx=True``: FreePBX's id-less ``asteriskcdrdb.cdr`` layout)
                      for variants (``pg_sql_ascii=True``: a SQL_ASCII PostgreSQL
                      database); everything it creates is cleaned up.
``tcp_proxy``         (function) factory of cuttable TCP forwarders (``support.tcpproxy``):
                      a database restart as clients see it, without stopping the servers.
``admin_db_settings`` (function) settings -> the same database as the admin user.
``pg_statement_log``  (function) ``log = await pg_statement_log(role)``: the server logs
                      every statement of that role's new sessions; ``log.mark()``,
                      ``log.since_mark(role, db)`` read them back from PostgreSQL's own log.
``asterisk_sample``   the real Asterisk 20 sample rows (../shared/fixtures/asterisk20-sample)
                      as CSV dicts and as the CelRow/CdrRow a reader must produce.
``small_fs``          a real 8 MiB tmpfs to run out of space on (root only; other sizes
                      by indirect parametrization).

``support.servers.pg_zone(server, zone, role=False)``: the DBA's zone on a PostgreSQL
test database (ALTER DATABASE / ROLE ... IN DATABASE ... SET timezone).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from sipstack_agent.config import DatabaseSettings
from sipstack_agent.scratchdb import StatementLog, log_every_statement
from sipstack_agent.sim.writers import PbxWriter

from .support.pbxdb import PbxDb, create_pbx_db
from .support.sample import AsteriskSample
from .support.servers import PG_ADMIN_DSN, ServerDb, admin_settings, server_db
from .support.smallfs import SmallFs, mounted_tmpfs
from .support.tcpproxy import TcpProxy

DIALECTS = ("postgresql", "mysql", "sqlite")


@pytest.fixture(scope="session")
def asterisk_sample() -> AsteriskSample:
    return AsteriskSample()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[ServerDb]:
    """A PostgreSQL database for this test module + a SELECT-only role (dropped after)."""
    yield from server_db("postgresql")


@pytest.fixture(scope="module")
def pg_sql_ascii_database() -> Iterator[ServerDb]:
    """A PostgreSQL database with ENCODING SQL_ASCII (raw, possibly non-UTF-8 bytes)."""
    yield from server_db("postgresql", encoding="SQL_ASCII")


@pytest.fixture(scope="module")
def mysql_database() -> Iterator[ServerDb]:
    """A MariaDB database for this test module + a SELECT-only user (dropped after)."""
    yield from server_db("mysql")


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
        server: ServerDb | None = None
        if dialect == "postgresql":
            server = request.getfixturevalue(
                "pg_sql_ascii_database" if pg_sql_ascii else "pg_database"
            )
        elif dialect == "mysql":
            server = request.getfixturevalue("mysql_database")
        path = tmp_path / f"asterisk{len(writers) + 1}.sqlite"
        db = await create_pbx_db(
            dialect,
            server=server,
            sqlite_path=path,
            with_id=with_id,
            timezone=timezone,
            cdr_extra_columns=cdr_extra_columns,
            suffix=suffix,
            freepbx=freepbx,
        )
        writers.append(db.writer)
        return db

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


@pytest.fixture
def small_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallFs]:
    """A real 8 MiB tmpfs (mounted as root) to run out of space on; another size with
    `@pytest.mark.parametrize("small_fs", ["24m"], indirect=True)`."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    yield from mounted_tmpfs(mnt, getattr(request, "param", "8m"))
