"""What the agent does when its state store fails: a full disk, a corrupt file.

- Disk full (`state.StateDiskFull`): a source's batch is retried until it goes
  in (`StateGuard.write`). The source waits inside that call, so it reads no
  more rows (backpressure) and its position stays where the last stored batch
  left it: a kill while waiting re-reads the batch from the PBX. One WARN when
  it starts, one INFO when space is back; `sipstack_state_disk_full` is 1 and
  readiness reports "state disk full" meanwhile.
- Corrupt file: `StateStore.open(..., quarantine_corrupt=True)` moves it aside
  and starts a fresh store; `recovery_settings` re-reads the PBX tables from
  STATE_RECOVERY_LOOKBACK before now. The fresh store's revisions lie above a
  floor above any the old file issued (state/floor.py), so a re-read call arrives
  under a new Idempotency-Key (full content where the API had a partial document;
  the same content again otherwise). A page that breaks
  while the agent runs stops the process instead (`state.StateCorruptExit`,
  exit code 1, the file marked): the restart quarantines it the same way.
  docs/operations.md, "The state file is corrupt".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from .config import Settings
from .metrics import Metrics
from .state import StateDiskFull

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DISK_FULL_RETRY = 5.0  # seconds between attempts while the state disk is full
DISK_FULL_PROBLEM = "state disk full: reading paused until the state filesystem has space"


class StateGuard:
    """Retries state writes refused for a full disk until they succeed or `stop` is set."""

    def __init__(self, metrics: Metrics, stop: asyncio.Event, retry: float = DISK_FULL_RETRY):
        self._metrics = metrics
        self._stop = stop
        self._retry = retry
        self._since: float | None = None  # monotonic time of the first refused write

    @property
    def full(self) -> bool:
        return self._since is not None

    async def write(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        while True:
            try:
                result = await fn()
            except StateDiskFull as e:
                self._refused(e)
                if self._stop.is_set():
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self._retry)
                continue
            self._accepted()
            return result

    def _refused(self, e: StateDiskFull) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self._metrics.state_disk_full.set(1)
            log.warning(
                "%s; reading is paused and nothing is lost (the sources' positions did not "
                "move); retrying every %g s. Free space in STATE_DIR or grow its volume.",
                e,
                self._retry,
            )

    def _accepted(self) -> None:
        if self._since is not None:
            paused = time.monotonic() - self._since
            self._since = None
            self._metrics.state_disk_full.set(0)
            log.info("state disk has space again after %.0f s: reading resumes", paused)


def recovery_settings(settings: Settings, now: datetime) -> Settings:
    """The settings the sources start with after a corrupt store was quarantined.

    The read positions went with the file, so the sources re-read from
    STATE_RECOVERY_LOOKBACK before now, or from START_FROM when that is a later
    time (nothing before it was ever wanted) or `beginning`.
    """
    if settings.start_from == "beginning":
        return settings
    start = now - timedelta(seconds=settings.state_recovery_lookback)
    if settings.start_from_time is not None and settings.start_from_time.tzinfo is not None:
        start = max(start, settings.start_from_time)
    return replace(settings, start_from=start.isoformat(), start_from_time=start)


def quarantine_warning(
    moved: Path, settings: Settings, start: datetime | None, revision_floor: int = 0
) -> str:
    where = start.isoformat() if start is not None else "the beginning (START_FROM=beginning)"
    return (
        f"state file corrupt: moved to {moved} and started a fresh store; the PBX tables are "
        f"re-read from {where} (STATE_RECOVERY_LOOKBACK={settings.state_recovery_lookback:g} s), "
        f"their calls are sent again as new revisions above {revision_floor} (new "
        "Idempotency-Keys: none the old file may have used). CSV/AMI events older "
        "than the feed's current file or connection are not re-read. "
        "See docs/operations.md, 'The state file is corrupt'."
    )
