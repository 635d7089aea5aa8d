"""housekeeping while the state disk is low: delivered calls pruned sooner, in small
transactions, every round (a fake store: what is asked of it is the subject)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sipstack_agent.housekeeping import (
    KEEP_CLOSED_FOR,
    KEEP_CLOSED_WHEN_LOW,
    LOW_PRUNE_CALLS,
    housekeeping,
)
from sipstack_agent.metrics import Metrics
from sipstack_agent.state import Need, PruneResult, StoreStats


class Store:
    def __init__(self, low: bool, prunable: int) -> None:
        self.low = low
        self.prunable = prunable
        self.prunes: list[tuple[float, int]] = []
        self.asked: list[Need] = []
        self.rounds = 0

    async def stats(self, now: datetime) -> StoreStats:
        self.rounds += 1
        return StoreStats(**{f: 0 for f in StoreStats.__dataclass_fields__})

    async def has_room(self, what: Need) -> bool:
        self.asked.append(what)
        return not self.low

    async def prune(
        self,
        now: datetime,
        *,
        keep_closed_for: float = 3600.0,
        keep_delivered_for: float = 0.0,
        max_calls: int = 5000,
    ) -> PruneResult:
        self.prunes.append((keep_closed_for, max_calls))
        n = min(self.prunable, max_calls)
        self.prunable -= n
        return PruneResult(**{**{f: 0 for f in PruneResult.__dataclass_fields__}, "calls": n})


async def run_rounds(store: Store, rounds: int) -> None:
    stop = asyncio.Event()

    async def stopper() -> None:
        while store.rounds < rounds:
            await asyncio.sleep(0)
        stop.set()

    await asyncio.gather(
        housekeeping(store, Metrics(), lambda: datetime.now(UTC), stop, 0.0, interval=0.001),
        stopper(),
    )


@pytest.mark.parametrize("low", [False, True])
async def test_a_low_disk_prunes_every_round_in_small_transactions(low: bool) -> None:
    store = Store(low=low, prunable=LOW_PRUNE_CALLS * 3 + 7)
    await run_rounds(store, 3)
    assert store.asked and set(store.asked) == {Need.ROWS}  # rows are what waits for room
    if not low:  # an hour's grace, once a minute, one transaction
        assert store.prunes == [(KEEP_CLOSED_FOR, 5000)]
    else:  # every round, a minute's grace, LOW_PRUNE_CALLS per transaction until done
        assert store.prunes[:5] == [(KEEP_CLOSED_WHEN_LOW, LOW_PRUNE_CALLS)] * 5
        assert store.prunable == 0 and len(store.prunes) >= 5
