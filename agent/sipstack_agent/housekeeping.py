"""The housekeeping stage: store stats -> metrics every 10 s, prune every 60 s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from .metrics import Metrics
from .state import PruneResult, StoreStats

log = logging.getLogger("sipstack_agent.app")

KEEP_CLOSED_FOR = 3600.0  # seconds a closed call stays loaded before it may be pruned


class HousekeepingStore(Protocol):
    """The part of `state.StateStore` housekeeping uses."""

    async def stats(self, now: datetime) -> StoreStats: ...

    async def prune(
        self, now: datetime, *, keep_closed_for: float = ..., keep_delivered_for: float = ...
    ) -> PruneResult: ...


async def housekeeping(
    store: HousekeepingStore,
    metrics: Metrics,
    clock: Callable[[], datetime],
    stop: asyncio.Event,
    keep_delivered_for: float,
) -> None:
    """Until `stop`: the open-calls gauge every 10 s; prune delivered calls every 60 s."""
    last_prune = 0.0
    while not stop.is_set():
        now = clock()
        stats = await store.stats(now)
        metrics.open_calls.set(stats.open_calls)
        if time.monotonic() - last_prune >= 60:
            last_prune = time.monotonic()
            res = await store.prune(
                now, keep_closed_for=KEEP_CLOSED_FOR, keep_delivered_for=keep_delivered_for
            )
            if res.calls:
                log.debug("pruned %d delivered calls", res.calls)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=10.0)
