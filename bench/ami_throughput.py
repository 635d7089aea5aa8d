"""CEL over AMI: rows/s of the agent's AMI source vs a raw read of the same socket.

    .venv/bin/python bench/ami_throughput.py [--events 200000]

A simulated Asterisk Manager Interface (sipstack_agent.sim.ami.AmiServer, in
another process) sends --events `Event: CEL` messages, made from the real
Asterisk 20 sample rows (bench/realrows.py copies: shifted ids and times), as
fast as the socket takes them, to each client that logs in:

1. raw: a bare asyncio client logs in and only splits the stream into
   messages (the ceiling of the socket and the server);
2. source: the agent's `CelAmiSource` (panoramisk) maps every event to a
   CelRow and stores it in a real StateStore (ingest in batches, durable on
   arrival): rows/s stored.

Prints both rates and their ratio. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.config import AmiSettings  # noqa: E402
from sipstack_agent.metrics import Metrics  # noqa: E402
from sipstack_agent.model import CEL_COLUMNS  # noqa: E402
from sipstack_agent.sim.ami import AmiServer, cel_event, event_block  # noqa: E402
from sipstack_agent.sources.cel_ami import CelAmiSource  # noqa: E402

USER, SECRET = "sipstack", "bench-secret"
AMI_NAMES = {
    "cid_name": "CallerIDname",
    "cid_num": "CallerIDnum",
    "cid_ani": "CallerIDani",
    "cid_rdnis": "CallerIDrdnis",
    "cid_dnid": "CallerIDdnid",
    "exten": "Exten",
    "context": "Context",
    "channame": "Channel",
    "appname": "Application",
    "appdata": "AppData",
    "accountcode": "AccountCode",
    "peer": "Peer",
    "extra": "Extra",
}


def wire(events: int) -> bytes:
    """`events` CEL messages from the real sample, as Asterisk's cel_manager sends them."""
    sample = load_sample()
    n = -(-events // len(sample.cel))
    cel, _ = copies(sample, n, datetime.now(UTC), (CEL_COLUMNS, ()))
    out: list[bytes] = []
    idx = {c: i + 1 for i, c in enumerate(CEL_COLUMNS)}
    for r in cel[:events]:
        t = r[idx["eventtime"]].replace(tzinfo=UTC)
        fields = {ami: str(r[idx[c]] or "") for c, ami in AMI_NAMES.items()}
        h = cel_event(
            str(r[idx["eventtype"]]),
            t,
            str(r[idx["uniqueid"]]),
            str(r[idx["linkedid"]]),
            timestamp=True,
            **fields,
        )
        out.append(event_block(h))
    return b"".join(out)


async def serve(port_file: Path, events: int) -> None:
    """The server process: blast the events at every client that logs in."""
    data = wire(events)
    async with AmiServer(USER, SECRET) as srv:
        await asyncio.to_thread(port_file.write_text, str(srv.port))
        served = 0
        while True:
            await srv.wait_logins(served + 1, timeout=3600)
            served += 1
            session = srv.listeners()[-1]
            chunk = 1 << 20
            for i in range(0, len(data), chunk):
                session.writer.write(data[i : i + chunk])
                await session.writer.drain()


async def raw_read(port: int, events: int) -> float:
    """Seconds a bare client takes to read `events` messages after logging in."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # banner
    writer.write(
        f"Action: Login\r\nUsername: {USER}\r\nSecret: {SECRET}\r\nEvents: call\r\n\r\n".encode()
    )
    seen = -2  # the login response and FullyBooted come first
    t0 = time.perf_counter()
    buf = b""
    while seen < events:
        data = await reader.read(1 << 20)
        if not data:
            break
        buf += data
        parts = buf.split(b"\r\n\r\n")
        buf = parts.pop()
        seen += len(parts)
    dt = time.perf_counter() - t0
    writer.close()
    return dt


async def source_read(
    port: int, events: int, work: Path, batch: int | None = None
) -> tuple[int, float, int]:
    """(rows stored, seconds, ingest calls) of the agent's CelAmiSource into a StateStore."""
    from sipstack_agent.state import StateStore

    store = await StateStore.open(work / "state.db")
    ingests = 0
    real_ingest = store.ingest

    async def counted(cels=(), cdrs=(), positions=None):  # type: ignore[no-untyped-def]
        nonlocal ingests
        ingests += 1
        return await real_ingest(cels, cdrs, positions)

    store.ingest = counted  # type: ignore[method-assign]
    kw = {"batch_max": batch} if batch else {}
    src = CelAmiSource(
        AmiSettings(host="127.0.0.1", port=port, username=USER, password=SECRET),
        store,
        Metrics(),
        **kw,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        while src.events_received == 0:  # noqa: ASYNC110 - the source has no event for it
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        while src.events_stored < events:
            await asyncio.sleep(0.01)
            if task.done():
                break
        dt = time.perf_counter() - t0
        return src.events_stored, dt, ingests
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await store.close()


def start_server(events: int, port_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--events", str(events), "--serve", str(port_file)]
    )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, help="the source's batch_max (rows per ingest)")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        await serve(args.serve, args.events)
        return 0
    with tempfile.TemporaryDirectory(prefix="amibench-") as tmp:
        port_file = Path(tmp) / "port"
        server = start_server(args.events, port_file)
        try:
            while not port_file.exists() or not port_file.read_text():
                await asyncio.sleep(0.1)
                if server.poll() is not None:
                    print("the AMI server did not start")
                    return 1
            port = int(port_file.read_text())
            raw_s = await raw_read(port, args.events)
            raw = args.events / raw_s
            print(f"raw socket read : {args.events:,} CEL events in {raw_s:.2f}s = {raw:,.0f}/s")
            n, src_s, ingests = await source_read(port, args.events, Path(tmp), args.batch)
            rate = n / src_s
            print(
                f"CelAmiSource   : {n:,} rows stored in {src_s:.2f}s = {rate:,.0f} rows/s "
                f"({rate / raw:.1%} of the raw read), {ingests:,} ingest commits "
                f"({n / max(ingests, 1):,.0f} rows each)"
            )
            return 0 if n >= args.events else 1
        finally:
            server.kill()
            server.wait(10)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
