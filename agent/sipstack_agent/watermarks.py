"""Source watermarks: how far each running source of rows has read (in memory).

Every source registers its name when it is built and publishes after each read
(`publish(name, newest=..., caught_up_at=...)`); the evaluator asks for
`low()` and holds a call that is complete by its rows until `low()` has passed
the call's settle point (calls/settle.py). A registered source that has not
published yet holds every call: right after start-up nothing is shipped as
complete before each source has read once. Watermarks only move forward. They
are not persisted: after a restart each source says again how far it is.

A call seen live is released once every source has started a read after the
agent saw it end; the evaluator then calls `want_read()`, and each source
(`on_want`) reads at once instead of at its next poll (not sooner than
MIN_READ_GAP after its previous read), so that costs milliseconds, not a
poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from .calls.settle import low_watermark
from .model import SourceMark

# Rows are read in id (or time) order, but ids commit slightly out of order and a
# CDR's end (calldate + duration) is known to whole seconds: a source that has
# read rows up to time T is only trusted to have read everything up to T - 5 s.
READ_THROUGH_SLACK = timedelta(seconds=5)
MIN_READ_GAP = 0.2  # seconds between two reads of one source asked for by want_read()
# A backlog page waits at most this long for the evaluator before the next is stored.
PAGE_WAIT_MAX = 2.0


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class Watermarks:
    """The board the sources write and the evaluator reads (one per agent)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._marks: dict[str, SourceMark] = {}
        self._on_change = on_change
        self._wanted: list[Callable[[], None]] = []
        # The reader-evaluator pace of a backlog (`pages`, `evaluated`, `wait_evaluated`).
        self._pages = 0
        self._paced = False  # an evaluator is running (`pace`): sources wait for it
        self._caught_up = asyncio.Event()
        self._caught_up.set()

    def register(self, name: str) -> None:
        """A source that will publish; until it does, it holds every call."""
        self._marks.setdefault(name, SourceMark())

    def publish(
        self,
        name: str,
        *,
        newest: datetime | None = None,
        caught_up_at: datetime | None = None,
        behind: bool = False,
    ) -> None:
        """The source has read, in its reading order, rows up to the time `newest`
        (PBX time: CEL eventtime, CDR end in id order), and/or a read that started at
        `caught_up_at` (wall clock) found nothing more to read. `behind`: more rows are
        waiting and the source is reading them now (a backlog, page after page)."""
        read_through = newest - READ_THROUGH_SLACK if newest is not None else None
        old = self._marks.get(name, SourceMark())
        new = SourceMark(
            read_through=_later(old.read_through, read_through),
            caught_up_at=_later(old.caught_up_at, caught_up_at),
            holds=True,
            behind=behind,
        )
        if new != old:
            self._marks[name] = new
            if self._on_change is not None:
                self._on_change()

    def release(self, name: str) -> None:
        """The source cannot deliver older rows any more (AMI disconnected): hold nothing
        until it publishes again."""
        old = self._marks.get(name, SourceMark())
        if old.holds:
            self._marks[name] = SourceMark(old.read_through, old.caught_up_at, holds=False)
            if self._on_change is not None:
                self._on_change()

    def on_want(self, callback: Callable[[], None]) -> None:
        """`callback()` is called when the evaluator wants every source to read now."""
        self._wanted.append(callback)

    def want_read(self) -> None:
        for callback in self._wanted:
            callback()

    def marks(self) -> dict[str, SourceMark]:
        return dict(self._marks)

    def low(self) -> datetime | None:
        """The lowest watermark of the holding sources (None: no source holds)."""
        return low_watermark(self._marks.values())

    def behind(self) -> bool:
        """A holding source is reading a backlog: its watermark moves page by page."""
        return any(m.holds and m.behind for m in self._marks.values())

    # A backlog is read page by page and each page's calls are evaluated (and shipped)
    # before the next one is stored: the evaluator's work, the dirty calls and the rows
    # they need stay one page wide instead of the whole backlog.

    @property
    def pages(self) -> int:
        """How many backlog pages have been stored (the evaluator notes it before a round)."""
        return self._pages

    def pace(self, running: bool) -> None:
        """The evaluator starts (True) or stops (False): without one nothing waits."""
        self._paced = running
        if not running:
            self._caught_up.set()

    def page_stored(self) -> None:
        """A source stored a backlog page and will read the next: it waits for the
        evaluator (`wait_evaluated`) first, while one runs."""
        self._pages += 1
        if self._paced:
            self._caught_up.clear()
        if self._on_change is not None:
            self._on_change()

    def evaluated(self, pages: int) -> None:
        """The evaluator has evaluated every call that was due after `pages` pages."""
        if pages >= self._pages:
            self._caught_up.set()

    async def wait_evaluated(self, timeout: float) -> None:
        """Until the evaluator has caught up with the stored pages, at most `timeout`
        seconds (a slow evaluator slows reading; it never stops it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)


class ReadPacer:
    """A polling source's sleep between reads: `interval`, cut short by `stop` or by
    `Watermarks.want_read()` (then not sooner than MIN_READ_GAP after the last read)."""

    def __init__(self, watermarks: Watermarks | None) -> None:
        self._wanted = asyncio.Event()
        self._last = 0.0
        if watermarks is not None:
            watermarks.on_want(self._wanted.set)

    def reading(self) -> None:
        """Call when a read starts."""
        self._last = time.monotonic()
        self._wanted.clear()

    async def sleep(self, stop: asyncio.Event, interval: float) -> None:
        deadline = time.monotonic() + max(0.0, interval)
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wanted.wait())}
        try:
            await asyncio.wait(waits, timeout=max(0.0, interval), return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w
        if not stop.is_set():
            gap = min(deadline, self._last + MIN_READ_GAP) - time.monotonic()
            if gap > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), gap)
