"""Replays recorded PBX rows into a real PBX database at their recorded pace.

`schedule(tracks, start=..., speed=10)` takes recorded rows (`CelRow` /
`CdrRow`: the Asterisk sample, `calls.live_sequences`, anything a reader
produced) in tracks that each start `offset` recorded seconds after the first,
keeps their recorded spacing divided by `speed`, and moves them so that the
first row happens at `start`:

- a CEL row is committed at its (new) eventtime;
- a CDR row is committed when its leg ends (calldate + duration), with
  calldate in whole seconds and duration/billsec scaled like the times, as
  Asterisk writes them;
- row ids are left to the database (assigned in commit order).

`replay(writer, writes)` commits them in real time through the simulator's
`PbxWriter` (one INSERT per row, as cdr_pgsql / cel_pgsql do), paced by
`sim.play.play`. The agent's own timers must be scaled the same way by the
test (e.g. CALL_IDLE_TIMEOUT=3 at speed 10 stands for the default 30 s).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sipstack_agent.calls.derive import cdr_end
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow
from sipstack_agent.sim.play import play
from sipstack_agent.sim.timeline import Write
from sipstack_agent.sim.writers import PbxWriter

Row = CelRow | CdrRow
Track = tuple[float, Sequence[Row]]  # (offset in recorded seconds, rows)


def _commit_time(row: Row) -> datetime:
    return row.eventtime if isinstance(row, CelRow) else cdr_end(row)


def _as_columns(row: Row) -> dict[str, Any]:
    if isinstance(row, CelRow):
        return {c: getattr(row, c) for c in CEL_COLUMNS}
    d = {c: getattr(row, c) for c in CDR_COLUMNS}
    d.update(dict(row.extras))
    return d


def schedule(tracks: Sequence[Track], *, start: datetime, speed: float = 10.0) -> list[Write]:
    """The rows of `tracks` as writes at their scaled, moved commit times (commit order)."""
    if speed <= 0:
        raise ValueError("speed must be > 0")

    def moved(t: datetime, origin: datetime, offset: float) -> datetime:
        return start + ((t - origin).total_seconds() + offset) / speed * timedelta(seconds=1)

    out: list[tuple[datetime, int, Write]] = []
    for offset, rows in tracks:
        if not rows:
            continue
        origin = min(_commit_time(r) if isinstance(r, CelRow) else r.calldate for r in rows)
        for r in rows:
            if isinstance(r, CelRow):
                at = moved(r.eventtime, origin, offset)
                new: Row = replace(r, eventtime=at, row_id=None)
            else:
                at = moved(cdr_end(r), origin, offset)
                began = moved(r.calldate, origin, offset).replace(microsecond=0)
                duration = max(0, math.floor((at - began).total_seconds()))
                billsec = min(duration, round(r.billsec / speed))
                new = replace(r, calldate=began, duration=duration, billsec=billsec, row_id=None)
            kind = "cel" if isinstance(new, CelRow) else "cdr"
            out.append((at, len(out), Write(at, kind, _as_columns(new), new.call_linkedid)))
    out.sort(key=lambda t: (t[0], t[1]))
    return [replace(w, seq=i) for i, (_, _, w) in enumerate(out)]


async def replay(
    writer: PbxWriter, writes: Sequence[Write], *, start: datetime
) -> dict[str, float]:
    """Commit `writes` at their times (wall clock; `start` = the schedule's start).

    Returns, per linkedid, the wall clock time its last row was committed.
    """

    async def write(batch: Sequence[Write]) -> None:
        for w in batch:  # one statement per row, in commit order
            if w.kind == "cel":
                await writer.insert_cel([w.row])
            else:
                await writer.insert_cdr([w.row])

    ahead = (start - datetime.now(UTC)).total_seconds()
    if ahead > 0:
        await asyncio.sleep(ahead)  # play() maps "now" to `start`
    elif ahead < -0.5:
        raise RuntimeError(f"replay started {-ahead:.1f} s after its schedule's start")
    return await play(writes, write, t0=start, tick=0.01)
