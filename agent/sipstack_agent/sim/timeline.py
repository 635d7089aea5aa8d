"""A simulated call and its rows in commit order: what the PBX writes, and when.

`SimCall` holds one call's CEL and CDR row dicts and the outcome a correct
assembly gives (`ExpectedCall`, the oracle of the tests); `timeline` orders
the rows of many calls as the PBX commits them (`Write`); `shift` moves calls
in time. Times in the row dicts are aware UTC datetimes; the writers convert
them to the PBX's naive local time per dialect (sim.dialects).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class ExpectedCall:
    """What a correct assembly of a simulated call gives (the oracle of the tests)."""

    linkedid: str
    scenario: str
    direction: str  # i | o | x
    disposition: str  # ANSWERED | NO ANSWER | BUSY
    answered: bool
    src_number: str
    dst_number: str  # DID (inbound), extension (internal), dialled number (outbound)
    answered_by: str  # extension that finally talked, "" when unanswered
    transfers: int
    queue: str  # queue name, "" when none
    recording: str  # MixMonitor file name, "" when none
    start: datetime  # aware UTC
    end: datetime  # aware UTC (last CEL event)
    answer_time: datetime | None
    cel_count: int
    cdr_count: int
    linkedid_end: bool
    uniqueids: tuple[str, ...]

    @property
    def talk_seconds(self) -> float:
        return (self.end - self.answer_time).total_seconds() if self.answer_time else 0.0

    @property
    def ring_seconds(self) -> float:
        t = self.answer_time or self.end
        return (t - self.start).total_seconds()


@dataclass
class SimCall:
    """One simulated call: its CEL and CDR row dicts and the expected outcome.

    Row dicts carry the table's column names (`model.CEL_COLUMNS` / `CDR_COLUMNS`);
    `eventtime` / `calldate` are aware UTC datetimes; `amaflags` is an int.
    `cdr_written_at` is when Asterisk writes the CDR rows (the end of the call).
    """

    expected: ExpectedCall
    cels: list[dict[str, Any]]
    cdrs: list[dict[str, Any]]
    cdr_written_at: datetime


@dataclass(frozen=True)
class Write:
    """One row as the PBX commits it: at `at`, into table `kind` ("cel" or "cdr")."""

    at: datetime
    kind: str
    row: dict[str, Any]
    linkedid: str
    seq: int = 0


def timeline(calls: Iterable[SimCall], late_cdr_seconds: float = 0.0) -> list[Write]:
    """Every row of `calls` as the PBX commits it, in commit order.

    CEL rows are written at their eventtime; CDR rows when the call ends (plus
    `late_cdr_seconds`, as with cdr.conf batch mode)."""
    out: list[Write] = []
    for c in calls:
        lid = c.expected.linkedid
        for r in c.cels:
            out.append(Write(r["eventtime"], "cel", r, lid))
        late = timedelta(seconds=late_cdr_seconds)
        for r in c.cdrs:
            out.append(Write(c.cdr_written_at + late, "cdr", r, lid))
    out.sort(key=lambda w: w.at)
    return [Write(w.at, w.kind, w.row, w.linkedid, i) for i, w in enumerate(out)]


def is_linkedid_end(w: Write) -> bool:
    return w.kind == "cel" and w.row.get("eventtype") == "LINKEDID_END"


def shift(calls: Sequence[SimCall], start: datetime) -> list[SimCall]:
    """The same calls moved so that the first starts at `start` (uniqueids unchanged)."""
    if not calls:
        return []
    delta = start - min(c.expected.start for c in calls)
    out = []
    for c in calls:
        e = c.expected
        exp = ExpectedCall(
            **{
                **{f: getattr(e, f) for f in e.__dataclass_fields__},
                "start": e.start + delta,
                "end": e.end + delta,
                "answer_time": e.answer_time + delta if e.answer_time else None,
            }
        )
        cels = [{**r, "eventtime": r["eventtime"] + delta} for r in c.cels]
        cdrs = [{**r, "calldate": r["calldate"] + delta} for r in c.cdrs]
        out.append(SimCall(exp, cels, cdrs, c.cdr_written_at + delta))
    return out
