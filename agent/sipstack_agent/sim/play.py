"""Real-time pacing: commit simulated rows at the moment the PBX would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from .timeline import Write


async def play(
    writes: Sequence[Write],
    write: Callable[[Sequence[Write]], Awaitable[None]],
    *,
    t0: datetime | None = None,
    speed: float = 1.0,
    tick: float = 0.02,
    stop: asyncio.Event | None = None,
    committed: dict[str, float] | None = None,
    mark: Callable[[Write], bool] | None = None,
) -> dict[str, float]:
    """Commit `writes` in real time: a row whose `at` is t0 + x is written x/speed
    seconds after the call (batched per `tick`). Returns, per linkedid, the wall
    clock (time.time()) at which its last row was committed — the start of the
    end-to-end latency of that call. Pass `committed` to watch it fill up live, and
    `mark` to time only some rows (e.g. `is_linkedid_end`)."""
    last_commit: dict[str, float] = committed if committed is not None else {}
    if not writes:
        return last_commit
    base = t0 or writes[0].at
    wall0 = time.time()
    i = 0
    n = len(writes)
    while i < n:
        if stop is not None and stop.is_set():
            break
        elapsed = (time.time() - wall0) * speed
        horizon = base + timedelta(seconds=elapsed)
        j = i
        while j < n and writes[j].at <= horizon:
            j += 1
        if j > i:
            batch = writes[i:j]
            await write(batch)
            done = time.time()
            for w in batch:
                if mark is None or mark(w):
                    last_commit[w.linkedid] = done
            i = j
            continue
        wait = ((writes[i].at - base).total_seconds() / speed) - (time.time() - wall0)
        await asyncio.sleep(min(max(wait, 0.0), tick) if wait > 0 else 0)
    return last_commit
