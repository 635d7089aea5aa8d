"""Backlog drain vs the bare POST ceiling, on real Asterisk rows and on simulated calls.

    .venv/bin/python bench/backlog.py [--copies 1000] [--calls 20000] [--source both]
                                      [--concurrency 16] [--bare-posts 10000] [--py-spy 25]

For each source (`real`: the recorded Asterisk 20 scenarios of the fixture
sample, --copies times with shifted ids, uniqueids/linkedids and times, see
bench/realrows.py; `sim`: --calls calls of
sipstack_agent.sim.traffic), in a throwaway PostgreSQL database read by a
SELECT-only role:

1. the real agent (`sipstack-agent run`, START_FROM=beginning,
   API_CONCURRENCY=--concurrency) drains the whole backlog into a local
   receiver (`sipstack-agent receive`, another process): calls/s until every
   call is complete at the receiver;
2. in the same run, against the same receiver: a bare aiohttp client POSTs
   one of the documents the agent shipped, one POST per call (a fresh
   Idempotency-Key each, so each is stored like a new call), with the same
   number in flight as the agent: the ceiling of one POST per call;
3. the ratio of the two (target >= 50 %).

--py-spy S records the agent for S seconds with py-spy (pip install py-spy)
and prints the functions with the most samples (own and total).
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS  # noqa: E402
from sipstack_agent.rules.api_urls import CALLS_PATH  # noqa: E402
from sipstack_agent.shipping.client import build_headers  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402
from throughput import (  # noqa: E402
    API_KEY,
    PgBench,
    clean_up,
    drain,
    free_port,
    start_receiver,
)


@dataclass
class Figures:
    source: str
    calls: int
    rows: int
    agent_calls_s: float
    bare_posts_s: float
    peak_rss_mb: float
    cpu_ms_per_call: float = 0.0

    @property
    def ratio(self) -> float:
        return self.agent_calls_s / self.bare_posts_s if self.bare_posts_s else 0.0


def shipped_document(recv_db: Path) -> bytes:
    """One complete document as the agent sent it (the receiver stores the raw body)."""
    with closing(sqlite3.connect(f"file:{recv_db}?mode=ro", uri=True)) as c:
        row = c.execute(
            "SELECT body FROM calls WHERE is_complete = 1 ORDER BY length(body) LIMIT 1 "
            "OFFSET (SELECT count(*) / 2 FROM calls WHERE is_complete = 1)"
        ).fetchone()
    return str(row[0]).encode()


async def bare_posts(url: str, body: bytes, n: int, concurrency: int) -> float:
    """POSTs/s of a bare aiohttp client: n POSTs of `body`, `concurrency` in flight."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        bad = Counter[int]()

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                hdrs = build_headers(API_KEY, idempotency_key=f"bare:{uuid.uuid4().hex}:1")
                async with session.post(url, data=body, headers=hdrs) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        bad[resp.status] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        dt = time.perf_counter() - t0
    if bad:
        print(f"  bare POST answers other than 2xx: {dict(bad)}")
    return n / dt


def py_spy(
    pid: int, seconds: float, out: Path, delay: float = 0.0
) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("  (py-spy not installed: .venv/bin/pip install py-spy)")
        return None
    cmd = [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "97", "-f", "raw",
           "-o", str(out), "--nonblocking", "--threads"]  # fmt: skip
    if delay > 0:  # start recording `delay` seconds after the agent
        cmd = ["sh", "-c", f'sleep {delay:g} && exec "$0" "$@"', *cmd]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def print_profile(path: Path, top: int = 25) -> None:
    """Top functions of a py-spy raw (collapsed stacks) file: own and total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for f in {_short(f) for f in frames if not _generic(f)}:
            total[f] += n
    if not samples:
        print("  (no samples)")
        return
    print(f"  py-spy: {samples} samples (all threads)")
    print("  own samples:")
    for f, n in own.most_common(top):
        print(f"    {100 * n / samples:5.1f}%  {f}")
    print("  total (function and what it calls):")
    for f, n in total.most_common(top + 10):
        print(f"    {100 * n / samples:5.1f}%  {f}")


_GENERIC = ("threading.py", "runpy>", "runners.py", "base_events.py", "events.py", "cli.py")


def _generic(frame: str) -> bool:
    """Frames every sample has (thread roots, the event loop, the CLI): not informative."""
    return frame.startswith(("thread (", "process (")) or any(g in frame for g in _GENERIC)


def _short(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)'."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name


async def run_source(source: str, args: argparse.Namespace) -> Figures:
    work = Path(tempfile.mkdtemp(prefix=f"sipstack-backlog-{source}-"))
    pg = PgBench(args.pg)
    await pg.create()
    recv = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.perf_counter()
        end = datetime.now(UTC) - timedelta(hours=1)
        if source == "real":
            sample = load_sample()
            cel, cdr = copies(sample, args.copies, end, (CEL_COLUMNS, CDR_COLUMNS))
            await pg.copy_rows(cel, cdr, with_id=True)
            n_calls, n_cel, n_cdr = sample.calls * args.copies, len(cel), len(cdr)
            what = f"{args.copies} copies of the {sample.calls} recorded calls"
        else:
            start = end - timedelta(seconds=args.calls / 50.0)
            gen = TrafficGenerator(7, start=start, ring=(0.5, 3), talk=(2, 30))
            calls = gen.calls(args.calls, rate=50.0, start=start)
            n_cel, n_cdr = await pg.preload(calls)
            n_calls = len(calls)
            what = f"{n_calls} simulated calls"
        rows = n_cel + n_cdr
        print(
            f"[{source}] loaded {what}: {n_cel} CEL + {n_cdr} CDR rows "
            f"in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        port = free_port()
        recv = start_receiver(port, work / "receiver.db", work / "receiver.log")
        await asyncio.sleep(1.0)
        prof = work / "py-spy.txt"

        def on_start(pid: int) -> None:
            nonlocal spy
            if args.py_spy:
                spy = py_spy(pid, args.py_spy, prof, args.py_spy_delay)

        r = await drain(
            pg,
            expected=n_calls,
            rows=rows,
            work=work,
            port=port,
            concurrency=args.concurrency,
            timeout=args.timeout,
            on_start=on_start,
        )
        agent_rate = r.done / r.elapsed
        body = shipped_document(work / "receiver.db")
        url = f"http://127.0.0.1:{port}{CALLS_PATH}"
        bare = await bare_posts(url, body, args.bare_posts, args.concurrency)
        print(
            f"[{source}] agent: {r.done}/{n_calls} calls complete in {r.elapsed:.1f}s = "
            f"{agent_rate:,.0f} calls/s ({rows / r.read_s:,.0f} rows/s read and stored), "
            f"peak RSS {r.peak_rss_mb:.0f} MB",
        )
        print(
            f"[{source}] from the first row stored: {r.done / r.hot_s:,.0f} calls/s; agent CPU "
            f"{r.cpu_ms_per_call:.2f} ms per call (= {1000 / r.cpu_ms_per_call:,.0f} calls/s "
            f"per core)"
            if r.cpu_ms_per_call
            else f"[{source}] (agent CPU not measured: pip install psutil)",
        )
        print(
            f"[{source}] bare aiohttp POST of a {len(body)}-byte agent document, "
            f"{args.concurrency} in flight: {bare:,.0f}/s; agent/bare = {agent_rate / bare:.0%} "
            f"(load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        if spy is not None:
            spy.wait(args.py_spy + args.py_spy_delay + 30)
            if prof.exists():
                print_profile(prof)
        return Figures(source, n_calls, rows, agent_rate, bare, r.peak_rss_mb, r.cpu_ms_per_call)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        await clean_up(pg, work, recv, args.keep)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--source", choices=("real", "sim", "both"), default="both")
    ap.add_argument("--copies", type=int, default=1000, help="copies of the real sample")
    ap.add_argument("--calls", type=int, default=20000, help="simulated calls")
    ap.add_argument("--concurrency", type=int, default=16, help="API_CONCURRENCY = bare in flight")
    ap.add_argument("--bare-posts", type=int, default=10000, help="POSTs of the bare client")
    ap.add_argument("--py-spy", type=float, default=0, metavar="SECONDS")
    ap.add_argument(
        "--py-spy-delay", type=float, default=0, metavar="SECONDS",
        help="start the py-spy recording this long after the agent",
    )  # fmt: skip
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = ap.parse_args()
    sources = ("real", "sim") if args.source == "both" else (args.source,)
    results = [await run_source(s, args) for s in sources]
    print()
    print(
        f"{'source':<8} {'calls':>7} {'rows':>8} {'agent calls/s':>14} {'bare POST/s':>12} "
        f"ratio  {'CPU ms/call':>11}"
    )
    for f in results:
        print(
            f"{f.source:<8} {f.calls:>7} {f.rows:>8} {f.agent_calls_s:>14,.0f} "
            f"{f.bare_posts_s:>12,.0f} {f.ratio:6.0%} {f.cpu_ms_per_call:>12.2f}"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"CPUs: {os.cpu_count()}, load average {load}  (target: agent >= 50 % of bare)")
    return 0 if all(f.agent_calls_s > 0 for f in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
