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

where settle point = the call's activity (its newest event time, or the arrival
of its rows when that is older) + SHIP_COMPLETE_AFTER. A time in whole seconds
(MySQL DATETIME, AMI) means "during that second": its settle point starts at
the end of that second, so a CDR committed in the same second as LINKEDID_END
is still waited for. A hold never lasts
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


def settle_point(activity: datetime, settings: CallSettings) -> datetime:
    whole_second = timedelta(seconds=1) if activity.microsecond == 0 else timedelta(0)
    return activity + whole_second + timedelta(seconds=max(0.0, settings.ship_complete_after))


def hold(
    activity: datetime,
    rows_changed_at: datetime | None,
    now: datetime,
    watermark: datetime | None,
    settings: CallSettings,
) -> Hold:
    """Whether a call that is complete by its rows must wait (see the module doc)."""
    point = settle_point(activity, settings)
    limit = (rows_changed_at or now) + timedelta(seconds=max(0.0, settings.max_age))
    if now >= limit:
        return Hold(False)
    by_clock = now < point
    by_mark = watermark is not None and watermark < point
    if not (by_clock or by_mark):
        return Hold(False)
    return Hold(True, point if by_mark else None, min(point, limit) if by_clock else limit)
