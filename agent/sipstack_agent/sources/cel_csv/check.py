"""`sipstack-agent check` for CEL_MODE=csv: the file, its recent records, the zone."""

from __future__ import annotations

import asyncio
import csv
import os
import stat
import time
from datetime import UTC, datetime

from ...config import CsvSettings
from ...model import CelRow
from ...zones import PbxZone, judge, skew_advice
from .fileformat import NOT_REGULAR
from .parser import CelCsvParser, Quarantine

__all__ = ["check_csv"]


CheckResult = tuple[str, bool, str, str]


async def check_csv(
    settings: CsvSettings,
    timezone: str = "UTC",
    *,
    sample_lines: int = 50,
    found: str = "configured",
) -> list[CheckResult]:
    """`sipstack-agent check` for CEL_MODE=csv: [(name, ok, detail, hint)]. `found`: how
    the zone was found (zones.FOUND), named in the line about events in the future."""
    return await asyncio.to_thread(_check_csv_sync, settings, timezone, sample_lines, found)


def _check_csv_sync(
    settings: CsvSettings, timezone: str, sample_lines: int, found: str
) -> list[CheckResult]:
    out: list[CheckResult] = []
    path = settings.path
    try:
        parser = CelCsvParser(settings.columns or None, timezone)
    except (ValueError, KeyError) as exc:
        return [("cel_csv columns", False, str(exc), "fix CEL_CSV_COLUMNS")]
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            detail = f"{path} is not a regular file"
            return [("cel_csv file", False, detail, f"CEL_CSV_PATH: {NOT_REGULAR}")]
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - 256 * 1024)
            fh.seek(start)
            data = fh.read()
        mtime = os.path.getmtime(path)
    except FileNotFoundError:
        return [
            (
                "cel_csv file",
                False,
                f"{path} does not exist",
                "enable cel_custom (cel_custom.conf [mappings]) and mount its directory; "
                "see docs/cel-sources.md",
            )
        ]
    except OSError as exc:
        return [("cel_csv file", False, f"{path}: {exc.strerror or exc}", "grant read access")]
    age = max(0.0, time.time() - mtime)
    out.append(
        ("cel_csv file", True, f"{path} readable, {size} bytes, last written {age:.0f} s ago", "")
    )
    if start > 0:
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    items = parser.parse_lines(data)[-sample_lines:]
    rows = [i for i in items if isinstance(i, CelRow)]
    bad = [i for i in items if isinstance(i, Quarantine)]
    if not items:
        out.append(("cel_csv recent lines", True, "file is empty (no CEL yet)", ""))
        return out
    ok = not bad or len(bad) * 10 <= len(items)
    detail = f"{len(rows)} of the last {len(items)} records parse"
    if bad:
        detail += f"; first problem: {bad[0].reason}"
    out.append(
        (
            "cel_csv recent lines",
            bool(rows) and ok,
            detail,
            "" if ok and rows else "check the cel_custom.conf mapping and CEL_CSV_COLUMNS",
        )
    )
    colq = [q for q in bad if q.reason.startswith("expected")]
    counts = sorted({_count_columns(q.raw) for q in colq} - {0})
    out.append(
        (
            "cel_csv column count",
            not colq,
            f"{parser.ncols} columns expected"
            + (f"; lines have {', '.join(map(str, counts))}" if colq and counts else ""),
            ""
            if not colq
            else "the cel_custom.conf mapping and CEL_CSV_COLUMNS must list the same columns "
            "in the same order",
        )
    )
    if rows:
        ends = any(r.eventtype == "LINKEDID_END" for r in rows)
        out.append(
            (
                "cel_csv linkedid_end",
                True,
                "LINKEDID_END events present"
                if ends
                else f"no LINKEDID_END in the last {len(rows)} events: calls complete after "
                "CALL_IDLE_TIMEOUT instead",
                "" if ends else "add LINKEDID_END to events= in cel.conf (not in the stock list)",
            )
        )
        newest = max(r.eventtime for r in rows)
        zone = PbxZone(parser.times.timezone, found)
        skew = judge(zone, newest, datetime.now(UTC), live=False, max_age=float("inf"))
        if skew is not None:
            detail, _, fix = skew_advice(zone, skew).partition("; set ")
            out.append(("cel_csv timezone", False, detail, f"set {fix}" if fix else ""))
    return out


def _count_columns(raw: bytes) -> int:
    try:
        return len(next(csv.reader([raw.decode("latin-1")])))
    except (csv.Error, StopIteration):
        return 0
