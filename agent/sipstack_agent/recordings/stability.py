"""When is a recording file finished?

A file is *stable* when its size and mtime were the same at
RECORDING_STABILITY_CHECK_COUNT consecutive checks taken at least
RECORDING_STABILITY_CHECK_INTERVAL seconds apart, counted after the first
observation (so with the defaults 3 and 2 a file must sit unchanged for at
least 6 s). It is *ready* when it is stable and its call is complete.

Pure bookkeeping: the caller stats the file and passes `now` (tests inject a
clock; nothing here sleeps or reads the time).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    size: int
    mtime_ns: int
    checked_at: float
    unchanged: int = 0  # consecutive checks that saw the same size and mtime


class StabilityTracker:
    def __init__(self, check_count: int, check_interval: float) -> None:
        self.check_count = max(1, int(check_count))
        self.check_interval = max(0.0, float(check_interval))
        self._entries: dict[str, _Entry] = {}

    def observe(self, key: str, size: int, mtime_ns: int, now: float) -> bool:
        """Record one check; returns True when the file is stable.

        A check sooner than the interval after the previous counted one only
        resets the count when the file changed (growth is never ignored).
        """
        e = self._entries.get(key)
        if e is None:
            self._entries[key] = _Entry(size, mtime_ns, now)
            return False
        if size != e.size or mtime_ns != e.mtime_ns:
            e.size, e.mtime_ns, e.checked_at, e.unchanged = size, mtime_ns, now, 0
            return False
        if now - e.checked_at >= self.check_interval:
            e.unchanged += 1
            e.checked_at = now
        return e.unchanged >= self.check_count

    def is_stable(self, key: str) -> bool:
        e = self._entries.get(key)
        return e is not None and e.unchanged >= self.check_count

    def due(self, key: str, now: float) -> bool:
        """True when a new check of `key` would count (interval elapsed, or never seen)."""
        e = self._entries.get(key)
        return e is None or now - e.checked_at >= self.check_interval

    def last(self, key: str) -> tuple[int, int] | None:
        e = self._entries.get(key)
        return None if e is None else (e.size, e.mtime_ns)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def is_ready(stable: bool, call_complete: bool) -> bool:
    """A recording is handed on (document, upload) only when both hold."""
    return stable and call_complete
