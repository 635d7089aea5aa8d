"""After an API outage: how fast the agent ships the outbox it filled meanwhile.

    .venv/bin/python bench/outage.py [--calls 20000] [--concurrency 16] [--bare-posts 10000]

Issue 13's first case ("after a 48 h API outage ... drain a large backlog
quickly"): while the API is down the agent keeps reading and evaluating, and
its documents wait in the outbox; when the API comes back, only shipping is
left. In a throwaway PostgreSQL database read by a SELECT-only role:

1. --calls simulated calls (sipstack_agent.sim.traffic) are in the PBX tables;
   the real agent (`sipstack-agent run`, START_FROM=beginning) starts with its
   API on a port where nothing listens (connection refused: the outage), and
   reads and evaluates all of them into its outbox (its /status:
   backlog.outbox_depth = --calls, no dirty calls);
2. the local receiver (`sipstack-agent receive`, another process) starts on
   that port (the API is back); the agent's next attempt finds it;
3. figures from the first document stored at the receiver to the last: the
   agent's documents/s and CPU per document, and, in the same run against the
   same receiver, a bare aiohttp client POSTing one of the agent's documents
   (one POST each, --concurrency in flight, fresh Idempotency-Keys): the ratio.

Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from backlog import bare_posts, shipped_document  # noqa: E402
from sipstack_agent.demo import AgentProcess  # noqa: E402
from sipstack_agent.rules.api_urls import CALLS_PATH  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402
from throughput import (  # noqa: E402
    PgBench,
    bench_agent_env,
    clean_up,
    complete_count,
    cpu_s,
    free_port,
    rss_mb,
    start_receiver,
)


def agent_status(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
            doc = json.load(resp)
            return doc if isinstance(doc, dict) else {}
    except Exception:
        return {}


def queued(status: dict[str, object]) -> tuple[int, int]:
    """(outbox depth, dirty calls) from the agent's /status; (-1, -1) while unreadable."""
    backlog = status.get("backlog")
    if not isinstance(backlog, dict):
        return -1, -1
    return int(backlog.get("outbox_depth", -1)), int(backlog.get("dirty_calls", -1))


def state_size(state_dir: Path) -> int:
    """Bytes of the agent's state files (state.db, its WAL and shm)."""
    return sum(f.stat().st_size for f in state_dir.glob("state.db*") if f.is_file())


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="sipstack-outage-"))
    pg = PgBench(args.pg)
    await pg.create()
    recv = None
    agent = None
    try:
        end = datetime.now(UTC) - timedelta(hours=1)
        start = end - timedelta(seconds=args.calls / 50.0)
        gen = TrafficGenerator(7, start=start, ring=(0.5, 3), talk=(2, 30))
        calls = gen.calls(args.calls, rate=50.0, start=start)
        n_cel, n_cdr = await pg.preload(calls)
        print(f"loaded {len(calls)} simulated calls: {n_cel} CEL + {n_cdr} CDR rows", flush=True)

        port, status_port = free_port(), free_port()
        # ERROR: the outage's connection errors are expected
        env = bench_agent_env(pg, work, port, status_port, args.concurrency, log_level="ERROR")
        agent = AgentProcess(env, work / "agent.log")
        t0 = time.perf_counter()
        agent.start()
        # 1. the outage: everything read and evaluated into the outbox
        depth = dirty = -1
        while time.perf_counter() - t0 < args.timeout:
            await asyncio.sleep(0.5)
            depth, dirty = queued(agent_status(status_port))
            if depth >= len(calls) and dirty == 0:
                break
            if not agent.alive():
                print(agent.log_tail(20))
                return 1
        filled = time.perf_counter() - t0
        state_bytes = state_size(Path(env["STATE_DIR"]))
        print(
            f"outage: {depth} documents queued ({dirty} dirty calls) in {filled:.1f}s, "
            f"agent RSS {rss_mb(agent.pid):.0f} MB; state files {state_bytes / 1e6:.1f} MB "
            f"= {state_bytes / max(1, depth) / 1024:.1f} KB per queued call (rows included)",
            flush=True,
        )
        if depth < len(calls):
            print(agent.log_tail(20))
            return 1
        # 2. the API is back
        recv_db = work / "receiver.db"
        recv = start_receiver(port, recv_db, work / "receiver.log")
        first: tuple[float, float] | None = None  # (time, agent CPU) at the first delivery
        done, peak, cpu_end, t_end = 0, 0.0, 0.0, time.perf_counter()
        t_back = time.perf_counter()
        while time.perf_counter() - t_back < args.timeout:
            await asyncio.sleep(0.1)
            done = complete_count(recv_db)
            cpu_end = cpu_s(agent.pid) or cpu_end
            peak = max(peak, rss_mb(agent.pid))
            if first is None and done > 0:
                first = (time.perf_counter(), cpu_end)
            if done >= len(calls):
                t_end = time.perf_counter()
                break
        if first is None or done < len(calls):
            print(f"only {done}/{len(calls)} delivered")
            print(agent.log_tail(20))
            return 1
        elapsed, cpu = t_end - first[0], cpu_end - first[1]
        rate = done / elapsed
        # 3. the bare client against the same receiver
        body = shipped_document(recv_db)
        bare = await bare_posts(
            f"http://127.0.0.1:{port}{CALLS_PATH}", body, args.bare_posts, args.concurrency
        )
        print(
            f"drain: {done} documents in {elapsed:.1f}s after the first = {rate:,.0f}/s; "
            f"agent CPU {1000 * cpu / done:.2f} ms per document; peak RSS {peak:.0f} MB "
            f"(first delivery {first[0] - t_back:.1f}s after the API came back)"
        )
        print(
            f"bare aiohttp POST of a {len(body)}-byte agent document, {args.concurrency} in "
            f"flight: {bare:,.0f}/s; agent/bare = {rate / bare:.0%} (target >= 50 %; load "
            f"average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        return 0
    finally:
        if agent is not None:
            agent.terminate(15)
        await clean_up(pg, work, recv, args.keep)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16, help="API_CONCURRENCY = bare in flight")
    ap.add_argument("--bare-posts", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
