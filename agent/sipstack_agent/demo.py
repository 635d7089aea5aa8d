"""`sipstack-agent demo`: the embedded default, end to end on one machine.

1. a simulated Asterisk PBX: a SQLite database with Asterisk's cdr and cel
   tables, filled in real time with realistic Asterisk 20 traffic (answered,
   unanswered, busy, blind transfer, queue, internal, outbound calls);
2. the local SIPSTACK API receiver (`sipstack_agent.receiver`);
3. the real agent, `sipstack-agent run` as a subprocess configured only by
   environment variables, reading the PBX database read-only;
4. a live summary once a second: calls written, documents received, calls
   received complete, latency p50/p99 from the commit of a call's last row to
   the receiver storing its complete document.

Exit status 0 only when every call arrived complete, once per revision.
`AgentProcess` is reused by the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from .sim.play import play
from .sim.timeline import SimCall, Write, is_linkedid_end, timeline
from .sim.traffic import TrafficGenerator
from .sim.writers import create_sqlite_pbx, write_dbapi

DEMO_API_KEY = "sk_" + "demo" + "0" * 28  # local receiver only: sk_ + 32 characters
AGENT_DIR = str(Path(__file__).resolve().parent.parent)  # the folder holding sipstack_agent


_INHERIT = frozenset(
    {"PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT"}
)
_INHERIT_P = ("PYTHON", "COVERAGE", "SSL_CERT", "LC_")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


class AgentProcess:
    """The real agent as a child process: `sipstack-agent run` with an environment."""

    def __init__(self, env: Mapping[str, str], log_path: str | os.PathLike[str]) -> None:
        self.env = dict(env)
        self.log_path = str(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def process_env(self) -> dict[str, str]:
        # Only the process basics are inherited: an agent variable set in the caller's
        # environment (REGION, TENANT, ...) must not leak into this agent.
        env = {k: v for k, v in os.environ.items() if k in _INHERIT or k.startswith(_INHERIT_P)}
        env.update(self.env)
        env["PYTHONPATH"] = AGENT_DIR + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`sipstack-agent ARGS` with this agent's configuration (status, dead-letters...)."""
        env = self.process_env()
        return subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "sipstack_agent.cli", *args],
            env=env,
            cwd=env.get("STATE_DIR") or None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        env = self.process_env()
        cwd = env.get("STATE_DIR") or None
        if cwd:
            os.makedirs(cwd, exist_ok=True)  # cwd: no stray ./.env is picked up
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipstack_agent.cli", "run"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """kill -9 (the crash test)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""


def agent_env(
    *,
    api_url: str,
    state_dir: str,
    db: Mapping[str, str],
    api_key: str = DEMO_API_KEY,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of an agent reading `db` (DB_* variables) and shipping to `api_url`."""
    env = {
        "API_KEY": api_key,
        "API_URL": api_url,
        "CEL_MODE": "db",
        "STATE_DIR": state_dir,
        "START_FROM": "beginning",
        "CDR_POLL_INTERVAL": "0.5",
        "CALL_IDLE_TIMEOUT": "5",
        "MONITORING_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "CONNECTOR_ID": "demo",
        "HOST_HOSTNAME": "demo-pbx",
        "RECORDING_PATHS": os.path.join(state_dir, "monitor"),
    }
    env.update(db)
    env.update(extra or {})
    return env


@dataclass
class DemoOptions:
    calls: int = 200
    rate: float = 20.0
    duration: float | None = None
    seed: int = 1
    keep: bool = False
    workdir: str | None = None
    timeout: float = 60.0
    out: IO[str] | None = None


@dataclass
class DemoResult:
    ok: bool
    written: int
    complete: int
    missing: list[str]
    mismatches: list[str]
    p50: float
    p99: float
    agent_rc: int | None


def check_documents(calls: Sequence[SimCall], docs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Field-level differences between the expected calls and their complete documents."""
    problems: list[str] = []
    for c in calls:
        e = c.expected
        d = docs.get(e.linkedid)
        if d is None:
            continue
        for key, want in (
            ("disposition", e.disposition),
            ("direction", e.direction),
            ("is_complete", True),
        ):
            got = d.get(key)
            if got != want:
                problems.append(f"{e.scenario} {e.linkedid}: {key} {got!r} != expected {want!r}")
        if "answered" in d and bool(d["answered"]) != e.answered:
            problems.append(
                f"{e.scenario} {e.linkedid}: answered {d['answered']!r} != expected {e.answered!r}"
            )
        n_cdr = sum(1 for t in d.get("call_threads", ()) if t.get("event") == "CDR")
        if n_cdr != e.cdr_count:
            problems.append(f"{e.scenario} {e.linkedid}: {n_cdr} CDR threads != {e.cdr_count}")
    return problems


async def run_demo(opts: DemoOptions) -> bool:
    res = await demo(opts)
    return res.ok


async def demo(opts: DemoOptions) -> DemoResult:
    from .receiver import Receiver

    out = opts.out or sys.stdout
    n_calls = int(opts.rate * opts.duration) if opts.duration else opts.calls
    n_calls = max(1, n_calls)
    work = opts.workdir or tempfile.mkdtemp(prefix="sipstack-demo-")
    os.makedirs(work, exist_ok=True)
    pbx = os.path.join(work, "asterisk.db")
    state = os.path.join(work, "state")
    os.makedirs(os.path.join(state, "monitor"), exist_ok=True)
    create_sqlite_pbx(pbx)

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    receiver = Receiver(os.path.join(work, "receiver.db"), api_key=DEMO_API_KEY)
    await receiver.start("127.0.0.1", 0)
    env = agent_env(
        api_url=receiver.calls_url,
        state_dir=state,
        db={"DB_TYPE": "sqlite", "DB_NAME": pbx, "DB_TIMEZONE": "UTC"},  # sim.writers writes UTC
    )
    monitoring = _free_port()
    env["MONITORING_PORT"] = str(monitoring)
    env["MONITORING_HOST"] = "127.0.0.1"
    agent = AgentProcess(env, os.path.join(work, "agent.log"))
    say(f"demo: work dir {work}")
    say(f"demo: agent metrics/status on http://127.0.0.1:{monitoring}/metrics and /status")
    say(f"demo: receiver {receiver.url}; agent: sipstack-agent run (DB_TYPE=sqlite DB_NAME={pbx})")
    say(f"demo: {n_calls} calls at {opts.rate:g}/s")
    agent.start()

    start = datetime.now(UTC) + timedelta(seconds=0.5)
    gen = TrafficGenerator(opts.seed, ring=(0.5, 2.0), talk=(1.0, 4.0), start=start)
    calls = gen.calls(n_calls, rate=opts.rate, start=start)
    writes = timeline(calls)
    expected = {c.expected.linkedid: c for c in calls}
    conn = sqlite3.connect(pbx, timeout=30)

    async def write(batch: Sequence[Write]) -> None:
        write_dbapi(conn, "sqlite", batch)

    stop_summary = asyncio.Event()
    committed: dict[str, float] = {}

    def latencies() -> list[float]:
        got = receiver.complete_received_at()
        return [got[k] - committed[k] for k in got if k in committed and k in expected]

    async def summary() -> None:
        t0 = time.monotonic()
        while not stop_summary.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_summary.wait(), timeout=1.0)
            lat = latencies()
            done = sum(1 for k in receiver.complete_received_at() if k in expected)
            ended = len(committed)
            say(
                f"t={time.monotonic() - t0:5.1f}s calls ended in the PBX {ended:4d}/{n_calls}"
                f" | received {receiver.count_documents():4d} docs, complete {done:4d}"
                f" | latency p50 {percentile(lat, 50):.2f}s p99 {percentile(lat, 99):.2f}s"
                + ("" if agent.alive() else " | AGENT EXITED")
            )

    summ = asyncio.create_task(summary())
    agent_rc: int | None = None
    try:
        await play(
            writes,
            write,
            t0=start - timedelta(seconds=0.5),
            committed=committed,
            mark=is_linkedid_end,
        )
        # Finished calls whose last row came in long before the end.
        deadline = time.monotonic() + opts.timeout
        # Late rows (a CDR committed after LINKEDID_END) give one more revision: wait
        # until every call is complete with all its rows, or the timeout.
        while time.monotonic() < deadline and agent.alive():
            got = receiver.complete_received_at()
            if all(k in got for k in expected) and not check_documents(
                calls, receiver.latest_complete_all()
            ):
                break
            await asyncio.sleep(0.25)
    finally:
        stop_summary.set()
        with contextlib.suppress(Exception):
            await summ
        conn.close()
        agent_rc = agent.terminate(timeout=20)
    docs = receiver.latest_complete_all()
    got = receiver.complete_received_at()
    missing = [k for k in expected if k not in got]
    mismatches = check_documents(calls, docs)
    # Once per Idempotency-Key: the receiver stores a key once; count replays too.
    lat = latencies()
    res = DemoResult(
        ok=not missing and agent_rc == 0,
        written=len(expected),
        complete=len(expected) - len(missing),
        missing=missing,
        mismatches=mismatches,
        p50=percentile(lat, 50),
        p99=percentile(lat, 99),
        agent_rc=agent_rc,
    )
    stats = receiver.stats()
    await receiver.stop()
    say(
        f"demo: {res.complete}/{res.written} calls arrived complete; "
        f"{stats.get('documents', 0)} documents stored, latency p50 {res.p50:.2f}s "
        f"p99 {res.p99:.2f}s; agent exit code {agent_rc}"
    )
    if mismatches:
        say(f"demo: {len(mismatches)} field difference(s) from the simulator's expectation:")
        for m in mismatches[:10]:
            say(f"  {m}")
    if missing:
        say(f"demo: FAILED, {len(missing)} call(s) missing, e.g. {', '.join(missing[:5])}")
    if not res.ok:
        say("demo: agent log tail:\n" + agent.log_tail())
    if res.ok and not opts.keep and not opts.workdir:
        shutil.rmtree(work, ignore_errors=True)
    elif opts.keep or not res.ok:
        say(f"demo: files kept in {work}")
    say("demo: OK" if res.ok else "demo: FAILED")
    return res


def _free_port() -> int:
    import socket

    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
