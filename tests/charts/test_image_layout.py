"""The agent image's /data as Dockerfile.agent lays it out, used by the real agent as
another uid: the old README's `docker run --user ${PUID:-1000}:${PGID:-1000}
-v sipstack-data:/data` (a new named volume gets the image's /data), a root-owned
host directory (`-v ./_data:/data`) with the clear error, and PUID/PGID as root.

No Docker engine here: the layout is built from the parsed Dockerfile in a temp
directory and the agent runs as uid 12345 through subprocess `user=`/`group=`
(the tests run as root)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
import yaml
from sipstack_agent import cli
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import create_sqlite_pbx, write_sqlite

from .chartlib import ROOT
from .test_images import stages

UID = GID = 12345
KEY = "sk_" + "u" * 32
AGENT_DIR = str(Path(cli.__file__).resolve().parent.parent)
SITE = sysconfig.get_paths()["purelib"]  # this venv's dependencies
PYPATH = f"{AGENT_DIR}:{SITE}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another uid")


@dataclass(frozen=True)
class DataLayout:
    path: str
    mode: int
    uid: int
    gid: int
    user: str
    entrypoint: str
    state_dir: str


@cache
def python_for_uid() -> str:
    """An interpreter uid 12345 may execute (this one may live under root's 0700 home),
    of the same version, running the agent from the work tree with this venv's packages."""
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/python{v}", f"/usr/local/bin/python{v}"):
        try:
            probe = subprocess.run(
                [exe, "-c", "import aiohttp, aiosqlite, dotenv, sipstack_agent.cli"],
                env={"PYTHONPATH": PYPATH, "HOME": "/tmp"}, user=UID, group=GID,
                extra_groups=[], capture_output=True, check=False,
            )  # fmt: skip
        except OSError:  # not executable by that uid
            continue
        if probe.returncode == 0:
            return exe
    pytest.fail(f"no Python {v} that uid {UID} can run with {SITE}")


def image_layout() -> DataLayout:
    """/data's mode and owner, USER, ENTRYPOINT and STATE_DIR of the final stage."""
    final = stages((ROOT / "Dockerfile.agent").read_text())[-1]
    runs = " ".join(a for i, a in final if i == "RUN")
    (mkdir,) = re.findall(r"mkdir -p (/\S+)", runs)
    chmods = re.findall(rf"chmod (\d{{3,4}}) {re.escape(mkdir)}(?:\s|$)", runs)
    chowns = re.findall(rf"chown (\d+):(\d+) {re.escape(mkdir)}(?:\s|$)", runs)
    assert chmods and chowns, "Dockerfile.agent sets the mode and owner of /data"
    env = " ".join(a for i, a in final if i == "ENV")
    (state_dir,) = re.findall(r"STATE_DIR=(\S+)", env)
    return DataLayout(
        path=mkdir,
        mode=int(chmods[-1], 8),
        uid=int(chowns[-1][0]),
        gid=int(chowns[-1][1]),
        user=[a for i, a in final if i == "USER"][-1],
        entrypoint=[a for i, a in final if i == "ENTRYPOINT"][-1],
        state_dir=state_dir,
    )


def test_image_data_dir_takes_any_uid() -> None:
    layout = image_layout()
    assert layout.state_dir == layout.path == "/data"
    assert layout.mode & 0o1777 == 0o1777, "world-writable and sticky, like /tmp"
    assert layout.user.split(":")[0] == "10001", "still a fixed non-root default"
    assert layout.entrypoint == '["sipstack-agent"]'


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory uid 12345 can reach (pytest's tmp_path is root-only, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="sipstack-image-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_data(root: Path, layout: DataLayout) -> Path:
    """The image's /data, as a new named volume receives it."""
    data = root / "data"
    data.mkdir()
    os.chown(data, layout.uid, layout.gid)
    data.chmod(layout.mode)
    return data


def make_pbx(root: Path, n: int = 6) -> tuple[Path, int]:
    pbx_dir = root / "pbx"
    pbx_dir.mkdir()
    pbx_dir.chmod(0o777)  # SQLite readers of a WAL file need its -shm
    pbx = pbx_dir / "asterisk.db"
    create_sqlite_pbx(str(pbx))
    start = datetime.now(UTC) - timedelta(minutes=20)
    calls = TrafficGenerator(5, start=start).calls(n, rate=2, start=start)
    write_sqlite(str(pbx), timeline(calls))
    for f in pbx_dir.iterdir():
        f.chmod(0o666)
    return pbx, len(calls)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def agent_env(pbx: Path, url: str, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env.update(
        PYTHONPATH=PYPATH,
        HOME="/tmp",
        API_KEY=KEY,
        API_URL=url,
        DB_TYPE="sqlite",
        DB_NAME=str(pbx),
        CEL_MODE="db",
        STATE_DIR=str(state),
        START_FROM="beginning",
        CDR_POLL_INTERVAL="0.2",
        MONITORING_HOST="127.0.0.1",
        MONITORING_PORT=str(free_port()),
        RECORDING_PATHS=str(pbx.parent),
    )
    env.update(extra)
    return env


@pytest.fixture
async def receiver(root: Path) -> AsyncIterator[Receiver]:
    r = Receiver(root / "recv.db", api_key=KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


async def start_agent(
    env: dict[str, str], cwd: Path, *, as_uid: int | None
) -> asyncio.subprocess.Process:
    kw = {} if as_uid is None else {"user": as_uid, "group": as_uid, "extra_groups": []}
    return await asyncio.create_subprocess_exec(
        python_for_uid(), "-m", "sipstack_agent.cli", "run",
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        **kw,
    )  # fmt: skip


async def cli_as(uid: int, env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        python_for_uid(), "-m", "sipstack_agent.cli", *args,
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        user=uid, group=uid, extra_groups=[],
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def wait_for_calls(receiver: Receiver, n: int, proc: asyncio.subprocess.Process) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while receiver.count_complete_calls() < n and proc.returncode is None:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)


async def wait_healthy(env: dict[str, str], proc: asyncio.subprocess.Process) -> None:
    """Until the agent answers on its monitoring port (it is up, signals handled)."""
    port = int(env["MONITORING_PORT"])
    deadline = asyncio.get_running_loop().time() + 60
    while proc.returncode is None and asyncio.get_running_loop().time() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        status = await reader.readline()
        writer.close()
        if b" 200 " in status:
            return
        await asyncio.sleep(0.1)


async def wait_exit(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def stop_agent(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    return await wait_exit(proc)


def process_uids(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/status").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Uid:")]
    return {int(x) for x in line.split()[1:]}


async def test_agent_as_another_uid_on_the_image_data_dir(root: Path, receiver: Receiver) -> None:
    """docker run --user 12345:12345 -v sipstack-data:/data: starts, ships, keeps state."""
    data = make_data(root, image_layout())
    pbx, n = make_pbx(root)
    env = agent_env(pbx, receiver.calls_url, data)
    proc = await start_agent(env, root, as_uid=UID)
    try:
        await wait_for_calls(receiver, n, proc)
        assert receiver.count_complete_calls() == n
        assert process_uids(proc.pid) == {UID}
        # the container health check follows MONITORING_PORT, as this uid
        rc, out = await cli_as(UID, env, root, "healthcheck")
        assert rc == 0 and f":{env['MONITORING_PORT']}/healthz" in out, out
    finally:
        rc, out = await stop_agent(proc)
    assert rc == 0, out
    state = data / "state.db"
    assert state.stat().st_uid == UID and state.stat().st_size > 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o1777
    # a second start as the same uid opens that state: nothing is shipped again
    shipped = receiver.count_documents()
    proc = await start_agent(env, root, as_uid=UID)
    await wait_healthy(env, proc)
    rc, out = await stop_agent(proc)
    assert rc == 0 and "STATE_DIR" not in out, out
    assert receiver.count_documents() == shipped


async def test_root_owned_host_dir_is_one_clear_line(root: Path, receiver: Receiver) -> None:
    """-v ./_data:/data where Docker created ./_data as root 755, run as another uid."""
    data = root / "_data"
    data.mkdir(mode=0o755)
    pbx, _ = make_pbx(root)
    env = agent_env(pbx, receiver.calls_url, data)
    proc = await start_agent(env, root, as_uid=UID)
    rc, out = await wait_exit(proc)
    assert rc == 1, out
    lines = [ln for ln in out.splitlines() if "STATE_DIR" in ln]
    assert len(lines) == 1, out
    (line,) = lines
    assert f"uid {UID}" in line and str(data) in line
    assert f"chown -R {UID}:{GID} {data}" in line and f"PUID={UID}" in line
    assert "Traceback" not in out and "unable to open database file" not in out
    # check says the same, as a failing line; the health check fails (nothing listens)
    rc, out = await cli_as(UID, env, root, "check", "--no-api")
    assert rc == 1
    assert any(ln.startswith("FAIL state dir:") and f"uid {UID}" in ln for ln in out.splitlines())
    rc, out = await cli_as(UID, env, root, "healthcheck")
    assert rc == 1 and out.startswith("unhealthy:"), out


async def test_state_file_of_another_uid_is_named(root: Path, receiver: Receiver) -> None:
    """A state.db left by the image's default uid, then run with --user 12345."""
    data = make_data(root, image_layout())
    (data / "state.db").write_bytes(b"")
    os.chown(data / "state.db", 10001, 10001)
    (data / "state.db").chmod(0o644)
    pbx, _ = make_pbx(root)
    proc = await start_agent(agent_env(pbx, receiver.calls_url, data), root, as_uid=UID)
    rc, out = await wait_exit(proc)
    assert rc == 1, out
    (line,) = [ln for ln in out.splitlines() if "STATE_DIR" in ln]
    assert f"{data / 'state.db'} is not writable by uid {UID}" in line
    assert "owner 10001:10001" in line and "Traceback" not in out


async def test_root_with_puid_pgid_hands_over_the_dir(root: Path, receiver: Receiver) -> None:
    """docker run --user 0 -e PUID=12345 -e PGID=12345 -v ./_data:/data (root-owned dir)."""
    data = root / "_data"
    data.mkdir(mode=0o755)
    (data / "quarantine").mkdir()
    (data / "quarantine" / "x.json").write_text("{}")
    pbx, n = make_pbx(root)
    env = agent_env(pbx, receiver.calls_url, data, PUID=str(UID), PGID=str(GID))
    proc = await start_agent(env, root, as_uid=None)
    try:
        await wait_for_calls(receiver, n, proc)
        assert receiver.count_complete_calls() == n
        assert process_uids(proc.pid) == {UID}  # root dropped
    finally:
        rc, out = await stop_agent(proc)
    assert rc == 0, out
    for p in (data, data / "state.db", data / "quarantine", data / "quarantine" / "x.json"):
        assert (p.stat().st_uid, p.stat().st_gid) == (UID, GID), p
    assert (root.stat().st_uid, pbx.stat().st_uid) == (0, 0)  # nothing outside STATE_DIR


async def test_puid_without_root_is_a_warning(root: Path, receiver: Receiver) -> None:
    data = make_data(root, image_layout())
    pbx, _ = make_pbx(root, n=1)
    env = agent_env(pbx, receiver.calls_url, data, PUID="1000", PGID="1000", CEL_MODE="")
    proc = await start_agent(env, root, as_uid=UID)
    await wait_healthy(env, proc)
    rc, out = await stop_agent(proc)
    assert rc == 0, out
    assert "PUID/PGID (1000:1000) ignored: started as uid 12345" in out
    rc, out = await cli_as(UID, env, root, "check", "--no-api")
    assert "WARN config: PUID/PGID (1000:1000) ignored: started as uid 12345" in out, out
    # empty CEL_MODE (CDR only) runs, with its warning at start-up
    assert "CEL_MODE is empty/none: CDR only" in out


def test_compose_service_keeps_the_old_name_and_runs_as_puid() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (name,) = compose["services"]
    svc = compose["services"][name]
    assert name == "sipstack-connector" and svc["container_name"] == "sipstack-connector"
    assert svc["user"] == "${PUID:-10001}:${PGID:-10001}"
    assert svc["healthcheck"]["test"] == ["CMD", "sipstack-agent", "healthcheck"]
    assert svc["read_only"] is True and "ALL" in svc["cap_drop"]
    assert "sipstack-data:/data" in svc["volumes"]


async def test_root_without_chown_capability_is_one_clear_line(root: Path) -> None:
    """docker run --user 0 --cap-drop ALL -e PUID=...: says which capabilities it needs."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    data = root / "_data"
    data.mkdir(mode=0o755)
    pbx, _ = make_pbx(root, n=1)
    env = agent_env(pbx, "http://127.0.0.1:9/", data, PUID=str(UID), PGID=str(GID))
    proc = await asyncio.create_subprocess_exec(
        setpriv, "--bounding-set=-chown,-setuid,-setgid", "--",
        sys.executable, "-m", "sipstack_agent.cli", "run",
        env=env, cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    rc, out = await wait_exit(proc)
    assert rc == 1, out
    (line,) = [ln for ln in out.splitlines() if "cannot start" in ln]
    assert f"PUID={UID} PGID={GID}" in line and "CHOWN" in line and f"--user {UID}:{GID}" in line
    assert "Traceback" not in out and data.stat().st_uid == 0
