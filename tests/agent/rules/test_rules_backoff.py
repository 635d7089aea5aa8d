"""rules.backoff: one exponential formula for every wait after a failure in the agent."""

from __future__ import annotations

import pytest
from sipstack_agent.rules.backoff import ceiling, reconnect_delay
from sipstack_agent.shipping.retry import RetryPolicy


@pytest.mark.parametrize(
    ("initial", "cap", "attempt", "want"),
    [
        (1.0, 60.0, 0, 1.0),
        (1.0, 60.0, 1, 2.0),
        (1.0, 60.0, 5, 32.0),
        (1.0, 60.0, 6, 60.0),  # capped
        (1.0, 60.0, 10**9, 60.0),  # no overflow
        (1.0, 60.0, -3, 1.0),  # a negative attempt is the first
        (0.25, 300.0, 3, 2.0),
        (0.01, 0.64, 100, 0.64),  # the CSV reader: interval * 2**6 at most
    ],
)
def test_ceiling_table(initial: float, cap: float, attempt: int, want: float) -> None:
    assert ceiling(initial, cap, attempt) == want


@pytest.mark.parametrize(
    ("unit", "want"), [(0.0, 4.0), (0.5, 6.0), (0.999999, 7.999996), (-1.0, 4.0), (2.0, 8.0)]
)
def test_reconnect_delay_is_half_to_whole_ceiling(unit: float, want: float) -> None:
    assert reconnect_delay(1.0, 60.0, 3, unit) == pytest.approx(want)


@pytest.mark.parametrize("attempt", range(12))
def test_same_schedule_as_the_copies_it_replaced(attempt: int) -> None:
    # sources/sql.py: min(60, 1 * 2**min(failures - 1, 16)) * (0.5 + u / 2), failures = attempt + 1
    assert reconnect_delay(1.0, 60.0, attempt, 0.3) == min(60.0, 2.0 ** min(attempt, 16)) * 0.65
    # sources/cel_csv/source.py: min(interval * 2**min(failures, 6), 60)
    assert ceiling(2.0, min(60.0, 2.0 * 64), attempt) == min(2.0 * 2 ** min(attempt, 6), 60.0)
    # shipping/retry.py: the API's full-jitter ceiling is the same formula
    assert RetryPolicy(initial=0.5, cap=300.0).ceiling(attempt) == ceiling(0.5, 300.0, attempt)
