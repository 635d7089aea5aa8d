"""DB_SSLMODE means what libpq's modes mean, on every connection the agent opens.

Against a real throwaway PostgreSQL cluster with ssl=on (initdb, a CA and a
server certificate made with openssl for this test), and against the shared
PostgreSQL and MariaDB servers, which offer no TLS (a required mode must fail
there, never go on in clear text)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings
from sipstack_agent.recordings.detect import RecordingsTable
from sipstack_agent.sources import dbtls
from sipstack_agent.sources.sql.drivers import connect

# ----------------------------------------------------------------------------- certificates


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             cwd=d)  # fmt: skip
    return d / f"{name}.crt"


def make_server_cert(d: Path, ca: str, san: str) -> tuple[Path, Path]:
    (d / "ext.cnf").write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pbx-db",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt",
             cwd=d)  # fmt: skip
    return d / "server.crt", d / "server.key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class TlsPg:
    port: int
    ca: Path  # signed the server's certificate (SAN: DNS:localhost only)
    other_ca: Path  # signed nothing the server has


@pytest.fixture(scope="module")
def tls_pg() -> Iterator[TlsPg]:
    """A throwaway PostgreSQL cluster on its own port with ssl=on (the shared server stays
    as it is)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl and shutil.which("openssl")):
        pytest.skip("initdb/pg_ctl/openssl not installed")
    d = Path(tempfile.mkdtemp(prefix="sipstack-tlspg-"))  # outside pytest's 0700 root dir
    ca = make_ca(d, "ca")
    other = make_ca(d, "other")
    crt, key = make_server_cert(d, "ca", "DNS:localhost")
    data = d / "data"
    as_pg: list[str] = ["su", "postgres", "-c"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(d, "postgres")
        for f in (crt, key):
            shutil.chown(f, "postgres")
    key.chmod(0o600)

    def run(cmd: str) -> None:
        subprocess.run([*as_pg, cmd] if as_pg else ["sh", "-c", cmd], check=True,
                       capture_output=True)  # fmt: skip

    run(f"{initdb} -D {data} -A trust -U postgres")
    port = _free_port()
    with (data / "postgresql.conf").open("a") as f:
        f.write(f"port={port}\nlisten_addresses='127.0.0.1'\nunix_socket_directories='{d}'\n"
                f"ssl=on\nssl_cert_file='{crt}'\nssl_key_file='{key}'\n")  # fmt: skip
    run(f"{pg_ctl} -D {data} -l {d}/log -w -t 60 start")
    try:
        yield TlsPg(port, ca, other)
    finally:
        run(f"{pg_ctl} -D {data} -m immediate -w stop")
        shutil.rmtree(d, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class TlsMy:
    port: int
    ca: Path
    other_ca: Path


@pytest.fixture(scope="module")
def tls_mysql() -> Iterator[TlsMy]:
    """A throwaway MariaDB (mariadb-install-db + mariadbd) on its own port with TLS."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd")
    if not (install and server and shutil.which("openssl")):
        pytest.skip("mariadb-install-db/mariadbd/openssl not installed")
    d = Path(tempfile.mkdtemp(prefix="sipstack-tlsmy-"))
    ca, other = make_ca(d, "ca"), make_ca(d, "other")
    crt, key = make_server_cert(d, "ca", "DNS:localhost")
    me = "root" if os.geteuid() == 0 else str(os.getuid())
    subprocess.run([install, "--no-defaults", f"--datadir={d}/data", f"--user={me}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True)  # fmt: skip
    port = _free_port()
    log = (d / "log").open("wb")
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={d}/data", f"--user={me}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={d}/sock", f"--pid-file={d}/pid",
         f"--ssl-ca={ca}", f"--ssl-cert={crt}", f"--ssl-key={key}"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        for _ in range(600):  # readiness: the port accepts connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, (d / "log").read_text()
            time.sleep(0.1)
        yield TlsMy(port, ca, other)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def my_settings(srv: TlsMy, host: str, mode: str, ca: Path | None) -> DatabaseSettings:
    return DatabaseSettings(
        type="mysql", host=host, port=srv.port, user="root", name="mysql",
        sslmode=mode, sslrootcert=str(ca) if ca else "", connect_timeout=10.0,
    )  # fmt: skip


MY_TLS = (
    "SELECT VARIABLE_VALUE <> '', SLEEP(0.2) FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME = 'SSL_CIPHER'"
)


def pg_settings(srv: TlsPg, host: str, mode: str, ca: Path | None) -> DatabaseSettings:
    return DatabaseSettings(
        type="postgresql", host=host, port=srv.port, user="postgres", name="postgres",
        sslmode=mode, sslrootcert=str(ca) if ca else "", connect_timeout=10.0,
    )  # fmt: skip


PG_TLS = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"

# ----------------------------------------------------------------------------- decision table


@pytest.mark.parametrize(
    ("mode", "ca", "tried", "required", "chain", "host"),
    [
        ("", False, True, False, False, False),  # libpq's default: prefer
        ("disable", False, False, False, False, False),
        ("allow", False, True, False, False, False),
        ("prefer", True, True, False, False, False),  # prefer never verifies
        ("require", False, True, True, False, False),
        ("require", True, True, True, True, False),  # libpq: require + root CA = verify-ca
        ("verify-ca", True, True, True, True, False),
        ("verify-full", True, True, True, True, True),
    ],
)
def test_modes_mean_what_libpq_says(
    tmp_path: Path, mode: str, ca: bool, tried: bool, required: bool, chain: bool, host: bool
) -> None:
    root = make_ca(tmp_path, "root") if ca else None
    p = dbtls.plan(DatabaseSettings(type="mysql", sslmode=mode, sslrootcert=str(root or "")))
    assert (p.context is not None, p.required, p.verify_chain, p.verify_host) == (
        tried, required, chain, host,
    )  # fmt: skip
    if p.context is not None:
        assert p.context.check_hostname is host
        assert (p.context.verify_mode == ssl.CERT_REQUIRED) is chain
        assert p.context.minimum_version >= ssl.TLSVersion.TLSv1_2
    want_pg = mode if mode in ("disable", "allow", "prefer") else p.context
    if not mode:
        want_pg = None  # asyncpg's own default: libpq's prefer (the TLS server test checks)
    assert p.asyncpg_ssl() == want_pg


# ----------------------------------------------------------------------------- real TLS server


@pytest.mark.parametrize(
    ("mode", "host", "ca", "tls"),
    [
        ("", "127.0.0.1", None, True),  # default prefer: encrypted when the server offers it
        ("disable", "127.0.0.1", None, False),
        ("allow", "127.0.0.1", None, False),  # plaintext first, as libpq
        ("require", "127.0.0.1", "other", True),  # no DB_SSLROOTCERT: encrypted, unverified
        ("verify-ca", "127.0.0.1", "ca", True),  # no host name check
        ("verify-full", "localhost", "ca", True),
    ],
)
async def test_postgresql_modes_against_a_tls_server(
    tls_pg: TlsPg, mode: str, host: str, ca: str | None, tls: bool
) -> None:
    root = {"ca": tls_pg.ca, "other": None}.get(ca or "")
    db = await connect(pg_settings(tls_pg, host, mode, root), 2)
    try:
        assert await db.fetch(PG_TLS) == [(tls,)]
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("mode", "host", "ca", "error"),
    [
        ("verify-full", "127.0.0.1", "ca", "(?i)hostname|ip address mismatch"),
        ("verify-ca", "localhost", "other", "(?i)certificate verify failed"),
        ("require", "localhost", "other", "(?i)certificate verify failed"),  # CA given: checked
        ("verify-full", "localhost", None, "(?i)certificate verify failed"),  # system CAs only
    ],
)
async def test_postgresql_refuses_an_unverified_server(
    tls_pg: TlsPg, mode: str, host: str, ca: str | None, error: str
) -> None:
    root = {"ca": tls_pg.ca, "other": tls_pg.other_ca}.get(ca or "")
    with pytest.raises(ssl.SSLError, match=error):
        await connect(pg_settings(tls_pg, host, mode, root), 1)


async def test_the_recordings_table_connection_uses_the_same_tls(tls_pg: TlsPg) -> None:
    settings = dataclasses.replace(
        pg_settings(tls_pg, "localhost", "verify-full", tls_pg.ca), table_recordings="rec"
    )
    table = RecordingsTable(settings, ["linkedid=linkedid", "filename=filename"])
    con = await table._connect()
    try:
        assert await con.fetch(PG_TLS) == [(True,)]
    finally:
        await con.close()
    wrong = RecordingsTable(dataclasses.replace(settings, sslrootcert=str(tls_pg.other_ca)),
                            ["linkedid=linkedid", "filename=filename"])  # fmt: skip
    with pytest.raises(ssl.SSLError):
        await wrong.fetch(["1.1"], [])


@pytest.mark.parametrize(
    ("mode", "host", "ca", "tls"),
    [
        ("", "127.0.0.1", None, True),  # default prefer: encrypted when offered
        ("disable", "127.0.0.1", None, False),
        ("require", "127.0.0.1", None, True),
        ("verify-ca", "127.0.0.1", "ca", True),
        ("verify-full", "localhost", "ca", True),
    ],
)
async def test_mariadb_modes_against_a_tls_server_on_every_pool_connection(
    tls_mysql: TlsMy, mode: str, host: str, ca: str | None, tls: bool
) -> None:
    root = tls_mysql.ca if ca else None
    db = await connect(my_settings(tls_mysql, host, mode, root), 3)
    try:
        rows = await asyncio.gather(*(db.fetch(MY_TLS) for _ in range(3)))  # 3 connections
        assert [r[0][0] for r in rows] == [int(tls)] * 3
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("mode", "host", "ca", "error"),
    [
        ("verify-full", "127.0.0.1", "ca", "(?i)hostname|ip address mismatch"),
        ("verify-ca", "localhost", "other", "(?i)certificate verify failed"),
        ("require", "localhost", "other", "(?i)certificate verify failed"),
    ],
)
async def test_mariadb_refuses_an_unverified_server(
    tls_mysql: TlsMy, mode: str, host: str, ca: str, error: str
) -> None:
    root = {"ca": tls_mysql.ca, "other": tls_mysql.other_ca}[ca]
    with pytest.raises(Exception) as ei:  # aiomysql: 2003 "Can't connect" from the SSLError
        await connect(my_settings(tls_mysql, host, mode, root), 1)
    assert re.search(error, causes(ei.value)), causes(ei.value)
    table = RecordingsTable(
        dataclasses.replace(my_settings(tls_mysql, host, mode, root), table_recordings="rec"),
        ["linkedid=linkedid", "filename=filename"],
    )
    with pytest.raises(Exception) as ei:
        await table.fetch(["1.1"], [])
    assert re.search(error, causes(ei.value)), causes(ei.value)


def causes(e: BaseException | None) -> str:
    out = []
    while e is not None:
        out.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return " <- ".join(out)


# ----------------------------------------------------------------------------- servers without TLS


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_required_tls_fails_against_a_plaintext_server(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path, dialect: str, mode: str
) -> None:
    settings, _ = await make_pbx_db(dialect)
    ca = make_ca(tmp_path, "ca")
    required = dataclasses.replace(settings, sslmode=mode, sslrootcert=str(ca))
    with pytest.raises(Exception, match=r"(?i)ssl|tls"):
        await connect(required, 2)
    table = RecordingsTable(dataclasses.replace(required, table_recordings="rec"),
                            ["linkedid=linkedid", "filename=filename"])  # fmt: skip
    with pytest.raises(Exception, match=r"(?i)ssl|tls"):
        await table.fetch(["1.1"], [])


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_prefer_falls_back_to_plaintext(
    make_pbx_db: Callable[..., Awaitable[Any]], dialect: str
) -> None:
    settings, _ = await make_pbx_db(dialect)
    for mode in ("", "prefer", "allow"):
        db = await connect(dataclasses.replace(settings, sslmode=mode), 1)
        assert await db.fetch("SELECT 1") == [(1,)]
        await db.close()


async def test_every_mysql_connection_refuses_before_login(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    """Not only the pool's first: any aiomysql connection with a required context is refused
    before the login packet (a hostile server could ask for the password in clear text)."""
    import aiomysql

    settings, _ = await make_pbx_db("mysql")
    db = await connect(dataclasses.replace(settings, sslmode="prefer"), 2)  # guard installed
    await db.close()
    ctx = dbtls.plan(dataclasses.replace(settings, sslmode="require")).context
    with pytest.raises(Exception, match="refusing to log in in clear text"):
        await asyncio.wait_for(
            aiomysql.connect(host=settings.host, port=settings.port or 3306,
                             user=settings.user, password=settings.password, ssl=ctx),
            20,
        )  # fmt: skip
