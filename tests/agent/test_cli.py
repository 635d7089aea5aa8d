"""`sipstack-agent` commands: exit codes, config errors, check output, receive, demo."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from sipstack_agent import cli
from sipstack_agent.logs import (
    JsonFormatter,
    RedactingFormatter,
    mask_numbers,
    redact,
    setup_logging,
)
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import create_sqlite_pbx, write_sqlite

from .support.smallfs import SmallFs

AGENT_DIR = str(Path(cli.__file__).resolve().parent.parent)
KEY = "sk_" + "c" * 32
CONFIG_PREFIXES = ("API_", "DB_", "CEL_", "AMI_", "RECORDING", "REGION", "STATE_DIR", "LOG_")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for k in list(os.environ):
        if k.startswith(CONFIG_PREFIXES):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no ./.env
    return {}


def child_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_PREFIXES)}
    base["PYTHONPATH"] = AGENT_DIR
    base.update(env)
    return base


async def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipstack_agent.cli", *args,
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


# ------------------------------------------------------------------ config errors: exit 2


def test_run_config_errors_exit_2(
    clean_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_KEY", "sk_SECRET_should_not_print x")
    monkeypatch.setenv("REGION", "mars")
    rc = cli.main(["run"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln.strip() for ln in err.splitlines()[1:]]
    assert {ln.split(":")[0] for ln in lines} >= {"API_KEY", "REGION", "DB_NAME"}
    assert "Traceback" not in err and "SECRET" not in err


def test_check_config_errors_exit_2(
    clean_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["check"])
    out = capsys.readouterr().out
    assert rc == 2
    assert all(ln.startswith("FAIL config: ") for ln in out.splitlines())
    assert "API_KEY:" in out


def test_env_file_option(clean_env: dict[str, str], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    f = tmp_path / "agent.env"
    f.write_text("REGION=nowhere\n")
    assert cli.main(["run", "--env-file", str(f)]) == 2
    assert "REGION: unknown region" in capsys.readouterr().err


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0
    assert "sipstack-agent" in capsys.readouterr().out


# ------------------------------------------------------------------ check against real things


@pytest.fixture
def pbx(tmp_path: Path) -> Path:
    path = tmp_path / "asterisk.db"
    create_sqlite_pbx(str(path))
    gen = TrafficGenerator(3)
    write_sqlite(str(path), timeline(gen.calls(10)))
    return path


@pytest.fixture
async def receiver(tmp_path: Path) -> Receiver:
    r = Receiver(tmp_path / "recv.db", api_key=KEY)
    await r.start("127.0.0.1", 0)
    yield r  # type: ignore[misc]
    await r.stop()


def agent_env(pbx: Path, url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "API_KEY": KEY,
        "API_URL": url,
        "DB_TYPE": "sqlite",
        "DB_NAME": str(pbx),
        "CEL_MODE": "db",
        "STATE_DIR": str(tmp_path / "state"),
    }
    env.update(extra)
    return child_env(**env)


def parse_check(out: str) -> dict[str, str]:
    """check line name -> status (last one wins)."""
    res: dict[str, str] = {}
    for ln in out.splitlines():
        status, _, rest = ln.partition(" ")
        if status in ("OK", "WARN", "FAIL"):
            res[rest.strip().split(":")[0]] = status
    return res


async def test_check_all_ok(pbx: Path, receiver: Receiver, tmp_path: Path) -> None:
    rc, out = await run_cli("check", env=agent_env(pbx, receiver.calls_url, tmp_path), cwd=tmp_path)
    assert rc == 0, out
    res = parse_check(out)
    assert res["api"] == "OK" and res["state dir"] == "OK" and res["config"] == "OK", out
    assert "all checks passed" in out
    assert "FAIL" not in out
    # one line per check, each with a status
    assert all(ln.split(" ")[0] in ("OK", "WARN", "FAIL", "all") for ln in out.splitlines())
    assert receiver.count_documents() == 0  # the probe stored nothing


async def test_check_rejected_key_fails(pbx: Path, receiver: Receiver, tmp_path: Path) -> None:
    env = agent_env(pbx, receiver.calls_url, tmp_path, API_KEY="sk_" + "d" * 32)
    rc, out = await run_cli("check", env=env, cwd=tmp_path)
    assert rc == 1, out
    assert parse_check(out)["api"] == "FAIL"
    assert "rejected the key sk_…dddd" in out
    assert "d" * 32 not in out


async def test_check_unreachable_api_and_bad_state_dir(pbx: Path, tmp_path: Path) -> None:
    env = agent_env(pbx, "http://127.0.0.1:9/v1/mqs/connectors/asterisk/calls", tmp_path,
                    STATE_DIR="/proc/sipstack-nope")  # fmt: skip
    rc, out = await run_cli("check", env=env, cwd=tmp_path)
    assert rc == 1, out
    res = parse_check(out)
    assert res["api"] == "FAIL" and res["state dir"] == "FAIL", out
    assert "->" in out  # fix hints


async def test_check_missing_database(tmp_path: Path, receiver: Receiver) -> None:
    env = agent_env(tmp_path / "missing.db", receiver.calls_url, tmp_path)
    rc, out = await run_cli("check", "--no-api", env=env, cwd=tmp_path)
    assert rc == 1, out
    assert "FAIL" in out and "api" not in parse_check(out)


async def test_check_json(pbx: Path, receiver: Receiver, tmp_path: Path) -> None:
    env = agent_env(pbx, receiver.calls_url, tmp_path)
    rc, out = await run_cli("check", "--json", env=env, cwd=tmp_path)
    items = json.loads(out)
    assert rc == 0 and {i["status"] for i in items} <= {"OK", "WARN"}


# ------------------------------------------------------------------ receive, demo


@pytest.mark.parametrize("how", ["env", "file", "flag"])
async def test_receive_command(tmp_path: Path, how: str) -> None:
    import socket

    import aiohttp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = child_env()
    args = ["--db", str(tmp_path / "r.db")]
    if how == "env":
        env["RECEIVER_API_KEY"] = KEY
    elif how == "file":
        (tmp_path / "key").write_text(KEY + "\n")
        args += ["--api-key-file", str(tmp_path / "key")]
    else:
        args += ["--api-key", KEY]  # the old form: works, with a warning
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipstack_agent.cli", "receive", "--port", str(port), *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"receiver listening on" in line
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/v1/mqs/connectors/asterisk/calls"
            async with s.post(url, json={}, headers={"Authorization": "Bearer sk_wrong"}) as r:
                assert r.status == 401
            async with s.post(url, json={}, headers={"Authorization": f"Bearer {KEY}"}) as r:
                assert r.status == 400  # the key passed; the empty document did not
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert ("RECEIVER_API_KEY or --api-key-file" in err) == (how == "flag")


# ------------------------------------------------------------------ healthcheck


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_healthcheck_command(pbx: Path, tmp_path: Path) -> None:
    """GET /healthz of the agent's real monitoring server where MONITORING_PORT says."""
    from sipstack_agent.health import HealthServer
    from sipstack_agent.metrics import Metrics

    port = free_port()
    env = agent_env(pbx, "http://127.0.0.1:9/v1", tmp_path, MONITORING_HOST="0.0.0.0")
    async with HealthServer(Metrics()) as hs:
        await hs.start("127.0.0.1", port)
        rc, out = await run_cli(
            "healthcheck", env={**env, "MONITORING_PORT": str(port)}, cwd=tmp_path
        )
    assert (rc, out.strip()) == (0, f"healthy: http://127.0.0.1:{port}/healthz")
    # nothing listens there any more
    rc, out = await run_cli("healthcheck", env={**env, "MONITORING_PORT": str(port)}, cwd=tmp_path)
    assert rc == 1 and out.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: "), out
    rc, out = await run_cli("healthcheck", env={**env, "MONITORING_PORT": "0"}, cwd=tmp_path)
    assert (rc, out.strip()) == (0, "healthy: monitoring endpoint disabled (MONITORING_PORT=0)")
    rc, out = await run_cli("healthcheck", env={**env, "API_KEY": ""}, cwd=tmp_path)
    assert (rc, out.strip()) == (1, "unhealthy: configuration errors (run sipstack-agent check)")


def test_receive_help_names_the_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """cli.py spells the variable in its help without importing the receiver (aiohttp)."""
    from sipstack_agent.receiver.command import RECEIVER_KEY_ENV

    with pytest.raises(SystemExit):
        cli.main(["receive", "--help"])
    assert RECEIVER_KEY_ENV in capsys.readouterr().out


async def test_demo_command_exits_0(tmp_path: Path) -> None:
    rc, out = await run_cli(
        "demo", "--calls", "30", "--rate", "30", "--timeout", "40",
        env=child_env(), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert rc == 0, out
    assert "30/30 calls arrived complete" in out
    assert "demo: OK" in out


# ------------------------------------------------------------------ logging


def test_numbers_masked_at_info_not_debug() -> None:
    rec = logging.LogRecord("x", logging.INFO, "f", 1, "call from %s to %s id %s",
                            ("+14155551234", "6505550001", "1795495160.12"), None)  # fmt: skip
    msg = redact(rec.getMessage(), rec.levelno)
    assert "4155551234" not in msg and "6505550001" not in msg
    assert "1795495160.12" in msg  # linkedids are not phone numbers
    assert "6505550001" in redact("from 6505550001", logging.DEBUG)
    assert "6505550001" in redact("from 6505550001", logging.INFO, log_numbers=True)


def test_keys_always_redacted() -> None:
    msg = redact(f"key {KEY}", logging.DEBUG, log_numbers=True)
    assert KEY not in msg and "sk_…cccc" in msg
    assert mask_numbers("ext 101 dialled 4155551000") == "ext 101 dialled …00"


def test_json_log_lines() -> None:
    buf = io.StringIO()
    handler = setup_logging("INFO", "json", stream=buf)
    try:
        logging.getLogger("sipstack_agent.test").info("hello %s", "world", extra={"calls": 3})
        logging.getLogger("sipstack_agent.test").debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["msg"] == "hello world" and obj["level"] == "INFO" and obj["calls"] == 3
    assert isinstance(handler.formatter, RedactingFormatter)
    assert isinstance(handler.formatter.inner, JsonFormatter)


def _log_everywhere(fmt: str) -> str:
    """One record with the secrets in the message, extra fields and the traceback."""
    buf = io.StringIO()
    handler = setup_logging("INFO", fmt, stream=buf)
    log = logging.getLogger("sipstack_agent.test")
    try:
        try:
            raise ValueError(f"POST failed for +14155551234 with {KEY}")
        except ValueError:
            log.exception(
                "upload to https://ops:hunter2@proxy.example/v1 failed",
                extra={"caller": "+16505550001", "callee": 4155550002, "key": KEY, "calls": 3},
            )
    finally:
        logging.getLogger().removeHandler(handler)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tracebacks_extra_fields_and_url_credentials_are_redacted(fmt: str) -> None:
    out = _log_everywhere(fmt)
    assert "Traceback" in out and "ValueError" in out  # the traceback is there...
    for secret in ("4155551234", "6505550001", "4155550002", KEY, "hunter2"):
        assert secret not in out  # ...without the numbers, the key and the password
    assert "sk_…cccc" in out and "https://ops:***@proxy.example/v1" in out
    if fmt == "json":
        obj = json.loads(out)
        assert obj["calls"] == 3 and obj["callee"] == "…02" and obj["caller"] == "…01"


async def test_check_warns_without_linkedid_end(tmp_path: Path, receiver: Receiver) -> None:
    """Stock cel.conf (no LINKEDID_END): the agent works (idle timeout), check says WARN."""
    path = tmp_path / "stock.db"
    create_sqlite_pbx(str(path))
    write_sqlite(str(path), timeline(TrafficGenerator(4, linkedid_end=False).calls(10)))
    rc, out = await run_cli(
        "check", env=agent_env(path, receiver.calls_url, tmp_path), cwd=tmp_path
    )
    assert rc == 0, out
    assert any(ln.startswith("WARN") and "LINKEDID_END" in ln for ln in out.splitlines()), out


async def test_run_unwritable_state_dir_exits_1(pbx: Path, tmp_path: Path) -> None:
    env = agent_env(pbx, "http://127.0.0.1:9/x", tmp_path, STATE_DIR="/proc/sipstack-nope")
    rc, out = await run_cli("run", env=env, cwd=tmp_path, timeout=30)
    assert rc == 1, out
    assert "cannot start" in out and "Traceback" not in out


async def test_check_state_dir_names_the_room_kept_for_delivering(small_fs: SmallFs) -> None:
    """A real 8 MiB tmpfs: auto keeps half of it (4 MB); filled, `check` says the agent
    will store no new rows; STATE_MIN_FREE_MB is honoured."""
    from sipstack_agent.admin.check import check_state_dir

    ok = await check_state_dir(str(small_fs.path))
    assert ok.status.name == "WARN" and "MB free" in ok.detail  # under 100 MB: a warning
    assert "below" not in ok.detail
    filler = small_fs.fill()
    try:
        low = await check_state_dir(str(small_fs.path))
        assert "below the 4 MB the agent keeps for delivering" in low.detail, low.detail
        assert "stores no new rows" in low.detail
        assert "below" not in (await check_state_dir(str(small_fs.path), 0)).detail
    finally:
        filler.unlink()
