"""cel_custom's Master.csv: the simulated CEL rows as cel_custom writes them.

The mapping of docs/cel-sources.md (the agent's default column order: the cel
table without its id, `model.CEL_COLUMNS`), every value through CSV_QUOTE
(doubled quotes; commas and newlines stay inside the quotes), eventtime in
PBX-local time as `dateformat = %F %T.%6q` gives it, one record per line.
Only CEL rows: cel_custom writes no CDRs (a `Write` of kind "cdr" is skipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ..model import CEL_COLUMNS
from .dialects import Value
from .timeline import Write


def _text(v: Value, zone: ZoneInfo) -> str:
    if isinstance(v, datetime):
        return v.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S.%f")
    return "" if v is None else str(v)


def csv_record(
    row: Mapping[str, Value], tz: str = "UTC", columns: Sequence[str] = CEL_COLUMNS
) -> str:
    """One cel_custom record (with its newline) of a CEL row dict."""
    zone = ZoneInfo(tz)
    quoted = ('"' + _text(row.get(c), zone).replace('"', '""') + '"' for c in columns)
    return ",".join(quoted) + "\n"


def write_cel_csv(
    path: Path,
    writes: Sequence[Write],
    *,
    tz: str = "UTC",
    columns: Sequence[str] = CEL_COLUMNS,
    encoding: str = "utf-8",
) -> int:
    """Append the CEL rows of `writes` to `path` (in order); returns how many."""
    records = [csv_record(w.row, tz, columns) for w in writes if w.kind == "cel"]
    with open(path, "a", encoding=encoding, newline="") as fh:
        fh.writelines(records)
    return len(records)
