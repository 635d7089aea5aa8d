"""The values the state store hands out and takes in."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..model import CdrRow, CelRow, RecordingFile, ShipState

# call_key -> (gen, epoch) seen when the call was loaded: a save compares them
Loaded = dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class IngestResult:
    new_cels: int
    new_cdrs: int
    duplicates: int
    dirty_calls: int = 0  # calls marked dirty by this batch
    merges: int = 0  # call groups merged away by this batch


@dataclass(frozen=True, slots=True)
class Deferral:
    """While a source reads a backlog (`StateStore.due_calls(..., defer=)`): a dirty call
    whose newest row (`calls.last_event`) is past `ended` is left for a later page, and
    so is one without a LINKEDID_END row yet whose newest row is past `open` (its
    LINKEDID_END, or the idle timeout, is still ahead in the unread rows); at most until
    its rows are `at_most` seconds old (the longest a hold for the watermark lasts)."""

    ended: datetime
    open: datetime
    at_most: float


@dataclass(slots=True)
class CallRecord:
    """Everything the call core needs to evaluate one call.

    `cels` / `cdrs` / `recordings` are in arrival order (the core sorts).
    `linkedids` are all linkedids merged into the call (sorted by
    `rules.ids.linkedid_sort_key`; the first one is `call_key`).
    """

    call_key: str
    cels: list[CelRow]
    cdrs: list[CdrRow]
    recordings: list[RecordingFile]
    ship: ShipState
    linkedids: list[str] = field(default_factory=list)
    closed: bool = False
    dirty: bool = False
    next_check_at: datetime | None = None
    gen: int = 0
    epoch: int = 0
    revision_floor: int = 0  # the store's: its revisions lie above it (state/floor.py)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str
    call_key: str
    idempotency_key: str
    payload_text: str  # the row as stored (JSON text): the shipper splices shipped_at into it
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str = ""

    @property
    def payload(self) -> dict[str, Any]:
        """The stored document, parsed (a new dict on every access)."""
        doc: dict[str, Any] = json.loads(self.payload_text)
        return doc


@dataclass(frozen=True, slots=True)
class StoreStats:
    outbox_depth: int
    oldest_undelivered_age: float  # seconds; 0.0 when the outbox is empty
    dead_letters: int
    open_calls: int
    dirty_calls: int = 0
    calls: int = 0  # open + closed-but-kept
    cel_rows: int = 0
    cdr_rows: int = 0
    outbox_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PruneResult:
    calls: int
    cel_rows: int
    cdr_rows: int
    dead_letters: int = 0
    tombstones_expired: int = 0


class EvaluationLike(Protocol):
    """What `save_evaluation` needs from `calls.Evaluation`."""

    @property
    def documents(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def ship(self) -> ShipState: ...
    @property
    def next_check_at(self) -> datetime | None: ...
    @property
    def closed(self) -> bool: ...


# Outbox age buckets of /status backlog.by_age: (name, upper bound in seconds).
_AGE_LIMITS: tuple[tuple[str, float], ...] = (
    ("under_a_minute", 60.0), ("under_an_hour", 3600.0), ("under_a_day", 86400.0),
    ("over_a_day", float("inf")),
)  # fmt: skip
AGE_BUCKETS: tuple[str, ...] = tuple(name for name, _ in _AGE_LIMITS)


def age_bucket(age: float) -> str:
    return next(name for name, limit in _AGE_LIMITS if age < limit)


def age_counts(now: float, younger_than: Callable[[float], int], total: int) -> dict[str, int]:
    """Documents per age bucket from `younger_than(t)` = how many were created after t
    (one count per bucket bound, e.g. from an index) and the total; `age_bucket`'s rule."""
    out: dict[str, int] = {}
    below = 0
    for name, limit in _AGE_LIMITS:
        upto = total if limit == float("inf") else younger_than(now - limit)
        out[name] = upto - below
        below = upto
    return out
