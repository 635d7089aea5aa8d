"""Rows fed one at a time, in Asterisk's commit order, at their commit time.

`Feed` does what the state store and the evaluator do between two rows:
group every row seen so far (`group_linkedids`), evaluate the group that got
the row, and evaluate a group again when its `next_check_at` comes before the
next row. The assertions are about what is shipped over the whole life of
the call, not about one evaluation of a table loaded at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sipstack_agent.calls import evaluate, group_linkedids, smallest_linkedid
from sipstack_agent.calls.settle import NOTHING_READ, low_watermark
from sipstack_agent.config import CallSettings
from sipstack_agent.model import CdrRow, CelRow, ShipState, SourceMark

from .fixtures import CALL_A, CALL_C, CALL_D, CALL_E, CALL_G, load_cdr, load_cel
from .helpers import IDENTITY, SETTINGS, T0, Seq, validate
from .live_sequences import (
    LiveCall,
    assert_whole,
    attended_transfer,
    commit_order,
    committed_at,
    pickup,
)

AFTER = timedelta(minutes=10)


class Feed:
    """The state store + evaluator loop over rows that arrive one by one."""

    def __init__(self, settings: CallSettings = SETTINGS, watermark: datetime | None = None):
        self.settings = settings
        self.watermark = watermark
        self.rows: list[CelRow | CdrRow] = []
        self.ships: dict[str, ShipState] = {}
        self.timers: dict[str, datetime] = {}
        self.docs: list[tuple[datetime, dict[str, Any]]] = []

    def _group(self, linkedid: str) -> frozenset[str]:
        return next(g for g in group_linkedids(self.rows) if linkedid in g)

    def _evaluate(self, group: frozenset[str], now: datetime) -> None:
        key = smallest_linkedid(group)
        ev = evaluate(
            [r for r in self.rows if isinstance(r, CelRow) and r.call_linkedid in group],
            [r for r in self.rows if isinstance(r, CdrRow) and r.call_linkedid in group],
            [],
            self.ships.get(key, ShipState()),
            call_key=key,
            now=now,
            settings=self.settings,
            identity=IDENTITY,
            watermark=self.watermark,
        )
        for doc in ev.documents:
            validate(doc)
            self.docs.append((now, doc))
        self.ships[key] = ev.ship
        for merged in group - {key}:
            self.timers.pop(merged, None)
        if ev.next_check_at is not None:
            self.timers[key] = ev.next_check_at
        else:
            self.timers.pop(key, None)

    def advance(self, until: datetime) -> None:
        """Fire the timers due before `until`, in time order."""
        while due := [(t, k) for k, t in self.timers.items() if t <= until]:
            t, key = min(due)
            del self.timers[key]
            self._evaluate(self._group(key), t)

    def add(self, row: CelRow | CdrRow, at: datetime) -> None:
        self.advance(at)
        self.rows.append(row)
        self._evaluate(self._group(row.call_linkedid), at)

    def feed(self, rows: list[CelRow | CdrRow]) -> None:
        """Each row at its commit time (`committed_at`)."""
        self.feed_timed([(committed_at(r), r) for r in rows])

    def feed_timed(self, timed: list[tuple[datetime, CelRow | CdrRow]]) -> None:
        for at, row in timed:
            self.add(row, at)
        self.advance(max(at for at, _ in timed) + AFTER)


@pytest.mark.parametrize("make", [pickup, attended_transfer], ids=["pickup", "attended"])
def test_one_document_only_after_the_last_channel_ended(make: Any) -> None:
    call = make(Seq())
    feed = Feed()
    feed.feed(commit_order(call.cels, call.cdrs))
    assert len(feed.docs) == 1, [(t, d["linkedid"], d["ship_phase"]) for t, d in feed.docs]
    at, doc = feed.docs[0]
    assert at >= call.last_cel_at  # not before the moved channel's CHAN_END / LINKEDID_END
    assert (doc["linkedid"], doc["revision"], doc["ship_phase"]) == (call.key, 1, "complete")
    assert doc["linkedids"] == list(call.linkedids)
    assert doc["completion_reason"] == "linkedid_end"
    assert_whole(doc, call)


@pytest.mark.parametrize("make", [pickup, attended_transfer], ids=["pickup", "attended"])
def test_the_moved_channels_own_linkedid_stays_open(make: Any) -> None:
    """Its LINKEDID_END is there and the idle timeout has long passed: still not a call."""
    call = make(Seq())
    own = call.linkedids[1]
    rows = [r for r in call.cels if r.call_linkedid == own and r.eventtime < call.last_cel_at]
    assert any(r.eventtype == "LINKEDID_END" for r in rows)
    now = max(r.eventtime for r in rows) + timedelta(seconds=SETTINGS.idle_timeout * 2)
    ev = evaluate(
        rows, [], [], ShipState(), call_key=own, now=now, settings=SETTINGS, identity=IDENTITY
    )
    assert not ev.call.is_complete and ev.documents == []
    assert ev.call.idle_deadline is None  # no idle timeout pending: only CALL_MAX_AGE closes it


@pytest.mark.parametrize("flavour", ["postgres", "mariadb"])
def test_the_sample_fed_row_by_row_ships_each_call_once(flavour: str) -> None:
    cels, cdrs = load_cel(flavour), load_cdr(flavour)
    feed = Feed()
    feed.feed(commit_order(cels, cdrs))
    by_key = {d["linkedid"]: (t, d) for t, d in feed.docs}
    assert len(feed.docs) == len(by_key) == 5
    assert set(by_key) == {CALL_A, CALL_C, CALL_D, CALL_E, CALL_G}
    for key, (at, doc) in by_key.items():
        mine = [c for c in cels if c.call_linkedid == key]
        assert at >= max(c.eventtime for c in mine), key
        assert doc["revision"] == 1 and doc["ship_phase"] == "complete"
        assert_whole(doc, LiveCall(key, key, (key,), mine, [d for d in cdrs if d.linkedid == key]))


def test_pickup_and_transfer_interleaved_with_other_calls() -> None:
    s = Seq()
    calls = [pickup(s, at=0), attended_transfer(s, at=5), pickup(s, at=100)]
    feed = Feed()
    feed.feed(commit_order(s.rows, s.cdrs))
    assert sorted(d["linkedid"] for _, d in feed.docs) == sorted(c.key for c in calls)
    for call in calls:
        ((at, doc),) = [(t, d) for t, d in feed.docs if d["linkedid"] == call.key]
        assert at >= call.last_cel_at and doc["revision"] == 1
        assert_whole(doc, call)


# --------------------------------------------------------------------------- settling


def late_cdr_rows(late: float) -> tuple[LiveCall, list[tuple[datetime, CelRow | CdrRow]]]:
    """The pickup with its last CDR committed `late` seconds after LINKEDID_END
    (cdr.conf batch mode, a slow CDR backend)."""
    call = pickup(Seq())
    timed = [(committed_at(r), r) for r in commit_order(call.cels, call.cdrs[:-1])]
    timed.append((call.last_cel_at + timedelta(seconds=late), call.cdrs[-1]))
    return call, timed


def test_a_cdr_written_after_linkedid_end_makes_a_second_revision_without_settling() -> None:
    _, timed = late_cdr_rows(2.0)
    feed = Feed()
    feed.feed_timed(timed)
    assert [d["revision"] for _, d in feed.docs] == [1, 2]


def test_ship_complete_after_waits_for_the_late_cdr() -> None:
    call, timed = late_cdr_rows(2.0)
    feed = Feed(replace(SETTINGS, ship_complete_after=3.0))
    feed.feed_timed(timed)
    ((at, doc),) = feed.docs
    assert at == call.last_cel_at + timedelta(seconds=3)  # the timer, not a later row
    assert doc["revision"] == 1
    assert_whole(doc, call)


# --------------------------------------------------------------------------- watermarks


def _call_at_end(settings: CallSettings = SETTINGS) -> tuple[LiveCall, datetime]:
    call = pickup(Seq())
    return call, call.last_cel_at + timedelta(seconds=1)


def _eval(
    call: LiveCall,
    now: datetime,
    watermark: datetime | None,
    *,
    cels: list[CelRow] | None = None,
    settings: CallSettings = SETTINGS,
    ship: ShipState | None = None,
) -> Any:
    return evaluate(
        call.cels if cels is None else cels,
        call.cdrs,
        [],
        ship or ShipState(),
        call_key=call.key,
        now=now,
        settings=settings,
        identity=IDENTITY,
        watermark=watermark,
    )


def test_live_a_source_must_have_read_after_the_end_was_seen() -> None:
    """Seen 1 s after its end: every source must start a read after that moment (a row
    committed late by a busy writer, before the last one, is then still in)."""
    call, now = _call_at_end()
    held = _eval(call, now, call.last_cel_at + timedelta(milliseconds=500))
    assert held.documents == [] and not held.closed and held.call.held
    assert held.wait_mark == now
    released = _eval(call, now + timedelta(seconds=0.2), now, ship=held.ship)
    assert [d["revision"] for d in released.documents] == [1] and released.closed
    assert released.wait_mark is None


def test_backlog_a_source_must_have_read_past_the_end() -> None:
    """Seen hours after its end: how far each source has read decides."""
    call, _ = _call_at_end()
    end, now = call.last_cel_at, call.last_cel_at + timedelta(hours=2)
    held = _eval(call, now, end - timedelta(seconds=1))
    assert held.documents == [] and held.wait_mark == end
    released = _eval(call, now, end, ship=held.ship)
    assert [d["revision"] for d in released.documents] == [1] and released.closed


def test_a_pbx_clock_ahead_cannot_hold_a_call() -> None:
    call, _ = _call_at_end()
    seen = call.last_cel_at - timedelta(hours=3)  # the rows say they are from 3 h ahead
    ev = _eval(call, seen, seen)
    assert [d["ship_phase"] for d in ev.documents] == ["complete"]


def test_a_cdr_read_before_any_cel_row_is_not_a_cdr_only_call() -> None:
    """Backlog: the CDR poller ran ahead; the CEL poller has not reached the call."""
    call, _ = _call_at_end()
    now = call.last_cel_at + timedelta(hours=2)  # an old call: every timeout has passed
    cel_mark = call.cels[0].eventtime - timedelta(minutes=5)
    held = _eval(call, now, cel_mark, cels=[])
    assert held.documents == [] and held.call.held
    # the CDR end is in whole seconds: "some time in that second", settled at its end
    assert held.wait_mark == max(committed_at(d) for d in call.cdrs) + timedelta(seconds=1)
    # the CEL poller read the call: one document with CEL and CDR rows
    whole = _eval(call, now, call.last_cel_at + timedelta(seconds=30), ship=held.ship)
    ((doc,),) = [whole.documents]
    assert doc["revision"] == 1 and doc["completion_reason"] == "linkedid_end"
    assert_whole(doc, call)


def test_settle_point_is_end_plus_ship_complete_after_for_watermark_and_clock() -> None:
    settings = replace(SETTINGS, ship_complete_after=5.0)
    call, _ = _call_at_end()
    point = call.last_cel_at + timedelta(seconds=5)
    early = _eval(call, point - timedelta(seconds=4), point, settings=settings)  # seen then
    assert early.documents == [] and early.wait_mark is None and early.next_check_at == point
    behind = _eval(call, point, point - timedelta(seconds=1), settings=settings, ship=early.ship)
    assert behind.documents == [] and behind.wait_mark == point
    done = _eval(call, point, point, settings=settings, ship=behind.ship)
    assert [d["ship_phase"] for d in done.documents] == ["complete"]


def test_a_stuck_source_holds_a_call_at_most_call_max_age() -> None:
    call, now = _call_at_end()
    limit = now + timedelta(seconds=SETTINGS.max_age)  # the rows were first seen at `now`
    held = _eval(call, now, NOTHING_READ)
    assert held.documents == [] and held.next_check_at is not None
    assert held.next_check_at <= limit
    still = _eval(call, limit - timedelta(seconds=1), NOTHING_READ, ship=held.ship)
    assert still.documents == [] and still.next_check_at == limit
    later = _eval(call, limit, NOTHING_READ, ship=still.ship)
    assert [d["ship_phase"] for d in later.documents] == ["complete"]


def test_no_long_call_update_for_a_backlog_call_whose_rest_is_unread() -> None:
    """A call that started an hour ago, read up to 2 min in: not a 10-min call (yet)."""
    call = attended_transfer(Seq())
    first = [r for r in call.cels if r.eventtime < call.cels[0].eventtime + timedelta(seconds=15)]
    now = call.last_cel_at + timedelta(hours=1)
    mark = call.cels[0].eventtime + timedelta(minutes=2)
    running = _eval(call, now, mark, cels=first)
    assert not running.call.is_complete and running.documents == []
    assert running.wait_mark == call.cels[0].eventtime + timedelta(
        seconds=SETTINGS.long_call_update_interval
    )
    live = _eval(call, now, None, cels=first)  # untracked: the clock says it runs for an hour
    assert [d["ship_phase"] for d in live.documents] == ["update"]


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        ([], None),
        ([SourceMark()], NOTHING_READ),
        ([SourceMark(holds=False)], None),
        ([SourceMark(read_through=T0), SourceMark(caught_up_at=T0 + timedelta(seconds=9))], T0),
        (
            [
                SourceMark(read_through=T0, caught_up_at=T0 + timedelta(seconds=3)),
                SourceMark(read_through=T0 - timedelta(days=1), holds=False),
            ],
            T0 + timedelta(seconds=3),
        ),
    ],
)
def test_low_watermark(marks: list[SourceMark], expected: datetime | None) -> None:
    assert low_watermark(marks) == expected
