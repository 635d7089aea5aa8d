"""The retry / dead-letter decision of every outbox kind (call documents, recordings).

One policy, one function: `decide(policy, attempts=, age=, retry_after=)`.

- The wait before the next attempt is `Retry-After` when the API sent a usable
  one, else exponential backoff with full jitter; either way it is at most
  the backoff cap (5 min): an answer cannot park delivery for days.
- An item is given up (`retry_horizon`) only when BOTH hold:
  - it is at least API_RETRY_HORIZON old by its queue timestamp, and
  - it has failed as many times as the backoff schedule needs, on average,
    to fill the horizon (`RetryPolicy.horizon_attempts`).
  A wall clock stepped forward (NTP, a VM resumed days later) makes items
  look old but adds no attempts, so nothing is dead-lettered by a clock step;
  a stream of short Retry-After answers adds attempts quickly but not age.

Retry timing runs on `StepFreeClock`: the wall clock (next_attempt_at is stored
as wall time, so a restart still finds it), except that a step back (more
than STEP_TOLERANCE behind the monotonic time elapsed since the last reading)
is not followed. A wall clock stepped back (NTP) thus delays no retry; one
stepped forward only brings retries sooner and, by the rule above,
dead-letters nothing.

`parse_retry_after` reads the header: delta-seconds or an HTTP date; a value
that is not a finite number or a date (`inf`, `nan`, `soon`) counts as absent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from sipstack_agent.config import ApiSettings
from sipstack_agent.rules import backoff


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial: float = 1.0  # ApiSettings.backoff_initial
    cap: float = 300.0  # ApiSettings.backoff_cap: the longest single wait, Retry-After included
    horizon: float = 48 * 3600.0  # API_RETRY_HORIZON

    @classmethod
    def of(cls, api: ApiSettings) -> RetryPolicy:
        return cls(initial=api.backoff_initial, cap=api.backoff_cap, horizon=api.retry_horizon)

    def ceiling(self, attempt: int) -> float:
        """initial * 2**attempt, capped (attempt 0 = first retry)."""
        return backoff.ceiling(self.initial, self.cap, attempt)

    @property
    def horizon_attempts(self) -> int:
        """Failures whose average full-jitter waits (ceiling / 2) add up to the horizon."""
        total = 0.0
        n = 0
        while total < self.horizon:
            ceiling = self.ceiling(n)
            if ceiling <= 0:
                return n
            if ceiling >= self.cap:  # from here on every wait averages cap / 2
                return n + math.ceil((self.horizon - total) / (ceiling / 2))
            total += ceiling / 2
            n += 1
        return n

    def wait_hint(self, header: str | None, now: datetime) -> float | None:
        """A Retry-After header as seconds, clamped to the cap; None when absent or unusable."""
        seconds = parse_retry_after(header, now)
        return None if seconds is None else min(seconds, self.cap)


@dataclass(frozen=True, slots=True)
class Decision:
    give_up: bool
    delay: float  # seconds until the next attempt (0 when giving up)


def decide(
    policy: RetryPolicy,
    *,
    attempts: int,
    age: float,
    retry_after: float | None,
    rng: random.Random,
) -> Decision:
    """After a retryable failure: give up, or wait `delay` seconds.

    attempts: failures before this one (the outbox's `attempts`); age: seconds
    since the item was queued (may be anything after a clock step).
    """
    failures = max(attempts, 0) + 1
    if age >= policy.horizon and failures >= policy.horizon_attempts:
        return Decision(True, 0.0)
    if retry_after is not None:
        return Decision(False, min(max(retry_after, 0.0), policy.cap))
    return Decision(False, rng.uniform(0.0, policy.ceiling(attempts)))


STEP_TOLERANCE = 1.0  # seconds the wall clock may lag the monotonic one (slew, jitter)


class StepFreeClock:
    """The outbox's time: the wall clock, but a step back is not followed.

    `expected` = last reading + monotonic time elapsed since. The reading is the wall
    clock unless it is more than STEP_TOLERANCE behind `expected` (a step back): then
    `expected`, so the clock carries on from where it was and a retry scheduled before
    the step is due after its delay, not after the step too. A step forward is
    followed (retries only come sooner, and the horizon also needs attempts). Within
    the tolerance the wall clock wins, so NTP slewing does not accumulate.
    """

    def __init__(self, wall: Callable[[], datetime], monotonic: Callable[[], float]) -> None:
        self._wall = wall
        self._mono = monotonic
        self._last: tuple[datetime, float] | None = None

    def __call__(self) -> datetime:
        wall = self._wall()
        wall = wall if wall.tzinfo is not None else wall.replace(tzinfo=UTC)
        mono = self._mono()
        now = wall
        if self._last is not None:
            then, then_mono = self._last
            expected = then + timedelta(seconds=max(0.0, mono - then_mono))
            if (expected - wall).total_seconds() > STEP_TOLERANCE:
                now = expected
        self._last = (now, mono)
        return now


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), unclamped.

    None for an absent header or one that is neither a finite number nor a date.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
