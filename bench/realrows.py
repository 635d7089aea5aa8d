"""Real Asterisk 20 rows for the benches: the recorded scenarios, multiplied.

`load_sample()` reads postgres/cel.csv and cdr.csv of the fixture sample
(found by `sipstack_agent.scratchdb.asterisk_sample_dir()`, as the tests do:
$SIPSTACK_SAMPLE_DIR, ../shared/fixtures/asterisk20-sample beside the
checkout, else /work/shared). `copies(sample, n, end)` repeats those
rows n times, each copy with its ids, uniqueids/linkedids (also where they
appear inside other columns, e.g. a MixMonitor file name) and times shifted,
so every copy is a distinct set of calls the agent must assemble and ship.
The copies end at `end`, one after the other in id and time order.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from sipstack_agent.scratchdb import asterisk_sample_dir

_INT = {"amaflags", "duration", "billsec", "sequence", "id"}


@dataclass(frozen=True)
class Sample:
    cel: list[dict[str, str]]
    cdr: list[dict[str, str]]

    @property
    def calls(self) -> int:
        """Calls per copy: linkedids with a LINKEDID_END (each is one document stream)."""
        return len({r["linkedid"] for r in self.cel if r["eventtype"] == "LINKEDID_END"})


def load_sample(flavor: str = "postgres") -> Sample:
    def read(table: str) -> list[dict[str, str]]:
        with open(
            asterisk_sample_dir() / flavor / f"{table}.csv", newline="", encoding="utf-8"
        ) as fh:
            return list(csv.DictReader(fh))

    return Sample(read("cel"), read("cdr"))


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def copies(
    sample: Sample, n: int, end: datetime, columns: tuple[Sequence[str], Sequence[str]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(cel, cdr) value tuples, `id` first then `columns` (CEL, CDR), n shifted copies.

    Times are naive UTC (what cel_pgsql writes without a time zone)."""
    times = [_t(r["eventtime"]) for r in sample.cel] + [_t(r["calldate"]) for r in sample.cdr]
    t_lo, t_hi = min(times), max(times)
    step = int((t_hi - t_lo).total_seconds()) + 60  # seconds between copies
    id_step = max(int(r["id"]) for r in sample.cel + sample.cdr) + 1
    ids = sorted(
        {r[k] for r in sample.cel for k in ("uniqueid", "linkedid")}
        | {r[k] for r in sample.cdr for k in ("uniqueid", "linkedid")},
        key=len,
        reverse=True,
    )
    token = re.compile(r"(?<![\d.])(" + "|".join(re.escape(i) for i in ids) + r")(?![\d])")
    first = end - timedelta(seconds=step * n) - (t_hi - t_lo)
    cel_cols, cdr_cols = columns
    out_cel: list[tuple[Any, ...]] = []
    out_cdr: list[tuple[Any, ...]] = []
    for k in range(n):
        dt = first - t_lo + timedelta(seconds=step * k)
        shift_s = int(dt.total_seconds())

        def uid(m: re.Match[str], shift_s: int = shift_s) -> str:
            sec, _, seq = m.group(1).partition(".")
            return f"{int(sec) + shift_s}.{seq}"

        def row(
            r: dict[str, str], cols: Sequence[str], tcol: str, k: int = k, dt: timedelta = dt
        ) -> tuple[Any, ...]:
            vals: list[Any] = [int(r["id"]) + k * id_step]
            for c in cols:
                v = r.get(c, "")
                if c == tcol:
                    vals.append((_t(v) + dt).replace(tzinfo=None))
                elif c in _INT:
                    vals.append(int(v) if v != "" else None)
                else:
                    vals.append(token.sub(uid, v))
            return tuple(vals)

        out_cel.extend(row(r, cel_cols, "eventtime") for r in sample.cel)
        out_cdr.extend(row(r, cdr_cols, "calldate") for r in sample.cdr)
    return out_cel, out_cdr
