"""The double write, measured: what copying PBX rows into the state store costs per call.

    .venv/bin/python bench/double_write.py [--copies 1000] [--rounds 3] [--sim-calls 40000]
                                           [--pg postgresql://postgres@127.0.0.1/postgres]
                                           [--profile] [--no-pg]

Issue 13's design question: the PBX tables are already a durable, re-readable
log; a low-watermark checkpoint (moved past a row only once every call the row
belongs to has its document in the durable outbox) would avoid copying every
row into SQLite. This bench answers it with the agent's real code, in-process,
one stage after the other, timing each with `time.process_time()` (the CPU of
this process, aiosqlite's worker thread included) and `time.perf_counter()`:

1. **read**: the real `SqlSource` (poll_once until caught up) over a throwaway
   PostgreSQL database holding `--copies` copies of the recorded Asterisk 20
   scenarios (bench/realrows.py), read by a SELECT-only role, into a store
   stand-in that only keeps the rows: asyncpg + the source's row building.
2. **as built** (the double write): `StateStore.ingest` of the same pages with
   their positions, then the evaluator's loop (`due_calls`, `load_calls` in
   batches of 500, `calls.evaluate`, `save_evaluations`), then the real
   `Shipper` + `AiohttpTransport` until the outbox is empty, against a local
   receiver (`sipstack-agent receive`, another process, so its CPU is not
   counted).
3. **low watermark, the ceiling**: the same rows grouped in memory
   (`rules.ids.group_pairs`, the store's own grouping rule), the call rows
   (ship state) upserted and read back per batch, `calls.evaluate`,
   `save_evaluations` (outbox + ship state: still durable), one checkpoint per
   page, and the same shipper against a second receiver. The documents of both
   designs are compared (they must be identical).
3b. **write-through**: rows still stored on arrival (`ingest`, as built), but
   evaluated from memory (a cache of the open calls' rows filled at ingest): no
   `load_calls`; ship states read per batch.
4. **what the low watermark costs** (pure simulation over sipstack_agent.sim traffic,
   `--sim-calls` calls at 50 calls/s plus a few long calls): peak rows held
   for open calls, how far back a checkpoint pinned by the oldest open call
   reaches (the re-read on restart), with and without "keep locally" (calls
   open longer than T spill their rows to the store and stop pinning the
   checkpoint); bytes per held row from the real `CelRow` (tracemalloc).

`--profile` runs stage 2 once more under cProfile and prints the agent
functions with the most cumulative time. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import heapq
import io
import json
import logging
import os
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.calls import evaluate  # noqa: E402
from sipstack_agent.config import Settings, load_settings  # noqa: E402
from sipstack_agent.demo import agent_env  # noqa: E402
from sipstack_agent.metrics import Metrics  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow, ShipState  # noqa: E402
from sipstack_agent.rules.api_urls import CALLS_PATH  # noqa: E402
from sipstack_agent.rules.ids import group_pairs, linkedid_sort_key  # noqa: E402
from sipstack_agent.shipping import Shipper  # noqa: E402
from sipstack_agent.shipping.client import AiohttpTransport  # noqa: E402
from sipstack_agent.sim.timeline import timeline  # noqa: E402
from sipstack_agent.sim.traffic import TrafficGenerator  # noqa: E402
from sipstack_agent.sources.sql.poller import SqlSource  # noqa: E402
from sipstack_agent.state import IngestResult, StateStore  # noqa: E402
from sipstack_agent.state.codec import cel_decode, cel_encode, ship_from_json, ts  # noqa: E402
from sipstack_agent.state.grouping import mark_dirty  # noqa: E402
from sipstack_agent.state.positions import set_positions  # noqa: E402
from sipstack_agent.state.query import select_in  # noqa: E402
from throughput import API_KEY, PgBench, free_port, start_receiver  # noqa: E402

_T = TypeVar("_T")
BATCH = 500  # the evaluator's batch (app.Agent.evaluate_batch)


# ----------------------------------------------------------------- stage timing


@dataclass
class Stages:
    """CPU and wall seconds per named stage (accumulated)."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0

    async def run(self, name: str, coro: Awaitable[_T]) -> _T:
        with self.time(name):
            return await coro


# ----------------------------------------------------------------- 1. read


class CaptureStore:
    """What SqlSource needs of a store, keeping the pages it would ingest."""

    def __init__(self) -> None:
        self.pages: list[tuple[list[CelRow], list[CdrRow], dict[str, dict[str, Any]]]] = []
        self._pos: dict[str, dict[str, Any]] = {}

    async def get_position(self, name: str) -> dict[str, Any] | None:
        return self._pos.get(name)

    async def set_position(self, name: str, value: dict[str, Any]) -> None:
        self._pos[name] = dict(value)

    async def ingest(
        self,
        cels: Sequence[CelRow] = (),
        cdrs: Sequence[CdrRow] = (),
        positions: dict[str, dict[str, Any]] | None = None,
    ) -> IngestResult:
        self.pages.append((list(cels), list(cdrs), dict(positions or {})))
        self._pos.update(positions or {})
        return IngestResult(len(cels), len(cdrs), 0)


async def read_all(settings: Settings, st: Stages) -> CaptureStore:
    cap = CaptureStore()
    for kind in ("cel", "cdr"):
        src = SqlSource(settings, kind, cap, Metrics())  # type: ignore[arg-type]
        try:
            with st.time("read"):
                while True:
                    n = await src.poll_once()
                    if n == 0 and not src.backlog:
                        break
        finally:
            await src.close()
    return cap


# ----------------------------------------------------------------- 2./3. pipelines


def _evaluate_batch(
    items: Sequence[tuple[str, Sequence[CelRow], Sequence[CdrRow], ShipState]],
    settings: Settings,
    now: datetime,
) -> list[tuple[str, Any]]:
    """What app.Agent.evaluate_keys does per record (no recordings stage here)."""
    return [
        (
            key,
            evaluate(
                cels,
                cdrs,
                [],
                ship,
                call_key=key,
                now=now,
                settings=settings.calls,
                identity=settings.identity,
                gaps=[],
                watermark=None,
            ),
        )
        for key, cels, cdrs, ship in items
    ]


async def as_built(
    cap: CaptureStore, store: StateStore, settings: Settings, st: Stages, now: datetime
) -> int:
    """Ingest every page, then evaluate every due call in batches; returns calls evaluated."""
    for cels, cdrs, pos in cap.pages:
        await st.run("ingest (rows into SQLite)", store.ingest(cels, cdrs, pos))
    done = 0
    while True:
        keys = await st.run("due_calls", store.due_calls(now, BATCH))
        if not keys:
            return done
        recs = await st.run("load_calls (rows back)", store.load_calls(keys))
        with st.time("evaluate (calls/, documents)"):
            results = _evaluate_batch(
                [(r.call_key, r.cels, r.cdrs, r.ship) for r in recs], settings, now
            )
        await st.run(
            "save_evaluations (outbox, ship state)", store.save_evaluations(results, now=now)
        )
        done += len(results)


def group_in_memory(
    cap: CaptureStore,
) -> list[tuple[str, list[CelRow], list[CdrRow]]]:
    """The store's grouping rule over rows held in memory: linkedid groups merged
    when they share a uniqueid, keyed by the smallest linkedid."""
    cel_of: dict[str, list[CelRow]] = {}
    cdr_of: dict[str, list[CdrRow]] = {}
    pairs: set[tuple[str, str]] = set()
    for cels, cdrs, _ in cap.pages:
        for c in cels:
            cel_of.setdefault(c.call_linkedid, []).append(c)
            pairs.add((c.call_linkedid, c.uniqueid))
        for d in cdrs:
            cdr_of.setdefault(d.call_linkedid, []).append(d)
            pairs.add((d.call_linkedid, d.uniqueid))
    out = []
    for group in group_pairs(pairs):
        lids = sorted(group, key=linkedid_sort_key)
        out.append(
            (
                lids[0],
                [r for lid in lids for r in cel_of.get(lid, ())],
                [r for lid in lids for r in cdr_of.get(lid, ())],
            )
        )
    return out


async def low_watermark(
    cap: CaptureStore, store: StateStore, settings: Settings, st: Stages, now: datetime
) -> int:
    """Rows grouped in memory; call rows, outbox and checkpoint still in SQLite."""
    with st.time("group rows in memory"):
        groups = group_in_memory(cap)
    now_ts = ts(now)

    def upsert_calls(conn: sqlite3.Connection, keys: list[str]) -> list[tuple[str, ShipState]]:
        mark_dirty(conn, keys, now_ts)  # the call row that holds the ship state
        return [
            (k, ship_from_json(s))
            for k, s in select_in(
                conn, "SELECT call_key, ship FROM calls WHERE call_key IN ({in})", keys
            )
        ]

    for i in range(0, len(groups), BATCH):
        batch = groups[i : i + BATCH]
        ships = dict(
            await st.run(
                "call rows (ship state)",
                store._tx(upsert_calls, [k for k, _, _ in batch]),
            )
        )
        with st.time("evaluate (calls/, documents)"):
            results = _evaluate_batch(
                [(k, cels, cdrs, ships[k]) for k, cels, cdrs in batch], settings, now
            )
        await st.run(
            "save_evaluations (outbox, ship state)", store.save_evaluations(results, now=now)
        )
    for _, _, pos in cap.pages:  # the checkpoint still commits (one per page read)
        await st.run("checkpoint", store._tx(set_positions, pos, now_ts))
    return len(groups)


async def write_through(
    cap: CaptureStore, store: StateStore, settings: Settings, st: Stages, now: datetime
) -> int:
    """Rows still stored on arrival (ingest, as built), but evaluated from memory:
    the rows of open calls kept in a cache filled at ingest, so nothing is read back
    (load_calls only after a restart or a cache eviction); ship states read per batch."""
    for cels, cdrs, pos in cap.pages:
        await st.run("ingest (rows into SQLite)", store.ingest(cels, cdrs, pos))
    with st.time("group rows in memory"):
        groups = group_in_memory(cap)

    def ships(conn: sqlite3.Connection, keys: list[str]) -> list[tuple[str, ShipState]]:
        sql = "SELECT call_key, ship FROM calls WHERE call_key IN ({in})"
        return [(k, ship_from_json(s)) for k, s in select_in(conn, sql, keys)]

    for i in range(0, len(groups), BATCH):
        batch = groups[i : i + BATCH]
        ship = dict(
            await st.run("call rows (ship state)", store._run(ships, [k for k, *_ in batch]))
        )
        with st.time("evaluate (calls/, documents)"):
            results = _evaluate_batch(
                [(k, cels, cdrs, ship[k]) for k, cels, cdrs in batch], settings, now
            )
        await st.run(
            "save_evaluations (outbox, ship state)", store.save_evaluations(results, now=now)
        )
    return len(groups)


async def ship_all(store: StateStore, settings: Settings, st: Stages) -> int:
    transport = AiohttpTransport.from_settings(settings.api)
    shipper = Shipper(store, transport, settings.api, settings.identity, Metrics())
    sent = 0
    try:
        with st.time("ship (outbox read, JSON, HTTP, delivered)"):
            while True:
                n = await shipper.ship_once(datetime.now(UTC))
                if n == 0:
                    break
                sent += n
    finally:
        await transport.close()
    if shipper.delivered_total != sent:
        print(
            f"  WARNING: {sent - shipper.delivered_total} documents not delivered "
            f"({shipper.last_error})"
        )
    return sent


async def wait_port(port: int, timeout: float = 30.0) -> None:
    """Until the receiver on `port` accepts connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def outbox_docs(path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return dict(con.execute("SELECT idempotency_key, payload FROM outbox"))


def print_stages(
    title: str, st: Stages, calls: int, rows: int, base: Stages | None = None
) -> float:
    merged = Stages(dict(st.cpu), dict(st.wall))
    if base is not None:
        for k, v in base.cpu.items():
            merged.cpu[k] = merged.cpu.get(k, 0.0) + v
            merged.wall[k] = merged.wall.get(k, 0.0) + base.wall[k]
    total = sum(merged.cpu.values())
    print(f"\n{title}: {calls:,} calls, {rows:,} rows")
    print(f"  {'stage':44} {'CPU s':>7} {'µs/call':>8} {'share':>6} {'wall s':>7}")
    order = sorted(merged.cpu, key=lambda k: (k != "read", -merged.cpu[k]))
    for k in order:
        c = merged.cpu[k]
        print(f"  {k:44} {c:7.2f} {c / calls * 1e6:8.0f} {c / total:6.1%} {merged.wall[k]:7.2f}")
    print(
        f"  {'total':44} {total:7.2f} {total / calls * 1e6:8.0f} {'':6} "
        f"{sum(merged.wall.values()):7.2f}"
    )
    print(
        f"  = {calls / total:,.0f} calls/s, {rows / total:,.0f} rows/s of one core's CPU "
        f"(the stages run one after the other, nothing overlaps)"
    )
    return total


# ----------------------------------------------------------------- 4. simulation


@dataclass
class SimResult:
    rows: int
    peak_held: int
    peak_pin: int
    mean_pin: float
    spilled_rows: int
    spilled_calls: int


def simulate(writes: Sequence[Any], lag_rows: int, keep_after: float | None) -> SimResult:
    """Read the rows in commit (id) order. A call holds its rows from its first row
    until the reader is `lag_rows` rows past its last one (evaluated, document in
    the outbox); the checkpoint is the first row of the oldest held call. With
    `keep_after`, a call held longer than that (in PBX time) spills its rows to the
    store and stops pinning the checkpoint (its later rows go to the store too)."""
    last: dict[str, int] = {}
    for i, w in enumerate(writes):
        last[w.linkedid] = i
    held: dict[str, int] = {}  # linkedid -> rows held
    first: dict[str, tuple[int, datetime]] = {}
    pins: list[tuple[int, str]] = []  # heap of (first id, linkedid)
    release: list[tuple[int, str]] = []  # heap of (release id, linkedid)
    spilled: set[str] = set()
    spill_heap: list[tuple[datetime, str]] = []
    n_held = peak_held = peak_pin = 0
    pin_sum = 0.0
    spilled_rows = 0
    for i, w in enumerate(writes):
        lid = w.linkedid
        if lid in spilled:
            spilled_rows += 1
        else:
            if lid not in first:
                first[lid] = (i, w.at)
                heapq.heappush(pins, (i, lid))
                if keep_after is not None:
                    heapq.heappush(spill_heap, (w.at + timedelta(seconds=keep_after), lid))
            held[lid] = held.get(lid, 0) + 1
            n_held += 1
        if last[lid] == i:
            heapq.heappush(release, (i + lag_rows, lid))
        while release and release[0][0] <= i:
            _, gone = heapq.heappop(release)
            n_held -= held.pop(gone, 0)
            first.pop(gone, None)
        while spill_heap and spill_heap[0][0] <= w.at:
            _, s = heapq.heappop(spill_heap)
            if s in held and last[s] > i:  # still open (an ended call waits for the evaluator)
                k = held.pop(s)
                n_held -= k
                spilled_rows += k
                spilled.add(s)
                first.pop(s, None)
        while pins and pins[0][1] not in first:
            heapq.heappop(pins)
        pin = i - pins[0][0] if pins else 0
        peak_held = max(peak_held, n_held)
        peak_pin = max(peak_pin, pin)
        pin_sum += pin
    return SimResult(
        len(writes), peak_held, peak_pin, pin_sum / max(1, len(writes)), spilled_rows, len(spilled)
    )


def bytes_per_row(cels: Sequence[CelRow]) -> float:
    """Heap bytes of a CelRow as the store decodes it (its strings and datetime included)."""
    sample = [cel_encode(r) for r in cels[:20000]]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rows = [cel_decode(s) for s in sample]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / max(1, len(rows))


def sim_traffic(n: int, long_calls: int, long_s: float) -> tuple[list[Any], list[Any]]:
    """Commit order of n simulated calls at 50 calls/s, without and with `long_calls`
    calls of `long_s` seconds begun 30 s in."""
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    gen = TrafficGenerator(7, start=start, ring=(0.5, 3), talk=(2, 30))
    calls = gen.calls(n, rate=50.0, start=start)
    gen = TrafficGenerator(
        11, start=start, ring=(1, 2), talk=(long_s, long_s * 1.01), first_channel=10_000_000
    )
    longs = gen.calls(long_calls, rate=1.0, start=start + timedelta(seconds=30))
    return timeline(calls), timeline(calls + longs)


def print_simulation(args: argparse.Namespace, row_bytes: float, build_rate: float) -> None:
    span = args.sim_calls / 50.0
    long_s = max(60.0, round(span * 0.75 / 60) * 60.0)
    print(
        f"\nLow watermark's costs, simulated over sipstack_agent.sim traffic at 50 calls/s "
        f"({args.sim_calls:,} calls, {span:,.0f} s); a call's rows are held until the reader "
        f"is {args.lag_rows:,} rows past its last row (--lag-rows: the evaluator's lag, its "
        f"document in the outbox); bytes per held row (a real CelRow, tracemalloc): "
        f"{row_bytes:,.0f}"
    )
    print(
        f"  {'traffic':30} {'keep locally':>12} {'peak held rows':>15} {'MB':>6} "
        f"{'checkpoint pinned back (peak)':>30} {'mean':>8} {'rows spilled':>12}"
    )
    rate_rows = 0.0
    short, mixed = sim_traffic(args.sim_calls, 5, long_s)
    for n_long, keep in ((0, None), (5, None), (5, 300.0), (5, 60.0)):
        writes = mixed if n_long else short
        if n_long == 0:
            rate_rows = len(writes) / (writes[-1].at - writes[0].at).total_seconds()
        r = simulate(writes, lag_rows=args.lag_rows, keep_after=keep)
        label = "calls of 2-30 s" if n_long == 0 else f"+ {n_long} calls of {long_s:,.0f} s"
        k = "-" if keep is None else f"after {keep:.0f} s"
        spilled = f"{r.spilled_rows / r.rows:.3%}" if keep is not None else "-"
        print(
            f"  {label:30} {k:>12} {r.peak_held:15,} {r.peak_held * row_bytes / 1e6:6.1f} "
            f"{r.peak_pin:>13,} rows = {r.peak_pin / build_rate:6.1f} s {r.mean_pin:8,.0f} "
            f"{spilled:>12}"
        )
    print(
        f"  the PBX writes {rate_rows:,.0f} rows/s at 50 calls/s: an open call pins "
        f"{rate_rows * 3600:,.0f} rows per hour of its age; the restart re-reads them at the "
        f"source's {build_rate:,.0f} rows/s (stage 1's CPU) = "
        f"{rate_rows * 3600 / build_rate:,.0f} s "
        f"per hour pinned (CALL_MAX_AGE 6 h: {rate_rows * 6 * 3600 / build_rate:,.0f} s, "
        f"{rate_rows * 6 * 3600:,.0f} rows)"
    )


# ----------------------------------------------------------------- main


def profile_top(prof: cProfile.Profile, top: int = 22) -> None:
    s = io.StringIO()
    ps = pstats.Stats(prof, stream=s)
    ps.sort_stats("cumulative").print_stats(r"sipstack_agent|json|sqlite3", top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    print("\ncProfile of the as-built evaluation (cumulative; aiosqlite's thread is not seen):")
    for ln in lines[start : start + top + 1]:
        print("  " + ln[:150])


async def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--copies", type=int, default=1000, help="copies of the recorded scenarios")
    ap.add_argument(
        "--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1/postgres")
    )
    ap.add_argument("--sim-calls", type=int, default=40_000)
    ap.add_argument("--lag-rows", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--rounds", type=int, default=3, help="as built, low watermark, write-through; repeated"
    )
    ap.add_argument("--no-pg", action="store_true", help="only the simulation (part 4)")
    args = ap.parse_args()
    logging.getLogger("sipstack_agent").setLevel(logging.ERROR)  # the sample's id gaps warn
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    if args.no_pg:
        print_simulation(args, 1500.0, 25_000.0)
        return 0

    work = Path(tempfile.mkdtemp(prefix="sipstack-double-write-"))
    pg = PgBench(args.pg)
    await pg.create()
    receivers = []
    try:
        sample = load_sample()
        cel, cdr = copies(
            sample, args.copies, datetime.now(UTC) - timedelta(hours=1), (CEL_COLUMNS, CDR_COLUMNS)
        )
        await pg.copy_rows(cel, cdr, with_id=True)
        rows = len(cel) + len(cdr)
        print(
            f"{args.copies} copies of the {sample.calls} recorded calls: "
            f"{len(cel):,} CEL + {len(cdr):,} CDR rows in PostgreSQL",
            flush=True,
        )
        ports = [free_port(), free_port(), free_port()]
        for i, port in enumerate(ports):
            receivers.append(start_receiver(port, work / f"recv{i}.db", work / f"recv{i}.log"))

        def settings_for(i: int, rnd: int) -> Settings:
            env = agent_env(
                api_url=f"http://127.0.0.1:{ports[i]}{CALLS_PATH}",
                state_dir=str(work / f"state{i}"),
                db=pg.env(),
                api_key=API_KEY,
                extra={
                    "API_CONCURRENCY": "16",
                    "LOG_LEVEL": "ERROR",
                    "CONNECTOR_ID": f"dw{rnd}",
                    "RECORDING_PATHS": str(work / "monitor"),  # the same in both designs' documents
                },
            )
            return load_settings(env)

        for port in ports:
            await wait_port(port)

        read = Stages()
        cap = await read_all(settings_for(0, 0), read)
        n_read = sum(len(c) + len(d) for c, d, _ in cap.pages)
        build_rate = n_read / read.cpu["read"]
        raw_n, raw_s = await pg.raw_read_rate(5000)
        print(
            f"read: the real SqlSource read {n_read:,} rows in {len(cap.pages)} pages: "
            f"{read.cpu['read']:.2f} s CPU ({build_rate:,.0f} rows/s), "
            f"{read.wall['read']:.2f} s wall; raw asyncpg read of the same rows "
            f"{raw_n / raw_s:,.0f} rows/s wall",
            flush=True,
        )

        totals: list[tuple[float, float, float]] = []
        for rnd in range(1, args.rounds + 1):
            s_a, s_b = settings_for(0, rnd), settings_for(1, rnd)
            now = datetime.now(UTC)  # one "now" for both designs: their documents must be equal
            gc.collect()
            st_a = Stages()
            store_a = await StateStore.open(
                work / f"a{rnd}.db", connector_id=s_a.identity.connector_id
            )
            try:
                calls_a = await as_built(cap, store_a, s_a, st_a, now)
                docs_a = outbox_docs(work / f"a{rnd}.db")
                sent_a = await ship_all(store_a, s_a, st_a)
            finally:
                await store_a.close()
            gc.collect()
            st_b = Stages()
            store_b = await StateStore.open(
                work / f"b{rnd}.db", connector_id=s_b.identity.connector_id
            )
            try:
                calls_b = await low_watermark(cap, store_b, s_b, st_b, now)
                docs_b = outbox_docs(work / f"b{rnd}.db")
                sent_b = await ship_all(store_b, s_b, st_b)
            finally:
                await store_b.close()
            gc.collect()
            st_c = Stages()
            s_c = settings_for(2, rnd)
            store_c = await StateStore.open(
                work / f"c{rnd}.db", connector_id=s_c.identity.connector_id
            )
            try:
                calls_c = await write_through(cap, store_c, s_c, st_c, now)
                docs_c = outbox_docs(work / f"c{rnd}.db")
                await ship_all(store_c, s_c, st_c)
            finally:
                await store_c.close()
            same = docs_a == docs_b == docs_c
            print(
                f"\n=== round {rnd} (load average {os.getloadavg()[0]:.1f}) documents: as built "
                f"{len(docs_a):,} ({sent_a:,} POSTs), low watermark {len(docs_b):,} "
                f"({sent_b:,} POSTs), write-through {len(docs_c):,}; "
                f"identical: {'yes' if same else 'NO'}"
            )
            if not same:
                diff = (
                    sorted(set(docs_a) ^ set(docs_b))[:5]
                    or [
                        k
                        for k in docs_a
                        if json.loads(docs_a[k]) != json.loads(docs_b.get(k, "{}"))
                    ][:5]
                )
                print(f"  differing keys (first 5): {diff}")
            tot_a = print_stages("As built (rows copied into SQLite)", st_a, calls_a, rows, read)
            tot_b = print_stages(
                "Low watermark, the ceiling (rows in memory)", st_b, calls_b, rows, read
            )
            tot_c = print_stages(
                "Rows stored on arrival, evaluated from memory (write-through cache)",
                st_c,
                calls_c,
                rows,
                read,
            )
            store_cpu = sum(
                st_a.cpu.get(k, 0.0)
                for k in ("ingest (rows into SQLite)", "load_calls (rows back)")
            )
            print(
                f"\nthe double write (ingest + load_calls): {store_cpu:.2f} s CPU = "
                f"{store_cpu / calls_a * 1e6:,.0f} µs per call = {store_cpu / tot_a:.0%} of the "
                f"as-built pipeline; low watermark / as built: {tot_a / tot_b:.2f}x the calls "
                f"per CPU second ({calls_a / tot_a:,.0f} -> {calls_b / tot_b:,.0f} calls/s)"
            )
            totals.append((calls_a / tot_a, calls_b / tot_b, calls_c / tot_c))
        print(
            "\nrounds, calls per CPU second (as built / low watermark / write-through): "
            + ", ".join(
                f"{x:,.0f} / {y:,.0f} ({y / x:.2f}x) / {z:,.0f} ({z / x:.2f}x)"
                for x, y, z in totals
            )
        )

        if args.profile:
            s_a = settings_for(0, 0)
            store_p = await StateStore.open(work / "p.db", connector_id=s_a.identity.connector_id)
            prof = cProfile.Profile()
            try:
                prof.enable()
                await as_built(cap, store_p, s_a, Stages(), datetime.now(UTC))
                prof.disable()
            finally:
                await store_p.close()
            profile_top(prof)

        row_bytes = bytes_per_row([r for c, _, _ in cap.pages for r in c])
        print_simulation(args, row_bytes, build_rate)
    finally:
        for r in receivers:
            r.terminate()
            with contextlib.suppress(Exception):
                r.wait(15)
        await pg.drop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
