"""AMI login without the secret in clear text: MD5 challenge by default, AMI_AUTH, WARN.

Against the AMI simulator speaking Asterisk's manager.c protocol over real sockets,
with the real client (panoramisk) the agent uses."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path

import pytest
from sipstack_agent.config import ConfigError, load_settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.rules.checks import Status
from sipstack_agent.sim.ami import AmiServer
from sipstack_agent.sources.cel_ami import CelAmiSource, check_ami
from sipstack_agent.state import StateStore

from .test_cel_ami import fast, until

SECRET = "s3cret"


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def sent_secret(srv: AmiServer) -> bool:
    return any(SECRET in v for a in srv.actions for v in a.values())


async def run_until(src: CelAmiSource, state: str) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        await until(lambda: src.state == state)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_md5_challenge_is_the_default(store: StateStore, caplog) -> None:  # type: ignore[no-untyped-def]
    async with AmiServer(secret=SECRET) as srv:
        await run_until(CelAmiSource(fast(srv.port), store, Metrics()), "connected")
        login = next(a for a in srv.actions if a["action"].lower() == "login")
        assert login["authtype"].lower() == "md5" and len(login["key"]) == 32
        assert "secret" not in login and not sent_secret(srv)
        assert srv.md5_logins == 1
    assert not any("clear text" in w for w in warnings(caplog))


async def test_a_wrong_secret_fails_the_md5_login(store: StateStore) -> None:
    async with AmiServer(secret=SECRET) as srv:
        src = CelAmiSource(fast(srv.port, password="wrong"), store, Metrics())
        await run_until(src, "auth_failed")
        assert srv.md5_logins == 0 and "failed" in (src.last_error or "")


async def test_a_server_without_challenge_gets_the_secret_and_a_warning(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with AmiServer(secret=SECRET) as srv:
        srv.offer_challenge = False
        await run_until(CelAmiSource(fast(srv.port), store, Metrics()), "connected")
        assert sent_secret(srv)
    assert any("clear text" in w and "AMI_TLS" in w for w in warnings(caplog))


async def test_ami_auth_md5_refuses_a_server_without_challenge(store: StateStore) -> None:
    async with AmiServer(secret=SECRET) as srv:
        srv.offer_challenge = False
        src = CelAmiSource(fast(srv.port, auth="md5"), store, Metrics())
        await run_until(src, "auth_failed")
        assert "AMI_AUTH=md5" in (src.last_error or "")
        assert not sent_secret(srv) and srv.logins == 0


async def test_ami_auth_plain_sends_the_secret(store: StateStore) -> None:
    async with AmiServer(secret=SECRET) as srv:
        await run_until(CelAmiSource(fast(srv.port, auth="plain"), store, Metrics()), "connected")
        assert sent_secret(srv) and srv.md5_logins == 0
        assert not any(a["action"].lower() == "challenge" for a in srv.actions)


async def test_a_secret_login_over_tls_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = AmiServer(secret=SECRET)
    srv.offer_challenge = False
    await srv.start(ssl=ctx)
    try:
        res = await check_ami(fast(srv.port, tls=True, tls_ca_file=str(cert)), wait=0.1)
        assert res[0].status is Status.OK, res
        assert sent_secret(srv)
    finally:
        await srv.stop()
    assert not any("clear text" in w for w in warnings(caplog))


def test_ami_auth_setting() -> None:
    base = {"API_KEY": "sk_" + "A1b2C3d4" * 4, "DB_TYPE": "postgresql", "DB_NAME": "asterisk"}
    assert load_settings(base).ami.auth == "auto"
    assert load_settings({**base, "AMI_AUTH": "MD5"}).ami.auth == "md5"
    with pytest.raises(ConfigError) as ei:
        load_settings({**base, "AMI_AUTH": "sha"})
    assert any(p.startswith("AMI_AUTH") for p in ei.value.problems)
