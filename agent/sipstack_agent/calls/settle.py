"""When a call whose rows say "complete" may be shipped: watermarks and settling.

The rows of a call can say it is over (assemble.py) before every source has
delivered all of its rows: the CDR poller has not read the CDR row yet, or the
CEL poller of a backlog is pages behind the CDR poller. Each source publishes a
watermark (`model.SourceMark`: "I have read every row up to T" / "a read that
started at T found nothing more"). A call that is complete by its rows is held
until

* the lowest watermark of the sources that hold (`low_watermark`) has reached
  its settle point, and
* the wall clock has passed its settle point,

where the settle point is

* live (the rows were first seen within LIVE_WINDOW of the call's end): the
  later of "when the agent first saw these rows" and end + SHIP_COMPLETE_AFTER.
  Every source must have started a read after the agent saw the call end, so a
  row committed late (a busy writer) but before the last row is still in;
  the evaluator asks the sources for that read at once (`Watermarks.want_read`);
* read from a backlog (seen long after the end): end + SHIP_COMPLETE_AFTER,
  compared with how far each source has read;
* a PBX clock ahead of ours (end after the rows were seen): seen +
  SHIP_COMPLETE_AFTER, never the PBX's future.

"End" is the call's newest event time; one in whole seconds (MySQL DATETIME,
AMI, CDR calldate) means "during that second" and counts from the end of that
second, so a CDR committed in the same second as LINKEDID_END is waited for.
A hold never lasts
longer than CALL_MAX_AGE after the rows last changed, so a source that is stuck
for hours cannot hold calls forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sipstack_agent.config import CallSettings
from sipstack_agent.model import SourceMark

NOTHING_READ = datetime.min.replace(tzinfo=UTC)
LIVE_WINDOW = timedelta(seconds=60)


def low_watermark(marks: Iterable[SourceMark]) -> datetime | None:
    """The lowest watermark of the holding sources; None when no source holds.

    A holding source that has not said anything yet counts as NOTHING_READ.
    """
    low: datetime | None = None
    for mark in marks:
        if not mark.holds:
            continue
        w = mark.watermark if mark.watermark is not None else NOTHING_READ
        low = w if low is None or w < low else low
    return low


def before(point: datetime, seconds: float) -> datetime:
    """`seconds` before a watermark point, no earlier than NOTHING_READ (a source that has
    not read anything holds the low watermark there: nothing is before it)."""
    try:
        return max(NOTHING_READ, point - timedelta(seconds=max(0.0, seconds)))
    except OverflowError:
        return NOTHING_READ


def present(now: datetime, watermark: datetime | None) -> datetime:
    """The newest moment every source has read up to (the wall clock when untracked).

    A running call is only known to have run until then: during a backlog a
    long-call update must not be sent for a call whose later rows are unread.
    """
    return now if watermark is None else min(now, watermark)


@dataclass(frozen=True, slots=True)
class Hold:
    held: bool
    wait_mark: datetime | None = None  # evaluate again when the low watermark reaches it
    wake_at: datetime | None = None  # evaluate again then (clock not yet at the settle point)


def end_point(t: datetime) -> datetime:
    """A row's time as a point a watermark must pass: one in whole seconds (MySQL
    DATETIME, AMI, CDR calldate) means "during that second", so its end."""
    return t + timedelta(seconds=1) if t.microsecond == 0 else t


def settle_point(
    end: datetime, rows_changed_at: datetime | None, settings: CallSettings
) -> datetime:
    """When the call may be shipped (see the module doc)."""
    settle = timedelta(seconds=max(0.0, settings.ship_complete_after))
    after_end = end_point(end) + settle
    seen = rows_changed_at
    if seen is None or end < seen - LIVE_WINDOW:
        return after_end
    if end > seen:
        return seen + settle
    return max(seen, after_end)


def hold(
    end: datetime,
    rows_changed_at: datetime | None,
    now: datetime,
    watermark: datetime | None,
    settings: CallSettings,
) -> Hold:
    """Whether a call that is complete by its rows must wait (see the module doc)."""
    point = settle_point(end, rows_changed_at, settings)
    limit = (rows_changed_at or now) + timedelta(seconds=max(0.0, settings.max_age))
    if now >= limit:
        return Hold(False)
    by_clock = now < point
    by_mark = watermark is not None and watermark < point
    if not (by_clock or by_mark):
        return Hold(False)
    return Hold(True, point if by_mark else None, min(point, limit) if by_clock else limit)
