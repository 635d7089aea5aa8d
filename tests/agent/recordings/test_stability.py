"""Stability: size and mtime unchanged for N checks at least the interval apart."""

from __future__ import annotations

import os
from pathlib import Path

from sipstack_agent.recordings.stability import StabilityTracker, is_ready

from .helpers import FakeClock


def _observe(t: StabilityTracker, path: Path, now: float) -> bool:
    st = os.stat(path)
    return t.observe(str(path), st.st_size, st.st_mtime_ns, now)


def test_growing_file_is_not_stable_until_it_stops(tmp_path: Path, clock: FakeClock) -> None:
    """A real file written slowly: every growth resets the count."""
    path = tmp_path / "growing.wav"
    t = StabilityTracker(check_count=3, check_interval=2.0)
    with path.open("wb") as fh:
        for _ in range(5):
            fh.write(os.urandom(4096))
            fh.flush()
            assert not _observe(t, path, clock())
            clock.advance(2.0)
    size = path.stat().st_size
    results = []
    for _ in range(4):
        results.append(_observe(t, path, clock()))
        clock.advance(2.0)
    # first unchanged look establishes, then 3 unchanged checks -> stable on the 4th look
    assert results == [False, False, True, True]
    assert t.last(str(path)) == (size, path.stat().st_mtime_ns)
    assert t.is_stable(str(path))


def test_checks_closer_than_the_interval_do_not_count(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"x" * 100)
    t = StabilityTracker(check_count=2, check_interval=2.0)
    assert not _observe(t, path, clock())
    for _ in range(10):  # many quick looks within one interval
        clock.advance(0.1)
        assert not _observe(t, path, clock())
    assert not t.due(str(path), clock())
    clock.advance(2.0)
    assert t.due(str(path), clock())
    assert not _observe(t, path, clock())  # one unchanged check so far
    clock.advance(2.0)
    assert _observe(t, path, clock())


def test_mtime_change_without_size_change_resets(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "b.wav"
    path.write_bytes(b"y" * 10)
    t = StabilityTracker(check_count=1, check_interval=1.0)
    _observe(t, path, clock())
    clock.advance(1.0)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # rewritten in place
    assert not _observe(t, path, clock())
    clock.advance(1.0)
    assert _observe(t, path, clock())


def test_ready_needs_a_complete_call() -> None:
    assert not is_ready(True, False)
    assert not is_ready(False, True)
    assert is_ready(True, True)


def test_forget() -> None:
    t = StabilityTracker(1, 0)
    t.observe("k", 1, 1, 0.0)
    assert "k" in t and len(t) == 1
    t.forget("k")
    assert "k" not in t and t.last("k") is None
