"""The revision rules of calls/document.py: the next revision, resend's stride and the
floor of a store rebuilt after a quarantine (pure, table-tested)."""

from __future__ import annotations

import pytest
from sipstack_agent.calls.document import (
    MAX_REVISION,
    REBUILD_SPAN,
    RESEND_STRIDE,
    next_revision,
    rebuild_floor,
    resend_revision,
)

NOW = 1_796_119_200.0  # 2026-12-01T10:00:00Z
CLOCK = 1_796_119_200_000 * RESEND_STRIDE  # RESEND_STRIDE per millisecond since 1970


@pytest.mark.parametrize(
    ("last", "floor", "expected"),
    [
        (0, 0, 1),  # a never-rebuilt store: revisions 1, 2, ...
        (4, 0, 5),
        (0, CLOCK, CLOCK + 1),  # a call's first revision in a rebuilt store
        (CLOCK + 1, CLOCK, CLOCK + 2),  # later ones +1
        (3, CLOCK, CLOCK + 1),  # below the floor (never in a rebuilt store): above it anyway
    ],
)
def test_next_revision(last: int, floor: int, expected: int) -> None:
    assert next_revision(last, floor) == expected


@pytest.mark.parametrize(
    ("known", "run", "floor", "expected"),
    [
        (3, 1, 0, 4),
        (None, 1, 0, RESEND_STRIDE + 1),
        (0, 2, 0, 2 * RESEND_STRIDE + 1),
        (CLOCK + 2, 1, CLOCK, CLOCK + 3),  # a call the rebuilt store holds: the next one
        (None, 1, CLOCK, CLOCK + RESEND_STRIDE + 1),  # pruned: above the rebuilt store's live
        (None, 3, CLOCK, CLOCK + 3 * RESEND_STRIDE + 1),
    ],
)
def test_resend_revision(known: int | None, run: int, floor: int, expected: int) -> None:
    assert resend_revision(known, run, floor) == expected


@pytest.mark.parametrize(
    ("now", "previous", "expected"),
    [
        (NOW, None, CLOCK),  # first rebuild: the clock part
        (NOW + 0.0004, None, CLOCK),  # the clock counts whole milliseconds
        (NOW + 0.001, None, CLOCK + RESEND_STRIDE),
        (NOW, CLOCK - REBUILD_SPAN - 1, CLOCK),  # an old rebuild long ago: the clock wins
        (NOW, CLOCK, CLOCK + REBUILD_SPAN),  # a rebuild in the same millisecond: counted
        (NOW - 86_400, CLOCK, CLOCK + REBUILD_SPAN),  # the clock went back a day
        (0.0, None, 0),  # no clock at all (1970) and nothing beside the file
        (-5.0, 7, 7 + REBUILD_SPAN),
        (NOW, -1, CLOCK),  # a negative `.floor` (garbage) counts as none
    ],
)
def test_rebuild_floor(now: float, previous: int | None, expected: int) -> None:
    assert rebuild_floor(now, previous) == expected


def test_rebuild_floors_are_monotonic_and_above_what_the_old_store_issued() -> None:
    """Each rebuild's floor is above every revision the store before it could issue:
    its own floor plus live revisions (< RESEND_STRIDE) and resend runs (run * stride),
    for a store that lived longer than its runs + 1 ms, or with fewer than 10^6 runs."""
    floor, t = 0, NOW
    for runs, lived in [(0, 0.002), (5, 0.0), (999_998, 0.0), (2, 3600.0), (0, -7200.0)]:
        highest = floor + runs * RESEND_STRIDE + RESEND_STRIDE - 1
        t += lived
        new = rebuild_floor(t, floor or None)
        assert new > highest and new > floor, (runs, lived)
        floor = new


def test_floors_stay_json_safe_until_2255() -> None:
    assert rebuild_floor(9_007_199_254.0 - 86_400, None) + RESEND_STRIDE < MAX_REVISION
    with pytest.raises(ValueError, match="JSON-safe"):
        rebuild_floor(9_007_199_254.8, None)
