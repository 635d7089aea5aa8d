"""Exponential backoff: the one formula behind every wait after a failure in the agent.

`ceiling(initial, cap, attempt)` = initial * 2**attempt, capped. Reconnects
(database pollers, AMI) wait `reconnect_delay`: between half and the whole
ceiling ("equal jitter", so many agents do not reconnect in step, yet never
hammer at once). API deliveries use full jitter on the same ceiling
(shipping/retry.py), stage restarts and the CSV reader the bare ceiling.
The operator cannot import the agent; its one copy is
`sipstack_operator.reconcile.OperatorSettings.retry_delay`.
"""

from __future__ import annotations

MAX_EXPONENT = 40  # 2**40 * any sane initial is past every cap


def ceiling(initial: float, cap: float, attempt: int) -> float:
    """initial * 2**attempt, at most `cap` (attempt 0 = the first wait)."""
    exp = min(max(attempt, 0), MAX_EXPONENT)
    return min(cap, initial * float(2**exp))


def reconnect_delay(initial: float, cap: float, attempt: int, unit: float) -> float:
    """The wait before reconnect number `attempt`; `unit` is a uniform draw in [0, 1)."""
    return ceiling(initial, cap, attempt) * (0.5 + min(max(unit, 0.0), 1.0) / 2)
