"""The housekeeping stage: store stats -> metrics every 10 s, prune every 60 s.

While the state disk is low (state/room.py: rows and documents are refused), delivered
calls are pruned every 10 s once closed for KEEP_CLOSED_WHEN_LOW instead of an hour:
their rows hold the room that reading needs to resume. A row arriving for such a call
later ships the next revision from that row alone (a tombstone keeps its revision);
rare, as a call closes only once both sources have read past its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from .metrics import Metrics
from .state import Need, PruneResult, StoreStats

log = logging.getLogger("sipstack_agent.app")

KEEP_CLOSED_FOR = 3600.0  # seconds a closed call stays loaded before it may be pruned
KEEP_CLOSED_WHEN_LOW = 60.0  # the same while the state disk is low
LOW_PRUNE_CALLS = 200  # calls per prune transaction then
LOW_PRUNE_ROUNDS = 50  # transactions per round then (10 000 calls every 10 s)


class HousekeepingStore(Protocol):
    """The part of `state.StateStore` housekeeping uses."""

    async def stats(self, now: datetime) -> StoreStats: ...

    async def prune(
        self,
        now: datetime,
        *,
        keep_closed_for: float = ...,
        keep_delivered_for: float = ...,
        max_calls: int = ...,
    ) -> PruneResult: ...

    async def has_room(self, what: Need) -> bool: ...


async def housekeeping(
    store: HousekeepingStore,
    metrics: Metrics,
    clock: Callable[[], datetime],
    stop: asyncio.Event,
    keep_delivered_for: float,
    interval: float = 10.0,
) -> None:
    """Until `stop`: the open-calls gauge every 10 s; prune delivered calls every 60 s."""
    last_prune = 0.0
    while not stop.is_set():
        now = clock()
        stats = await store.stats(now)
        metrics.open_calls.set(stats.open_calls)
        low = not await store.has_room(Need.ROWS)
        if low or time.monotonic() - last_prune >= 60:
            last_prune = time.monotonic()
            if low:
                await _prune_when_low(store, now, keep_delivered_for)
            else:
                res = await store.prune(
                    now, keep_closed_for=KEEP_CLOSED_FOR, keep_delivered_for=keep_delivered_for
                )
                if res.calls:
                    log.debug("pruned %d delivered calls", res.calls)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _prune_when_low(
    store: HousekeepingStore, now: datetime, keep_delivered_for: float
) -> None:
    """Prune in small transactions (each one's WAL must fit in the room left)."""
    pruned = 0
    for _ in range(LOW_PRUNE_ROUNDS):
        res = await store.prune(
            now,
            keep_closed_for=KEEP_CLOSED_WHEN_LOW,
            keep_delivered_for=keep_delivered_for,
            max_calls=LOW_PRUNE_CALLS,
        )
        pruned += res.calls
        if res.calls < LOW_PRUNE_CALLS:
            break
    if pruned:
        log.info(
            "state disk low: pruned %d delivered calls closed over %g s ago",
            pruned,
            KEEP_CLOSED_WHEN_LOW,
        )
