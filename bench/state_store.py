"""The state store's hot path alone: ingest real rows, then load every call in batches.

    .venv/bin/python bench/state_store.py [--copies 1000] [--batch 500] [--cache-rows N]

Rows are the real Asterisk 20 sample multiplied (`realrows.copies`), turned into
`CelRow`/`CdrRow` the way the SQL source does (UTC times, NULLs as ""). Prints
rows/s of `StateStore.ingest` (5 000-row pages, like the SQL source) and calls/s
of `StateStore.load_calls` in batches of `--batch` due calls (like the evaluator),
in a throwaway state file, by the wall clock and per CPU second of the process (the
figure to compare on a shared, busy machine). Run it in an older checkout for a
before/after figure. `--cache-rows` sets the write-through cache's cap (rows kept in
memory, `state/rowcache.py`; 0 = off, every load reads the store); the bench prints
its hits, misses and the memory its rows hold. `--interleave` runs the evaluator's
pattern instead: after each page, `load_calls` of the calls that page touched (in
batches), and prints the CPU per row of both together.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow  # noqa: E402
from sipstack_agent.state import StateStore  # noqa: E402

_CEL = {f.name for f in dataclasses.fields(CelRow)}
_CDR = {f.name for f in dataclasses.fields(CdrRow)}


def _row(cls: type, names: set[str], cols: tuple[str, ...], vals: tuple[object, ...]) -> object:
    kw: dict[str, object] = {"row_id": vals[0]}
    for c, v in zip(cols, vals[1:], strict=True):
        if c not in names:
            continue
        if isinstance(v, datetime):
            v = v.replace(tzinfo=UTC)
        kw[c] = "" if v is None and c not in ("sequence", "duration", "billsec") else v
    if cls is CdrRow:
        kw["duration"] = kw.get("duration") or 0
        kw["billsec"] = kw.get("billsec") or 0
    return cls(**kw)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--cache-rows", type=int, default=None, help="default: the store's cap")
    ap.add_argument("--interleave", action="store_true", help="load each page's calls after it")
    args = ap.parse_args()
    cel_v, cdr_v = copies(load_sample(), args.copies, datetime.now(UTC), (CEL_COLUMNS, CDR_COLUMNS))
    cels = [_row(CelRow, _CEL, CEL_COLUMNS, v) for v in cel_v]
    cdrs = [_row(CdrRow, _CDR, CDR_COLUMNS, v) for v in cdr_v]
    with tempfile.TemporaryDirectory() as tmp:
        store = await StateStore.open(Path(tmp) / "state.db")
        if args.cache_rows is not None:
            store.row_cache.cap = args.cache_rows
        try:
            if args.interleave:
                await _interleaved(store, cels, cdrs, args.batch)
                return
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(cels), 5000):
                await store.ingest(cels[i : i + 5000], [], {})  # type: ignore[arg-type]
            for i in range(0, len(cdrs), 5000):
                await store.ingest([], cdrs[i : i + 5000], {})  # type: ignore[arg-type]
            t_ingest, c_ingest = time.perf_counter() - t0, time.process_time() - c0
            keys = await store.due_calls(datetime.now(UTC) + timedelta(days=3650), 10_000_000)
            t0, c0 = time.perf_counter(), time.process_time()
            loaded = rows = 0
            for i in range(0, len(keys), args.batch):
                for rec in await store.load_calls(keys[i : i + args.batch]):
                    loaded += 1
                    rows += len(rec.cels) + len(rec.cdrs)
            t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
            st = store.row_cache.stats()
        finally:
            await store.close()
    n = len(cels) + len(cdrs)
    print(
        f"ingest: {n:,} rows in {t_ingest:.2f}s = {n / t_ingest:,.0f} rows/s "
        f"(CPU {c_ingest:.2f}s = {n / c_ingest:,.0f} rows per CPU second)"
    )
    print(
        f"load_calls (batches of {args.batch}): {loaded:,} calls, {rows:,} rows in "
        f"{t_load:.2f}s = {loaded / t_load:,.0f} calls/s, {rows / t_load:,.0f} rows/s "
        f"(CPU {c_load:.2f}s = {loaded / c_load:,.0f} calls per CPU second)"
    )
    per_row = _row_bytes(cels[:2000])
    print(
        f"row cache: cap {st.cap:,} rows, holds {st.rows:,} rows of {st.linkedids:,} linkedids "
        f"(about {st.rows * per_row / 1e6:.1f} MB at {per_row:,} bytes per row), "
        f"{st.hits:,} hits, {st.misses:,} misses, {st.evicted:,} evicted; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


async def _interleaved(
    store: StateStore, cels: list[CelRow], cdrs: list[CdrRow], batch: int
) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    loaded = 0
    pages: list[tuple[list[CelRow], list[CdrRow]]] = [
        (cels[i : i + 5000], []) for i in range(0, len(cels), 5000)
    ]
    pages += [([], cdrs[i : i + 5000]) for i in range(0, len(cdrs), 5000)]
    for pc, pd in pages:
        await store.ingest(pc, pd, {})
        keys = list(dict.fromkeys(r.call_linkedid for r in (*pc, *pd)))
        for i in range(0, len(keys), batch):
            loaded += len(await store.load_calls(keys[i : i + batch]))
    t, c = time.perf_counter() - t0, time.process_time() - c0
    n = len(cels) + len(cdrs)
    st = store.row_cache.stats()
    print(
        f"interleaved ingest + load_calls: {n:,} rows, {loaded:,} loads in {t:.2f}s "
        f"(CPU {c:.2f}s = {n / c:,.0f} rows per CPU second, {c / n * 1e6:.1f} µs per row); "
        f"row cache: cap {st.cap:,}, holds {st.rows:,} rows, {st.hits:,} hits, "
        f"{st.misses:,} misses, {st.evicted:,} evicted; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


def _row_bytes(rows: list[CelRow]) -> int:
    """Bytes a row holds on its own: the object, its strings and its datetime."""
    total = 0
    for r in rows:
        total += sys.getsizeof(r) + sum(sys.getsizeof(v) for v in dataclasses.astuple(r))
    return total // max(1, len(rows))


if __name__ == "__main__":
    asyncio.run(main())
