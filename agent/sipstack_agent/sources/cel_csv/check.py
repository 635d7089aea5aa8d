"""`sipstack-agent check` for CEL_MODE=csv: the file, its recent records, the zone.

Each line is a `rules.checks.CheckResult`, FAIL and WARN as rules/checks.py decides:
- FAIL: CEL_CSV_COLUMNS invalid; the file missing, unreadable or not a regular file
  (ships nothing); most recent records do not parse or have another column count
  (their events are quarantined, not shipped); the newest events are in the future
  read in the configured zone (every call time is off: the zone is wrong, not suspect).
- WARN: the file is empty (nothing to judge: fine on an idle PBX); no LINKEDID_END
  among the recent events (calls complete after CALL_IDLE_TIMEOUT instead).
- OK: otherwise.
"""

from __future__ import annotations

import asyncio
import csv
import os
import stat
import time
from datetime import UTC, datetime

from ...config import CsvSettings
from ...model import CelRow
from ...rules.checks import CheckResult
from ...zones import PbxZone, judge, skew_advice
from .fileformat import NOT_REGULAR
from .parser import CelCsvParser, Quarantine

__all__ = ["check_csv"]

_TAIL_BYTES = 256 * 1024  # the end of the file the check reads
_MAPPING = "check the cel_custom.conf mapping and CEL_CSV_COLUMNS"


async def check_csv(
    settings: CsvSettings,
    timezone: str = "UTC",
    *,
    sample_lines: int = 50,
    found: str = "configured",
) -> list[CheckResult]:
    """The check lines of CEL_MODE=csv (see the module docstring). `found`: how the zone
    was found (zones.FOUND), named in the line about events in the future."""
    return await asyncio.to_thread(_check_csv_sync, settings, timezone, sample_lines, found)


def _check_csv_sync(
    settings: CsvSettings, timezone: str, sample_lines: int, found: str
) -> list[CheckResult]:
    try:
        parser = CelCsvParser(settings.columns or None, timezone)
    except (ValueError, KeyError) as exc:
        return [CheckResult.fail("cel_csv columns", str(exc), "fix CEL_CSV_COLUMNS")]
    tail = _read_tail(settings.path)
    if isinstance(tail, CheckResult):
        return [tail]
    file_line, data = tail
    out = [file_line]
    items = parser.parse_lines(data)[-sample_lines:]
    if not items:
        out.append(
            CheckResult.warn(
                "cel_csv recent lines",
                "file is empty (no CEL yet)",
                "if calls are running: cel_custom.conf [mappings] must write to CEL_CSV_PATH",
            )
        )
        return out
    rows = [i for i in items if isinstance(i, CelRow)]
    bad = [i for i in items if isinstance(i, Quarantine)]
    out += [_recent_lines(rows, bad, len(items)), _column_count(parser, bad)]
    if rows:
        out.append(_linkedid_end(rows))
        zone = _zone(rows, PbxZone(parser.times.timezone, found))
        if zone is not None:
            out.append(zone)
    return out


def _read_tail(path: str) -> CheckResult | tuple[CheckResult, bytes]:
    """The file line, and the whole records of the file's last _TAIL_BYTES."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            detail = f"{path} is not a regular file"
            return CheckResult.fail("cel_csv file", detail, f"CEL_CSV_PATH: {NOT_REGULAR}")
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            fh.seek(start)
            data = fh.read()
        mtime = os.path.getmtime(path)
    except FileNotFoundError:
        return CheckResult.fail(
            "cel_csv file",
            f"{path} does not exist",
            "enable cel_custom (cel_custom.conf [mappings]) and mount its directory; "
            "see docs/cel-sources.md",
        )
    except OSError as exc:
        why = f"{path}: {exc.strerror or exc}"
        return CheckResult.fail("cel_csv file", why, "grant read access")
    age = max(0.0, time.time() - mtime)
    line = CheckResult.ok(
        "cel_csv file", f"{path} readable, {size} bytes, last written {age:.0f} s ago"
    )
    if start > 0:  # the first line read is cut: skip it
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    return line, data


def _recent_lines(rows: list[CelRow], bad: list[Quarantine], n: int) -> CheckResult:
    detail = f"{len(rows)} of the last {n} records parse"
    if bad:
        detail += f"; first problem: {bad[0].reason}"
    if rows and len(bad) * 10 <= n:  # up to 10 % quarantined: the feed works
        return CheckResult.ok("cel_csv recent lines", detail)
    return CheckResult.fail("cel_csv recent lines", detail, _MAPPING)


def _column_count(parser: CelCsvParser, bad: list[Quarantine]) -> CheckResult:
    colq = [q for q in bad if q.reason.startswith("expected")]
    detail = f"{parser.ncols} columns expected"
    if not colq:
        return CheckResult.ok("cel_csv column count", detail)
    counts = sorted({_count_columns(q.raw) for q in colq} - {0})
    if counts:
        detail += f"; lines have {', '.join(map(str, counts))}"
    return CheckResult.fail(
        "cel_csv column count",
        detail,
        "the cel_custom.conf mapping and CEL_CSV_COLUMNS must list the same columns "
        "in the same order",
    )


def _linkedid_end(rows: list[CelRow]) -> CheckResult:
    if any(r.eventtype == "LINKEDID_END" for r in rows):
        return CheckResult.ok("cel_csv linkedid_end", "LINKEDID_END events present")
    return CheckResult.warn(
        "cel_csv linkedid_end",
        f"no LINKEDID_END in the last {len(rows)} events: calls complete after "
        "CALL_IDLE_TIMEOUT instead",
        "add LINKEDID_END to events= in cel.conf (not in the stock list)",
    )


def _zone(rows: list[CelRow], zone: PbxZone) -> CheckResult | None:
    """A line only when the newest event is in the future read in `zone`."""
    newest = max(r.eventtime for r in rows)
    skew = judge(zone, newest, datetime.now(UTC), live=False, max_age=float("inf"))
    if skew is None:
        return None
    detail, _, fix = skew_advice(zone, skew).partition("; set ")
    return CheckResult.fail("cel_csv timezone", detail, f"set {fix}" if fix else "")


def _count_columns(raw: bytes) -> int:
    try:
        return len(next(csv.reader([raw.decode("latin-1")])))
    except (csv.Error, StopIteration):
        return 0
