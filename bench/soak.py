"""Soak: the agent's memory over a long backlog, sampled every 10 s.

    .venv/bin/python bench/soak.py [--minutes 20] [--calls 1000000]

A throwaway PostgreSQL PBX database is fed simulated calls (sipstack_agent.sim) in chunks (COPY),
always a few thousand calls ahead of what the receiver has complete, while
the real agent (`sipstack-agent run`, START_FROM=beginning) ships them to a
local receiver (`sipstack-agent receive`, another process). It runs for
--minutes or until --calls calls are complete, whichever comes first, and
samples the agent's RSS (psutil, with its children) every --every seconds.
Prints the samples, then whether the last one is within 10 % of the one taken
at 10 % of the run (flat memory: nothing grows with the number of calls).
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from sipstack_agent.demo import AgentProcess  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402
from throughput import (  # noqa: E402
    PgBench,
    bench_agent_env,
    complete_count,
    free_port,
    rss_mb,
    start_receiver,
)

CHUNK = 2000  # calls per COPY
AHEAD = 8000  # calls loaded but not yet complete at the receiver, at most


def flat(samples: list[tuple[float, int, float]], tolerance: float = 0.10) -> tuple[bool, str]:
    """Is the last RSS sample within `tolerance` of the one at 10 % of the run?"""
    if len(samples) < 3:
        return False, "too few samples (run longer)"
    t_end = samples[-1][0]
    ref = min(samples, key=lambda s: abs(s[0] - 0.1 * t_end))
    last = samples[-1]
    change = (last[2] - ref[2]) / ref[2]
    ok = abs(change) <= tolerance
    return ok, (
        f"RSS at 10 % of the run (t={ref[0]:.0f}s, {ref[1]} calls): {ref[2]:.1f} MB; "
        f"last (t={last[0]:.0f}s, {last[1]} calls): {last[2]:.1f} MB; change {change:+.1%}"
    )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--calls", type=int, default=1_000_000, help="stop after this many")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--concurrency", type=int, default=16, help="API_CONCURRENCY")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another variable for the agent (repeatable), e.g. RECORDING_KNOWN_CALL_WINDOW=60",
    )
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sipstack-soak-"))
    pg = PgBench(args.pg)
    await pg.create()
    recv = None
    agent = None
    try:
        port = free_port()
        recv_db = work / "receiver.db"
        recv = start_receiver(port, recv_db, work / "receiver.log")
        start = datetime.now(UTC) - timedelta(seconds=args.calls / 50.0) - timedelta(hours=1)
        gen = TrafficGenerator(11, start=start, ring=(0.5, 3), talk=(2, 30))
        fed = 0

        async def feed(done: int) -> None:
            nonlocal fed
            while fed < args.calls and fed - done < AHEAD:
                n = min(CHUNK, args.calls - fed)
                await pg.preload(gen.calls(n, rate=50.0))
                fed += n

        await feed(0)
        await asyncio.sleep(1.0)
        env = bench_agent_env(
            pg,
            work,
            port,
            free_port(),
            args.concurrency,
            extra=dict(kv.split("=", 1) for kv in args.env),
            log_level="WARNING",
        )
        agent = AgentProcess(env, work / "agent.log")
        t0 = time.perf_counter()
        agent.start()
        deadline = t0 + args.minutes * 60
        samples: list[tuple[float, int, float]] = []  # (t, calls complete, RSS MB)
        done = 0
        next_sample = t0 + args.every
        print(f"{'t (s)':>7} {'complete':>9} {'calls/s':>8} {'RSS MB':>7}", flush=True)
        while time.perf_counter() < deadline and done < args.calls and agent.alive():
            await feed(done)
            await asyncio.sleep(2.0)
            done = complete_count(recv_db)
            if time.perf_counter() >= next_sample:
                next_sample += args.every
                t = time.perf_counter() - t0
                samples.append((t, done, rss_mb(agent.pid)))
                print(
                    f"{t:7.0f} {done:9d} {done / t:8,.0f} {samples[-1][2]:7.1f}",
                    flush=True,
                )
        if not agent.alive():
            print("the agent died:\n" + agent.log_tail())
            return 1
        ok, detail = flat(samples)
        print()
        print(detail)
        print(f"last sample within 10 % of the one at 10 % of the run: {'yes' if ok else 'NO'}")
        print(f"peak RSS {max((s[2] for s in samples), default=0):.1f} MB (target <= 150)")
        return 0 if ok else 2
    finally:
        if agent is not None:
            agent.terminate(15)
        if recv is not None:
            recv.terminate()
            recv.wait(15)
        await pg.drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
