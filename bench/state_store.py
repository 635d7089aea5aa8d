"""The state store's hot path alone: ingest real rows, then load every call in batches.

    .venv/bin/python bench/state_store.py [--copies 1000] [--batch 500]

Rows are the real Asterisk 20 sample multiplied (`realrows.copies`), turned into
`CelRow`/`CdrRow` the way the SQL source does (UTC times, NULLs as ""). Prints
rows/s of `StateStore.ingest` (5 000-row pages, like the SQL source) and calls/s
of `StateStore.load_calls` in batches of `--batch` due calls (like the evaluator),
in a throwaway state file, by the wall clock and per CPU second of the process (the
figure to compare on a shared, busy machine). Run it in an older checkout for a
before/after figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
    args = ap.parse_args()
    cel_v, cdr_v = copies(load_sample(), args.copies, datetime.now(UTC), (CEL_COLUMNS, CDR_COLUMNS))
    cels = [_row(CelRow, _CEL, CEL_COLUMNS, v) for v in cel_v]
    cdrs = [_row(CdrRow, _CDR, CDR_COLUMNS, v) for v in cdr_v]
    with tempfile.TemporaryDirectory() as tmp:
        store = await StateStore.open(Path(tmp) / "state.db")
        try:
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


if __name__ == "__main__":
    asyncio.run(main())
