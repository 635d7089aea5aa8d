"""End-to-end throughput: N calls preloaded in PostgreSQL -> agent -> receiver.

    .venv/bin/python bench/throughput.py [--calls 20000] [--pg postgresql://postgres@127.0.0.1/postgres]

Preloads N simulated Asterisk 20 calls (~15 CEL rows + 1-2 CDR rows each) into a
throwaway PostgreSQL database, then runs the real agent (`sipstack-agent run`,
a subprocess reading as a SELECT-only user, START_FROM=beginning) against a
receiver in another process (`sipstack-agent receive --no-validate`), and
prints: calls/s end to end, rows/s read, the agent's peak RSS, and the raw
asyncpg read rate of the same rows for comparison.
Targets (2-core machine): >= 1000 calls/s end to end, peak RSS <= 150 MB.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "agent"))

from sipstack_agent.demo import AgentProcess, agent_env  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS  # noqa: E402
from sipstack_agent.scratchdb import pg_create, pg_drop, pg_dsn, pg_hostport  # noqa: E402
from sipstack_agent.sim.ddl import create_table_statements  # noqa: E402
from sipstack_agent.sim.dialects import db_values  # noqa: E402
from sipstack_agent.sim.timeline import SimCall, timeline  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402

API_KEY = "sk_" + "bench" + "0" * 27  # local receiver only
RO_PASSWORD = "bench-ro"


class PgBench:
    """A throwaway database + SELECT-only role on a PostgreSQL server (sipstack_agent.scratchdb)."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        tag = uuid.uuid4().hex[:8]
        self.db = f"sipstack_bench_{tag}"
        self.role = f"sipstack_bench_ro_{tag}"
        self.db_dsn = pg_dsn(admin_dsn, self.db)
        self.host, self.port = pg_hostport(admin_dsn)

    async def create(self) -> None:
        import asyncpg

        await pg_create(self.admin_dsn, self.db, self.role, RO_PASSWORD)
        con = await asyncpg.connect(self.db_dsn)
        try:
            for stmt in create_table_statements("postgresql"):
                await con.execute(stmt)
        finally:
            await con.close()

    async def drop(self) -> None:
        await pg_drop(self.admin_dsn, self.db, self.role)

    def env(self) -> dict[str, str]:
        return {
            "DB_TYPE": "postgresql",
            "DB_HOST": self.host or "127.0.0.1",
            "DB_PORT": str(self.port),
            "DB_USER": self.role,
            "DB_PASSWORD": RO_PASSWORD,
            "DB_NAME": self.db,
            "DB_TIMEZONE": "UTC",  # db_values() writes UTC
        }

    async def preload(self, calls: list[SimCall]) -> tuple[int, int]:
        """COPY every row of `calls` in commit order; returns (cel rows, cdr rows)."""
        cel: list[tuple[Any, ...]] = []
        cdr: list[tuple[Any, ...]] = []
        for w in timeline(calls):
            (cel if w.kind == "cel" else cdr).append(db_values(w.kind, w.row, "postgresql"))
        await self.copy_rows(cel, cdr)
        return len(cel), len(cdr)

    async def copy_rows(
        self, cel: list[tuple[Any, ...]], cdr: list[tuple[Any, ...]], *, with_id: bool = False
    ) -> None:
        """COPY value tuples (CEL_COLUMNS / CDR_COLUMNS order, `id` first when with_id)."""
        import asyncpg

        first = ["id"] if with_id else []
        con = await asyncpg.connect(self.db_dsn)
        try:
            await con.copy_records_to_table("cel", records=cel, columns=first + list(CEL_COLUMNS))
            await con.copy_records_to_table("cdr", records=cdr, columns=first + list(CDR_COLUMNS))
            if with_id:
                for t in ("cel", "cdr"):
                    await con.execute(
                        f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {t}), false)"
                    )
            await con.execute("ANALYZE cel; ANALYZE cdr")
        finally:
            await con.close()

    async def raw_read_rate(self, batch: int = 5000) -> tuple[int, float]:
        """Read every row the way the agent pages (id > $1 ORDER BY id LIMIT n)."""
        import asyncpg

        con = await asyncpg.connect(
            host=self.host, port=self.port, user=self.role, password=RO_PASSWORD, database=self.db
        )
        total = 0
        t0 = time.perf_counter()
        try:
            for table, cols in (("cel", CEL_COLUMNS), ("cdr", CDR_COLUMNS)):
                last = 0
                sql = (
                    f"SELECT id, {', '.join(cols)} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2"
                )
                while True:
                    rows = await con.fetch(sql, last, batch)
                    if not rows:
                        break
                    total += len(rows)
                    last = rows[-1][0]
        finally:
            await con.close()
        return total, time.perf_counter() - t0


def complete_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
            return int(
                c.execute(
                    "SELECT count(DISTINCT linkedid) FROM calls WHERE is_complete = 1"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def stored_rows(state_db: Path) -> int:
    """Rows the agent has copied into its state store so far."""
    if not state_db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=5)) as c:
            return int(
                c.execute(
                    "SELECT (SELECT count(*) FROM cel) + (SELECT count(*) FROM cdr)"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def evaluations(port: int) -> int:
    """Calls the agent has evaluated so far (its /status `evaluated_calls`; -1 unknown)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
            return int(json.load(resp).get("evaluated_calls", -1))
    except Exception:
        return -1


def rss_mb(pid: int) -> float:
    try:
        import psutil

        p = psutil.Process(pid)
        return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 1e6
    except Exception:
        return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process and its children (the transport worker
    of API_TRANSPORT=process) have used so far (0 when it is gone)."""
    try:
        import psutil

        p = psutil.Process(pid)
        total = 0.0
        for proc in [p, *p.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total
    except Exception:
        return 0.0


def start_receiver(port: int, db: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "agent"), RECEIVER_API_KEY=API_KEY)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipstack_agent.cli",
            "receive",
            "--port",
            str(port),
            "--db",
            str(db),
            "--no-validate",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


def free_port() -> int:
    import socket

    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bench_agent_env(
    pg: PgBench,
    work: Path,
    port: int,
    status_port: int,
    concurrency: int,
    extra: dict[str, str] | None = None,
    log_level: str = "WARNING",
) -> dict[str, str]:
    """The benches' agent: reads `pg` from the beginning in 5 000-row pages, ships to the
    receiver on `port`, /status on `status_port`, state in work/state."""
    return agent_env(
        api_url=f"http://127.0.0.1:{port}/v1/mqs/connectors/asterisk/calls",
        state_dir=str(work / "state"),
        db=pg.env(),
        api_key=API_KEY,
        extra={
            "CDR_POLL_INTERVAL": "1",
            "CDR_BATCH_SIZE": "5000",
            "MAX_RECORDS_PER_POLL": "50000",
            "API_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": os.environ.get("BENCH_AGENT_LOG_LEVEL", log_level),
            "MONITORING_PORT": str(status_port),
            **(extra or {}),
        },
    )


async def clean_up(
    pg: PgBench, work: Path, recv: subprocess.Popen[bytes] | None, keep: bool
) -> None:
    """Stop the receiver, drop the databases, remove `work` (or say where it was kept)."""
    if recv is not None:
        recv.terminate()
        recv.wait(15)
    await pg.drop()
    if keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Drain:
    """What one agent run over a preloaded backlog gave."""

    done: int
    expected: int
    elapsed: float
    read_s: float
    peak_rss_mb: float
    agent_env: dict[str, str]
    # From the first row stored to the end (the start-up's imports left out):
    hot_s: float = 0.0  # wall seconds
    hot_cpu_s: float = 0.0  # the agent's CPU seconds

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.hot_cpu_s / self.done if self.done else 0.0


async def drain(
    pg: PgBench,
    *,
    expected: int,
    rows: int,
    work: Path,
    port: int,
    concurrency: int = 16,
    timeout: float = 600,
    extra: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Drain:
    """Run the real agent (START_FROM=beginning) until `expected` calls are complete at
    the receiver on `port` (its db in work/receiver.db); prints progress every 2 s."""
    recv_db = work / "receiver.db"
    status_port = free_port()
    env = bench_agent_env(pg, work, port, status_port, concurrency, extra)
    agent = AgentProcess(env, work / "agent.log")
    t_start = time.perf_counter()
    agent.start()
    if on_start is not None:
        on_start(agent.pid)
    peak = 0.0
    last_print = t_start
    done = 0
    read_done_at: float | None = None
    hot_at: tuple[float, float] | None = None  # (time, agent CPU) when the first row was stored
    cpu_end = 0.0
    state_db = work / "state" / "state.db"
    try:
        while time.perf_counter() - t_start < timeout:
            await asyncio.sleep(0.25)
            peak = max(peak, rss_mb(agent.pid))
            done = complete_count(recv_db)
            cpu_end = cpu_s(agent.pid) or cpu_end
            if hot_at is None and stored_rows(state_db) > 0:
                hot_at = (time.perf_counter(), cpu_end)
            if read_done_at is None and stored_rows(state_db) >= rows:
                read_done_at = time.perf_counter() - t_start
            if time.perf_counter() - last_print >= 2:
                last_print = time.perf_counter()
                el = last_print - t_start
                print(
                    f"  t={el:5.1f}s complete {done}/{expected} ({done / el:,.0f} calls/s), "
                    f"rows stored {stored_rows(state_db):,}, evaluations "
                    f"{evaluations(status_port):,}, agent RSS {rss_mb(agent.pid):.0f} MB",
                    flush=True,
                )
            if done >= expected or not agent.alive():
                break
        t_end = time.perf_counter()
        elapsed = t_end - t_start
    finally:
        agent.terminate(15)
    if done < expected:
        print(agent.log_tail(20))
    hot_s, hot_cpu = (t_end - hot_at[0], cpu_end - hot_at[1]) if hot_at else (elapsed, cpu_end)
    return Drain(done, expected, elapsed, read_done_at or elapsed, peak, env, hot_s, hot_cpu)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the database and files")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sipstack-bench-"))
    pg = PgBench(args.pg)
    await pg.create()
    recv = None
    try:
        start = datetime.now(UTC) - timedelta(hours=2)
        gen = TrafficGenerator(7, start=start, ring=(0.5, 3), talk=(2, 30))
        t0 = time.perf_counter()
        calls = gen.calls(args.calls, rate=50.0, start=start)
        n_cel, n_cdr = await pg.preload(calls)
        print(
            f"preloaded {len(calls)} calls: {n_cel} CEL + {n_cdr} CDR rows "
            f"({(n_cel + n_cdr) / len(calls):.1f} rows/call) in {time.perf_counter() - t0:.1f}s"
        )
        raw_rows, raw_s = await pg.raw_read_rate()
        print(
            f"raw asyncpg read (SELECT-only user, 5000-row pages): {raw_rows} rows in "
            f"{raw_s:.2f}s = {raw_rows / raw_s:,.0f} rows/s"
        )
        port = free_port()
        recv = start_receiver(port, work / "receiver.db", work / "receiver.log")
        await asyncio.sleep(1.0)
        rows = n_cel + n_cdr
        r = await drain(
            pg, expected=len(calls), rows=rows, work=work, port=port, timeout=args.timeout
        )
        print()
        print(f"calls complete at the receiver : {r.done}/{len(calls)}")
        print(
            f"end to end                     : {r.elapsed:.1f}s = {r.done / r.elapsed:,.0f} "
            f"calls/s (target >= 1000)"
        )
        print(
            f"rows read and stored           : {rows} in {r.read_s:.1f}s = "
            f"{rows / r.read_s:,.0f}/s (raw asyncpg read alone: {raw_rows / raw_s:,.0f} rows/s)"
        )
        print(
            f"agent CPU from the first row   : {r.cpu_ms_per_call:.2f} ms per call "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
        print(f"agent peak RSS                 : {r.peak_rss_mb:.0f} MB (target <= 150)")
        print(f"CPUs                           : {os.cpu_count()}")
        return 0 if r.done >= len(calls) else 1
    finally:
        if recv is not None:
            recv.terminate()
            recv.wait(15)
        if not args.keep:
            await pg.drop()
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and database {pg.db}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
