"""The agent's HTTP transport against a bare aiohttp client: CPU per POST, same receiver.

    .venv/bin/python bench/transport.py [--posts 3000] [--concurrency 16] [--rounds 2]

Starts the local receiver (`sipstack-agent receive`, its own process) and POSTs
one call document --posts times, --concurrency in flight, a fresh
Idempotency-Key each, first with a bare `aiohttp.ClientSession` (what
bench/backlog.py calls the ceiling), then with `shipping.client.AiohttpTransport`
(what the shipper uses: proxy choice, bounded body read, Response), alternated
--rounds times. Prints POSTs/s and the CPU time of this process (the client
side only) per POST. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from sipstack_agent.rules.api_urls import CALLS_PATH  # noqa: E402
from sipstack_agent.shipping.client import AiohttpTransport, build_headers  # noqa: E402
from throughput import API_KEY, free_port, start_receiver  # noqa: E402

DOC = {
    "connector": "asterisk",
    "connector_version": "0.0.0",
    "customer_id": 42,
    "tenant": "bench",
    "hostname": "pbx-bench",
    "is_complete": True,
    "call_time": "2026-11-01T10:00:00+00:00",
    "duration_seconds": 20,
    "disposition": "ANSWERED",
    "direction": "i",
    "call_threads": [
        {"time": "2026-11-01T10:00:00+00:00", "event": "CHAN_START", "channel": "PJSIP/1-1"}
    ]
    * 12,
    "call_threads_count": 12,
    "ship_phase": "complete",
    "shipped_at": "2026-11-01T10:01:00+00:00",
    "answered": True,
    "timezone": "UTC",
    "timezone_source": "configured",
}


async def run(
    n: int, concurrency: int, post: Callable[[int], Awaitable[int]]
) -> tuple[float, float]:
    """(POSTs/s, client CPU µs per POST) of n posts, `concurrency` in flight."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    bad = 0

    async def worker() -> None:
        nonlocal bad
        while not queue.empty():
            i = queue.get_nowait()
            if await post(i) >= 300:
                bad += 1

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    c1, t1 = time.process_time(), time.perf_counter()
    if bad:
        print(f"  {bad} answers were not 2xx")
    return n / (t1 - t0), (c1 - c0) / n * 1e6


async def main() -> None:
    import aiohttp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--posts", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sipstack-transport-"))
    port = free_port()
    recv = start_receiver(port, work / "receiver.db", work / "receiver.log")
    url = f"http://127.0.0.1:{port}{CALLS_PATH}"
    body = json.dumps(DOC, separators=(",", ":")).encode()
    run_id = uuid.uuid4().hex[:8]
    try:
        await asyncio.sleep(1.5)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            AiohttpTransport(limit=args.concurrency) as transport,
        ):

            async def bare(i: int, tag: str) -> int:
                hdrs = build_headers(API_KEY, idempotency_key=f"bare:{run_id}{tag}:{i}:1")
                async with session.post(url, data=body, headers=hdrs) as resp:
                    await resp.read()
                    return resp.status

            async def agent(i: int, tag: str) -> int:
                hdrs = build_headers(API_KEY, idempotency_key=f"agent:{run_id}{tag}:{i}:1")
                return (await transport.post_json(url, body, hdrs)).status

            await run(200, args.concurrency, lambda i: bare(i, "warm"))
            await run(200, args.concurrency, lambda i: agent(i, "warm"))
            for k in range(args.rounds):
                for name, fn in (("bare aiohttp", bare), ("AiohttpTransport", agent)):
                    rate, cpu = await run(
                        args.posts, args.concurrency, lambda i, fn=fn, k=k: fn(i, f"r{k}")
                    )
                    print(
                        f"{name:<17} {rate:7,.0f} POSTs/s, client CPU {cpu:6.0f} µs per POST "
                        f"(load average {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
    finally:
        recv.terminate()
        recv.wait(15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
