"""The evaluator stage: due calls from the state store -> `calls.evaluate` -> documents.

`Evaluator.run(stop)` takes the due calls in batches (woken when rows arrive,
polling timers every `idle_wait`), evaluates them with the pure call core and
saves the results (documents into the outbox, ship state, timers) in one
transaction per batch. A call whose evaluation raises is parked for 60 s and
the rest flows. After each batch the evaluator tells the call observer (the
recordings) about the calls it saw, asks the id-less CDR lookup for the calls
that wait for their CDR, and wakes the shipper when documents were queued.

Every collaborator is a small Protocol below; app.py wires the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from .calls import Evaluation, evaluate
from .calls.settle import before
from .config import CallSettings, Settings
from .metrics import Metrics
from .model import CdrRow, CelRow, RecordingFile, ShipState
from .state import CallRecord, Deferral, EvaluationLike, Need
from .watermarks import Watermarks

log = logging.getLogger("sipstack_agent.app")

PARK_SECONDS = 60.0  # a call whose evaluation raised waits this long (or for new rows)

Gaps = list[tuple[datetime, datetime | None]]


class EvaluatorStore(Protocol):
    """The part of `state.StateStore` the evaluator uses."""

    async def due_calls(
        self,
        now: datetime,
        limit: int = ...,
        *,
        watermark: datetime | None = ...,
        defer: Deferral | None = ...,
    ) -> list[str]: ...

    async def load_calls(self, call_keys: Sequence[str]) -> list[CallRecord]: ...

    async def save_evaluations(
        self, items: Sequence[tuple[str, EvaluationLike]], *, now: datetime | None = ...
    ) -> int: ...

    async def has_room(self, what: Need) -> bool: ...


class CallObserver(Protocol):
    """Told about every evaluated call (recordings.RecordingManager)."""

    async def on_call(
        self,
        call_key: str,
        cels: Sequence[CelRow],
        cdrs: Sequence[CdrRow],
        recordings: Sequence[RecordingFile] = ...,
        *,
        complete: bool,
        document: Mapping[str, Any] | None = ...,
    ) -> None: ...


class CdrLookup(Protocol):
    """The id-less CDR lookup of the SQL CDR source (sources.sql.SqlSource)."""

    @property
    def cdr_lookup_active(self) -> bool: ...

    def request_cdr_lookup(
        self, call_key: str, uniqueids: Sequence[str], since: datetime
    ) -> None: ...


class Notify(Protocol):
    """Something to wake when documents were queued (shipping.Shipper)."""

    def notify(self) -> None: ...


@dataclass(slots=True)
class _Deferred:
    """An evaluation stand-in that parks a call whose evaluation raised."""

    ship: ShipState
    next_check_at: datetime | None
    documents: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


ROOM_WAIT = 5.0  # seconds between looks at the state disk while it is low


def _after_mark(wait: datetime | None, watermark: datetime | None) -> bool:
    return wait is not None and (watermark is None or wait > watermark)


async def _no_gaps() -> Gaps:
    return []


class Evaluator:
    """Evaluates due calls; `await run(stop)` as a stage, or `evaluate_keys` directly."""

    def __init__(
        self,
        settings: Settings,
        store: EvaluatorStore,
        metrics: Metrics,
        watermarks: Watermarks,
        *,
        clock: Callable[[], datetime],
        wake: asyncio.Event,
        gaps: Callable[[], Awaitable[Gaps]] = _no_gaps,
        batch: int = 500,
        idle_wait: float = 0.2,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.watermarks = watermarks
        self.clock = clock
        self.wake = wake
        self.gaps = gaps
        self.batch = batch
        self.idle_wait = idle_wait
        # The calls' settings in the PBX zone (app.Agent replaces them when it is found).
        self.call_settings: CallSettings = settings.calls
        self.observer: CallObserver | None = None
        self.cdr_lookup: CdrLookup | None = None
        self.shipper: Notify | None = None
        self.evaluated_total = 0
        self.evaluation_errors = 0
        self._linkedid_end_seen = False

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate due calls in batches; wake on new rows, poll timers every idle_wait."""
        self.watermarks.pace(True)
        try:
            await self._run(stop)
        finally:
            self.watermarks.pace(False)  # sources reading a backlog never wait for nobody

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # cleared before looking, so rows stored while due_calls runs wake it at once
            self.wake.clear()
            now = self.clock()
            pages = self.watermarks.pages
            low = self.watermarks.low()
            keys = await self.store.due_calls(
                now, self.batch, watermark=low, defer=self.defer_point(low)
            )
            if not keys:
                self.watermarks.evaluated(pages)  # caught up with the pages stored so far
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.idle_wait)
                continue
            if not await self.store.has_room(Need.DOCUMENTS):
                # The state disk is low: new documents would be refused (state/room.py),
                # so the calls wait, not evaluated over and over, until deliveries free it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=ROOM_WAIT)
                continue
            await self.evaluate_keys(keys, now)
            if len(keys) < self.batch:
                self.watermarks.evaluated(pages)
            await asyncio.sleep(0)  # let sources and the shipper run between batches

    def defer_point(self, low: datetime | None) -> Deferral | None:
        """While a source reads a backlog page after page, the points past which a dirty
        call's newest row leaves it for a later page: an evaluation now could only hold
        it for the watermark (calls.settle) or, without its LINKEDID_END yet, find it
        still open (its end, or its idle timeout, lies in rows not read yet), and would
        be done again. Live (no source behind) every dirty call is evaluated at once.
        A source stuck mid-backlog (a hung read; a failed one stops being behind) delays
        a call at most CALL_MAX_AGE after its rows, as long as the hold it would get."""
        if low is None or not self.watermarks.behind():
            return None
        calls = self.call_settings
        ended = before(low, calls.ship_complete_after)
        still_open = before(ended, calls.idle_timeout)
        return Deferral(ended, still_open, max(0.0, calls.max_age))

    async def evaluate_keys(self, keys: Sequence[str], now: datetime) -> int:
        """Load, evaluate and save the calls `keys`; returns the documents enqueued."""
        records = await self.store.load_calls(list(keys))
        watermark = self.watermarks.low()
        lookup = self.cdr_lookup is not None and bool(self.cdr_lookup.cdr_lookup_active)
        calls = self.call_settings
        if lookup:
            calls = replace(calls, cdr_wait=self.settings.cdr_lookup_wait)
        gaps = await self.gaps()
        results: list[tuple[str, EvaluationLike]] = []
        done: list[tuple[CallRecord, Evaluation]] = []
        for rec in records:
            try:
                ev = evaluate(
                    rec.cels,
                    rec.cdrs,
                    rec.recordings,
                    rec.ship,
                    call_key=rec.call_key,
                    now=now,
                    settings=calls,
                    identity=self.settings.identity,
                    gaps=gaps,
                    watermark=watermark,
                    revision_floor=rec.revision_floor,
                )
            except Exception:
                self.evaluation_errors += 1
                log.exception("evaluating call %s failed; retrying in 60 s", rec.call_key)
                parked = _Deferred(rec.ship, now + timedelta(seconds=PARK_SECONDS))
                results.append((rec.call_key, parked))
                continue
            results.append((rec.call_key, ev))
            done.append((rec, ev))
        if results:
            await self.store.save_evaluations(results, now=now)
        if any(_after_mark(ev.wait_mark, watermark) for _, ev in done):
            self.watermarks.want_read()  # held for a read after the end: ask for it now
        self.evaluated_total += len(done)
        for rec, ev in done:
            await self._after(rec, ev, lookup)
        n_docs = sum(len(ev.documents) for _, ev in done)
        if n_docs and self.shipper is not None:
            self.shipper.notify()
        return n_docs

    async def _after(self, rec: CallRecord, ev: Evaluation, lookup: bool) -> None:
        """What follows one call's evaluation: CDR lookup, metrics, the observer."""
        call = ev.call
        if self.cdr_lookup is not None and lookup and call.awaiting_cdr:
            uids = [*(ch.uniqueid for ch in call.channels), *call.linkedids]
            self.cdr_lookup.request_cdr_lookup(call.call_key, uids, call.derived.start)
        if ev.closed and ev.documents and rec.ship.last_phase != "complete":
            reason = call.completion_reason or "unknown"
            self.metrics.calls_completed.labels(reason).inc()
            if reason == "linkedid_end" and not self._linkedid_end_seen:
                self._linkedid_end_seen = True
                self.metrics.linkedid_end_seen.set(1)
        if self.observer is None:
            return
        try:
            await self.observer.on_call(
                rec.call_key,
                rec.cels,
                rec.cdrs,
                rec.recordings,
                complete=bool(call.is_complete),
                document=ev.documents[-1] if ev.documents else None,
            )
        except Exception:
            log.exception("recordings: on_call failed for %s", rec.call_key)
