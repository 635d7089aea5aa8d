"""The shared database servers of the tests: throwaway databases with a SELECT-only user.

Servers: PG at $SIPSTACK_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres),
MariaDB at $SIPSTACK_TEST_MYSQL_HOST/_PORT/_USER/_PASSWORD (default 127.0.0.1:3306 root "").
The admin SQL is sipstack_agent.scratchdb's (the benches use the same).
Unreachable server: `pytest.fail` when CI=true, else `pytest.skip` with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from sipstack_agent.config import DatabaseSettings
from sipstack_agent.scratchdb import (
    MysqlAdmin,
    mysql_create,
    mysql_drop,
    pg_admin,
    pg_create,
    pg_drop,
    pg_dsn,
    pg_hostport,
)

PG_ADMIN_DSN = os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL = MysqlAdmin(
    host=os.environ.get("SIPSTACK_TEST_MYSQL_HOST", "127.0.0.1"),
    port=int(os.environ.get("SIPSTACK_TEST_MYSQL_PORT", "3306")),
    user=os.environ.get("SIPSTACK_TEST_MYSQL_USER", "root"),
    password=os.environ.get("SIPSTACK_TEST_MYSQL_PASSWORD", ""),
)
RO_PASSWORD = "ro-pass-1"

T = TypeVar("T")


def unreachable(what: str, err: BaseException) -> None:
    msg = (
        f"{what} not reachable ({type(err).__name__}: {err}); "
        "start it (see shared/spec/testing-notes.md)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion on a private loop in another thread."""

    async def wrap() -> T:
        return await coro

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, wrap()).result()


def pg_admin_dsn(dbname: str) -> str:
    """The admin's DSN of database `dbname` on the test server."""
    return pg_dsn(PG_ADMIN_DSN, dbname)


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


def server_db(dialect: str, encoding: str | None = None) -> Iterator[ServerDb]:
    """Yields a new database + SELECT-only user on the shared server; drops both after."""
    tag = uuid.uuid4().hex[:10]
    name, user = f"sipstack_t_{tag}", f"sipstack_ro_{tag}"
    if dialect == "postgresql":
        try:
            run_sync(pg_create(PG_ADMIN_DSN, name, user, RO_PASSWORD, encoding=encoding))
        except (TimeoutError, OSError) as e:
            unreachable(f"PostgreSQL at {PG_ADMIN_DSN}", e)
        host, port = pg_hostport(PG_ADMIN_DSN)
        yield ServerDb("postgresql", host, port, name, user)
        run_sync(pg_drop(PG_ADMIN_DSN, name, user))
    else:
        try:
            run_sync(mysql_create(MYSQL, name, user, RO_PASSWORD))
        except Exception as e:  # pymysql wraps connection errors in OperationalError
            if "Can't connect" in str(e) or isinstance(e, OSError | asyncio.TimeoutError):
                unreachable(f"MariaDB at {MYSQL.host}:{MYSQL.port}", e)
            raise
        yield ServerDb("mysql", MYSQL.host, MYSQL.port, name, user)
        run_sync(mysql_drop(MYSQL, name, user))


@contextlib.asynccontextmanager
async def pg_zone(server: ServerDb, zone: str, *, role: bool = False) -> AsyncIterator[None]:
    """The DBA's setting: ALTER DATABASE (or ROLE ... IN DATABASE) ... SET timezone."""
    target = f'ROLE "{server.ro_user}" IN DATABASE "{server.name}"' if role else (
        f'DATABASE "{server.name}"'
    )  # fmt: skip
    await pg_admin(PG_ADMIN_DSN, f"ALTER {target} SET timezone TO '{zone}'")
    try:
        yield
    finally:
        await pg_admin(PG_ADMIN_DSN, f"ALTER {target} RESET timezone")


def admin_settings(settings: DatabaseSettings) -> DatabaseSettings:
    """The same database as the admin (writer) user: for tests that need a privileged login."""
    if settings.type == "postgresql":
        return replace(settings, user="postgres", password="")
    if settings.type == "mysql":
        return replace(settings, user=MYSQL.user, password=MYSQL.password)
    return settings
