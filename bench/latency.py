"""Live latency: inserts at 50 calls/s into PostgreSQL -> agent -> receiver.

    .venv/bin/python bench/latency.py [--rate 50] [--duration 30] [--poll 1.0]

Writes simulated Asterisk 20 calls in real time (each row committed at its
event time), runs the real agent (`sipstack-agent run`, SELECT-only user,
START_FROM=latest) and an in-process receiver, and prints p50/p90/p99/max of
the time from the commit of a call's LINKEDID_END row to the receiver storing
that call's complete document. Target: p99 <= poll interval + 0.5 s.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from sipstack_agent.demo import AgentProcess, agent_env, percentile  # noqa: E402
from sipstack_agent.receiver import Receiver  # noqa: E402
from sipstack_agent.sim.play import play  # noqa: E402
from sipstack_agent.sim.timeline import Write, is_linkedid_end, timeline  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402
from sipstack_agent.sim.writers import PbxWriter  # noqa: E402
from throughput import API_KEY, PgBench  # noqa: E402


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="calls started per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of traffic")
    ap.add_argument("--poll", type=float, default=1.0, help="CDR_POLL_INTERVAL of the agent")
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sipstack-latency-"))
    pg = PgBench(args.pg)
    await pg.create()
    receiver = Receiver(work / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    env = agent_env(
        api_url=receiver.calls_url,
        state_dir=str(work / "state"),
        db=pg.env(),
        api_key=API_KEY,
        extra={"START_FROM": "latest", "CDR_POLL_INTERVAL": str(args.poll), "LOG_LEVEL": "WARNING"},
    )
    agent = AgentProcess(env, work / "agent.log")
    agent.start()
    import asyncpg

    con = await asyncpg.connect(pg.db_dsn)
    writer = PbxWriter("postgresql", con)
    try:
        await asyncio.sleep(2.0)  # agent anchored at the end of the (empty) tables
        n = int(args.rate * args.duration)
        start = datetime.now(UTC) + timedelta(seconds=0.2)
        gen = TrafficGenerator(9, start=start, ring=(0.5, 3), talk=(1, 10))
        calls = gen.calls(n, rate=args.rate, start=start)
        writes = timeline(calls)
        print(
            f"writing {n} calls at {args.rate:g}/s ({len(writes)} rows) for ~{args.duration:g}s "
            f"+ call durations; agent poll interval {args.poll:g}s"
        )

        async def write(batch: Sequence[Write]) -> None:
            await writer.write(batch)

        committed: dict[str, float] = {}
        await play(writes, write, t0=start, committed=committed, mark=is_linkedid_end)
        expected = {c.expected.linkedid for c in calls}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if expected <= set(receiver.complete_received_at()):
                break
            await asyncio.sleep(0.2)
        got = receiver.complete_received_at()
        lat = [got[k] - committed[k] for k in expected if k in got and k in committed]
        missing = len(expected - set(got))
        print()
        print(f"calls complete at the receiver: {len(expected) - missing}/{len(expected)}")
        for q in (50, 90, 99):
            print(f"p{q:<3} LINKEDID_END commit -> stored: {percentile(lat, q):.3f}s")
        print(f"max  LINKEDID_END commit -> stored: {max(lat, default=0):.3f}s")
        target = args.poll + 0.5
        p99 = percentile(lat, 99)
        print(f"target p99 <= {target:.1f}s: {'met' if p99 <= target else 'NOT met'}")
        return 0 if not missing else 1
    finally:
        await writer.close() if writer.owns else await con.close()
        agent.terminate(15)
        await receiver.stop()
        await pg.drop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
