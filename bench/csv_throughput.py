"""cel_custom CSV throughput: rows/s parsed (target >= 50 000), rows/s stored, peak RSS.

    .venv/bin/python bench/csv_throughput.py                 # 1 000 000 lines
    .venv/bin/python bench/csv_throughput.py --lines 200000 --no-store

1. writes N realistic cel_custom lines (CSV_QUOTE on every column, quoted commas,
   JSON extra, some latin-1 names, a few multi-line values) to a temp file;
2. raw: reads the same file in the same chunks, only counting lines (the ceiling);
3. parse: streams the file through `CelCsvParser.parse_chunk` in 1 MiB chunks,
   exactly as the tailer reads it (bounded memory), timezone America/Toronto so
   the local->UTC conversion is on the measured path;
4. store (--no-store skips it): the whole `CelCsvSource.poll_once()` into a real
   `StateStore` (ingest per chunk, positions in the same transaction): rows/s stored.
Each rate is also printed as a share of the raw read.

Peak RSS is the process's maximum resident set (ru_maxrss): with bounded
chunks it stays flat however large the file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from sipstack_agent.config import CsvSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.sources.cel_csv import CelCsvParser, CelCsvSource

TARGET = 50_000
KINDS = (
    "CHAN_START",
    "APP_START",
    "CHAN_START",
    "ANSWER",
    "ANSWER",
    "BRIDGE_ENTER",
    "BRIDGE_ENTER",
    "BRIDGE_EXIT",
    "BRIDGE_EXIT",
    "HANGUP",
    "HANGUP",
    "CHAN_END",
    "CHAN_END",
    "LINKEDID_END",
)


def _q(values: list[str]) -> str:
    return ",".join('"' + v.replace('"', '""') + '"' for v in values) + "\n"


def write_file(path: Path, lines: int) -> int:
    t0 = datetime(2026, 11, 24, 4, 0, 0, tzinfo=UTC)
    names = ["John Smith", "Smith, John", "Dave Dunn", "Jos\xe9 N\xfa\xf1ez", "Carol Clark"]
    buf: list[bytes] = []
    size = 0
    with open(path, "wb") as fh:
        for n in range(lines):
            call, k = divmod(n, len(KINDS))
            kind = KINDS[k]
            t = t0 + timedelta(microseconds=250_000 * call + 1_370 * k)
            name = names[call % len(names)]
            extra = ""
            if kind.startswith("BRIDGE"):
                extra = '{"bridge_id":"%08x-8bb6","bridge_technology":"simple_bridge"}' % call  # noqa: UP031
            elif kind == "HANGUP":
                extra = '{"hangupcause":16,"hangupsource":"","dialstatus":"ANSWER"}'
            if n % 997 == 0:
                extra = '{"note":"two\nlines, quoted"}'
            line = _q(
                [
                    kind,
                    t.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    name,
                    "4085551234",
                    "4085551234",
                    "",
                    "4155551000",
                    "4155551000",
                    "from-pstn",
                    f"SIP/pstn-in-{call:08x}",
                    "Dial" if k > 1 else "",
                    "SIP/101,20,tT" if k > 1 else "",
                    "3",
                    "",
                    f"1795495160.{call * 2 + (k % 2)}",
                    f"1795495160.{call * 2}",
                    "SIP/101-00000001" if kind.startswith("BRIDGE") else "",
                    "",
                    extra,
                ]
            )
            data = line.encode("latin-1" if n % 50 == 3 else "utf-8", "replace")
            buf.append(data)
            size += len(data)
            if len(buf) >= 10_000:
                fh.write(b"".join(buf))
                buf.clear()
        fh.write(b"".join(buf))
    return size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_raw(path: Path, chunk: int) -> tuple[int, float]:
    """The ceiling: read the same file in the same chunks and only count its lines."""
    lines = 0
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while data := fh.read(chunk):
            lines += data.count(b"\n")
    return lines, time.perf_counter() - t


def bench_parse(path: Path, timezone: str, chunk: int) -> tuple[int, int, float]:
    parser = CelCsvParser(timezone=timezone)
    rows = bad = 0
    offset = 0
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            data = os.pread(fd, chunk, offset)
            if not data:
                break
            res = parser.parse_chunk(data, offset, final=len(data) < chunk, pos_prefix="1:2:")
            if res.consumed == 0:
                break
            rows += len(res.rows)
            bad += len(res.quarantined)
            offset += res.consumed
    finally:
        os.close(fd)
    return rows, bad, time.perf_counter() - t


async def bench_store(path: Path, timezone: str, state: Path) -> tuple[int, float]:
    from sipstack_agent.state import StateStore

    store = await StateStore.open(state / "state.db")
    try:
        src = CelCsvSource(
            CsvSettings(path=str(path)), store, Metrics(), timezone, start_from="beginning"
        )
        t = time.perf_counter()
        n = await src.poll_once()
        return n, time.perf_counter() - t
    finally:
        await store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--timezone", default="America/Toronto")
    ap.add_argument("--chunk", type=int, default=1024 * 1024)
    ap.add_argument(
        "--store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the whole source into a StateStore (default: yes)",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the parse pass")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="csvbench-") as tmp:
        path = Path(tmp) / "Master.csv"
        t = time.perf_counter()
        size = write_file(path, args.lines)
        print(f"wrote {args.lines:,} lines, {size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s")
        rss_before = peak_rss_mb()
        raw_lines, raw_dt = bench_raw(path, args.chunk)
        raw_rate = raw_lines / raw_dt
        print(f"raw read (lines counted, same chunks): {raw_lines:,} lines = {raw_rate:,.0f}/s")

        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        rows, bad, dt = bench_parse(path, args.timezone, args.chunk)
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
        rate = rows / dt
        print(
            f"parse: {rows:,} rows ({bad} quarantined) in {dt:.2f} s = {rate:,.0f} rows/s, "
            f"{size / dt / 1e6:.1f} MB/s, {rate / raw_rate:.1%} of the raw read  "
            f"[target >= {TARGET:,} rows/s: {'PASS' if rate >= TARGET else 'FAIL'}]"
        )
        print(f"peak RSS: {peak_rss_mb():.1f} MB (after writing the file: {rss_before:.1f} MB)")

        if args.store:
            n, dt = asyncio.run(bench_store(path, args.timezone, Path(tmp)))
            print(
                f"source -> StateStore: {n:,} rows in {dt:.2f} s = {n / dt:,.0f} rows/s, "
                f"{n / dt / raw_rate:.1%} of the raw read"
            )
            print(f"peak RSS: {peak_rss_mb():.1f} MB")
        if rows != args.lines:
            print(f"ERROR: expected {args.lines:,} rows")
            return 1
    return 0 if rate >= TARGET else 2


if __name__ == "__main__":
    raise SystemExit(main())
