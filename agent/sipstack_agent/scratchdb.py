"""Throwaway PostgreSQL and MariaDB databases with a SELECT-only user, for tests and bench/.

One home for the admin SQL both use: `pg_create` makes the database and a
LOGIN role that may only read it (SELECT on every table in `public`, also
on tables created later by the admin), `pg_drop` removes both (terminating
the role's sessions), `pg_dsn` points an admin DSN at another database,
`pg_admin` runs one admin statement (e.g. ALTER DATABASE ... SET timezone).
`mysql_create` / `mysql_drop` do the same on MariaDB / MySQL (`MysqlAdmin`:
where the server is and who administers it).
`StatementLog` counts the statements the server itself logged for one role
(`log_statement = 'all'` and `log_min_duration_statement = 0` set on that
role): the idle bench and the idle-cost test read PostgreSQL's own log.
`asterisk_sample_dir()` finds the real Asterisk 20 sample rows, `read_sample_csv`
reads one of its tables.
Never used by the running agent (which only ever reads the PBX database).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LoggedStatement",
    "MysqlAdmin",
    "StatementLog",
    "asterisk_sample_dir",
    "log_every_statement",
    "mysql_create",
    "mysql_drop",
    "pg_admin",
    "pg_create",
    "pg_drop",
    "pg_dsn",
    "pg_hostport",
    "read_sample_csv",
    "server_log_path",
]


def asterisk_sample_dir() -> Path:
    """shared/fixtures/asterisk20-sample: $SIPSTACK_SAMPLE_DIR, else ../shared beside the
    checkout, else /work/shared (the project checked out elsewhere)."""
    beside = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "asterisk20-sample"
    found = Path(os.environ.get("SIPSTACK_SAMPLE_DIR", str(beside)))
    return found if found.is_dir() else Path("/work/shared/fixtures/asterisk20-sample")


def read_sample_csv(flavor: str, table: str) -> list[dict[str, str]]:
    """Rows of the sample's <flavor>/<table>.csv (flavor: postgres | mariadb) as dicts."""
    with open(asterisk_sample_dir() / flavor / f"{table}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


_DSN = re.compile(r"postgresql://(?:([^@/]*)@)?([^:/]+)(?::(\d+))?/")


def pg_hostport(admin_dsn: str) -> tuple[str, int]:
    m = _DSN.match(admin_dsn)
    return (m.group(2), int(m.group(3) or 5432)) if m else ("127.0.0.1", 5432)


def pg_dsn(admin_dsn: str, dbname: str, user: str = "postgres") -> str:
    """The DSN of database `dbname` on the server of `admin_dsn`, as `user` (no password)."""
    host, port = pg_hostport(admin_dsn)
    return f"postgresql://{user}@{host}:{port}/{dbname}"


async def pg_create(
    admin_dsn: str, db: str, role: str, password: str, *, encoding: str | None = None
) -> None:
    """CREATE DATABASE `db` and a LOGIN role `role` that can only SELECT in it."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        enc = (
            f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            if encoding
            else ""
        )
        await con.execute(f'CREATE DATABASE "{db}"{enc}')
        await con.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        await con.execute(f'GRANT CONNECT ON DATABASE "{db}" TO "{role}"')
    finally:
        await con.close()
    con = await asyncpg.connect(_in_db(admin_dsn, db), timeout=5)
    try:
        await con.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        await con.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        await con.execute(
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{role}"'
        )
    finally:
        await con.close()


async def pg_drop(admin_dsn: str, db: str, role: str) -> None:
    """DROP the database (its sessions terminated) and the role, if they exist."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await con.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await con.close()


async def pg_admin(admin_dsn: str, sql: str) -> None:
    """Run one admin statement on the server of `admin_dsn`."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await con.execute(sql)
    finally:
        await con.close()


def _in_db(admin_dsn: str, db: str) -> str:
    """`admin_dsn` with its database name replaced (user and password kept)."""
    base, _, rest = admin_dsn.rpartition("/")
    query = rest.partition("?")[2]
    return f"{base}/{db}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- MariaDB / MySQL


@dataclass(frozen=True)
class MysqlAdmin:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""


async def _mysql_admin_execute(admin: MysqlAdmin, statements: list[str]) -> None:
    import aiomysql

    con = await aiomysql.connect(
        host=admin.host,
        port=admin.port,
        user=admin.user,
        password=admin.password,
        autocommit=True,
        charset="utf8mb4",
        connect_timeout=5,
    )
    try:
        async with con.cursor() as cur:
            for sql in statements:
                await cur.execute(sql)
    finally:
        con.close()


async def mysql_create(admin: MysqlAdmin, db: str, user: str, password: str) -> None:
    """CREATE DATABASE `db` and a user (from any host) that can only SELECT in it."""
    stmts = [f"CREATE DATABASE `{db}`"]
    for host in ("%", "localhost"):
        stmts.append(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        stmts.append(f"GRANT SELECT ON `{db}`.* TO '{user}'@'{host}'")
    await _mysql_admin_execute(admin, stmts)


async def mysql_drop(admin: MysqlAdmin, db: str, user: str) -> None:
    """DROP the database and the user, if they exist."""
    stmts = [f"DROP DATABASE IF EXISTS `{db}`"]
    stmts += [f"DROP USER IF EXISTS '{user}'@'{host}'" for host in ("%", "localhost")]
    await _mysql_admin_execute(admin, stmts)


# --------------------------------------------------------------------------- the server's log

# "duration: 0.05 ms  execute __asyncpg_stmt_2__: SELECT ..." / "statement: SELECT ...":
# one per executed statement (parse/bind lines and text-less duration lines do not match)
_STATEMENT = re.compile(r"LOG:  (?:duration: [\d.]+ ms  )?(?:statement|execute [^:]*): (.*)$")
DEBIAN_LOG = "/var/log/postgresql/postgresql-{major}-main.log"


@dataclass(frozen=True)
class LoggedStatement:
    user: str
    database: str
    text: str


async def server_log_path(admin_dsn: str) -> Path:
    """The file PostgreSQL logs to: pg_current_logfile() with logging_collector on,
    else (Debian's cluster, stderr redirected by pg_ctlcluster) /var/log/postgresql/."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        current = await con.fetchval("SELECT pg_current_logfile()")
        data_dir = await con.fetchval("SHOW data_directory")
        major = int(await con.fetchval("SHOW server_version_num")) // 10000
        prefix = await con.fetchval("SHOW log_line_prefix")
    finally:
        await con.close()
    if "%u" not in prefix or "%d" not in prefix:
        raise RuntimeError(f"log_line_prefix {prefix!r} lacks %u and %d: cannot tell roles apart")
    if current:
        path = Path(current)
        return path if path.is_absolute() else Path(data_dir) / path
    return Path(DEBIAN_LOG.format(major=major))


class StatementLog:
    """`log = await StatementLog.open(admin_dsn)`; `log.mark()`; ...; `log.since_mark(role)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    @classmethod
    async def open(cls, admin_dsn: str) -> StatementLog:
        log = cls(await server_log_path(admin_dsn))
        log.mark()
        return log

    def mark(self) -> None:
        """From now on: remember the current end of the log."""
        self.offset = os.path.getsize(self.path)

    def since_mark(self, user: str, database: str | None = None) -> list[LoggedStatement]:
        """Statements of `user` (in `database`) logged after the last mark(), in order."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read().decode("utf-8", "replace")
        out: list[LoggedStatement] = []
        tag = f" {user}@{database or ''}"
        current: list[str] | None = None
        for line in data.splitlines():
            if line.startswith("\t") and current is not None:
                current.append(line.strip())  # a multi-line statement goes on
                continue
            if current is not None:
                out.append(LoggedStatement(user, database or "", " ".join(current)))
                current = None
            if tag not in line:
                continue
            m = _STATEMENT.search(line)
            if m:
                current = [m.group(1).strip()]
        if current is not None:
            out.append(LoggedStatement(user, database or "", " ".join(current)))
        return out


async def log_every_statement(admin_dsn: str, role: str) -> None:
    """ALTER ROLE: the server logs every statement of `role` (its new sessions)."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await con.execute(f'ALTER ROLE "{role}" SET log_min_duration_statement = 0')
        await con.execute(f"ALTER ROLE \"{role}\" SET log_statement = 'all'")
    finally:
        await con.close()
