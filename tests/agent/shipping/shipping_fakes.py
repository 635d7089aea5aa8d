"""Test doubles for the shipping tests: an in-memory outbox store, a scripted
transport, a settable clock and a sample call document."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sipstack_agent.shipping.client import Response, TransportError

T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """Wall clock the test sets; `monotonic()` follows it except across `step()`."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self._stepped = 0.0  # seconds the wall clock jumped (not elapsed time)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def step(self, seconds: float) -> datetime:
        """An NTP step: the wall clock jumps, the monotonic clock does not move."""
        self.now += timedelta(seconds=seconds)
        self._stepped += seconds
        return self.now

    def monotonic(self) -> float:
        return (self.now - T0).total_seconds() - self._stepped


@dataclass
class FakeItem:
    id: int
    kind: str
    call_key: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str = ""
    state: str = "pending"  # pending | delivered | dead
    dead: tuple[int | None, str, str] | None = None  # (status, body, reason)


@dataclass
class FakeStats:
    outbox_depth: int
    oldest_undelivered_age: float
    dead_letters: int
    open_calls: int = 0
    outbox_by_kind: dict[str, int] = field(default_factory=dict)


class FakeStore:
    """The outbox part of state.StateStore, in memory (docs/architecture.md)."""

    def __init__(self) -> None:
        self.items: dict[int, FakeItem] = {}
        self._next = 1
        self.due_calls: list[tuple[datetime, int, str | None]] = []
        self.delivered_calls: list[list[int]] = []

    def add(
        self,
        payload: Mapping[str, Any],
        *,
        key: str | None = None,
        kind: str = "call",
        created_at: datetime = T0,
        attempts: int = 0,
        next_attempt_at: datetime | None = None,
    ) -> FakeItem:
        i = self._next
        self._next += 1
        item = FakeItem(
            id=i,
            kind=kind,
            call_key=str(payload.get("linkedid", "")),
            idempotency_key=key or f"conn:{payload.get('linkedid')}:{payload.get('revision', 1)}",
            payload=dict(payload),
            attempts=attempts,
            created_at=created_at,
            next_attempt_at=next_attempt_at or created_at,
        )
        self.items[i] = item
        return item

    async def enqueue(
        self, kind: str, idempotency_key: str, payload: Mapping[str, Any], call_key: str = ""
    ) -> bool:
        if any(it.idempotency_key == idempotency_key for it in self.items.values()):
            return False
        self.add(payload, key=idempotency_key, kind=kind, created_at=datetime.now(UTC))
        return True

    def pending(self) -> list[FakeItem]:
        return [it for it in self.items.values() if it.state == "pending"]

    def delivered(self) -> list[FakeItem]:
        return [it for it in self.items.values() if it.state == "delivered"]

    def dead(self) -> list[FakeItem]:
        return [it for it in self.items.values() if it.state == "dead"]

    async def outbox_due(self, now: datetime, limit: int = 100, kind: str | None = None):
        self.due_calls.append((now, limit, kind))
        due = [
            it
            for it in self.pending()
            if it.next_attempt_at <= now and (kind is None or it.kind == kind)
        ]
        due.sort(key=lambda it: (it.next_attempt_at, it.id))
        # hand out copies, like a database would
        return [
            FakeItem(**{**it.__dict__, "payload": copy.deepcopy(it.payload)}) for it in due[:limit]
        ]

    async def outbox_delivered(self, item_id: int | Sequence[int]) -> None:
        ids = [item_id] if isinstance(item_id, int) else list(item_id)
        self.delivered_calls.append(ids)
        for i in ids:
            self.items[i].state = "delivered"

    async def outbox_pull_in(self, latest: datetime) -> int:
        late = [it for it in self.pending() if it.next_attempt_at > latest]
        for it in late:
            it.next_attempt_at = latest
        return len(late)

    async def outbox_retry(self, item_id: int, next_attempt_at: datetime, error: str) -> None:
        it = self.items[item_id]
        it.attempts += 1
        it.next_attempt_at = next_attempt_at
        it.last_error = error

    async def outbox_dead(self, item_id: int, status: int | None, body: str, reason: str) -> bool:
        it = self.items[item_id]
        it.state = "dead"
        it.dead = (status, body, reason)
        return True

    async def stats(self, now: datetime) -> FakeStats:
        pend = self.pending()
        by_kind: dict[str, int] = {}
        for it in pend:
            by_kind[it.kind] = by_kind.get(it.kind, 0) + 1
        oldest = min((it.created_at for it in pend), default=None)
        return FakeStats(
            outbox_depth=len(pend),
            oldest_undelivered_age=(now - oldest).total_seconds() if oldest else 0.0,
            dead_letters=len(self.dead()),
            outbox_by_kind=by_kind,
        )


@dataclass
class SentRequest:
    url: str
    body: bytes
    headers: dict[str, str]


Responder = Callable[[SentRequest], Response]


class FakeTransport:
    """Answers with `responder(request)`; a responder may raise TransportError.

    With `gate` set, every request waits for it (to observe concurrency).
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or (lambda req: Response(202, {}, "{}"))
        self.sent: list[SentRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        req = SentRequest(url, body, dict(headers))
        self.sent.append(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.arrived.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.responder(req)
        finally:
            self.in_flight -= 1

    async def post_multipart(self, url, fields, file_path, file_field, content_type, headers):
        raise NotImplementedError


def statuses(*answers: int | Response | TransportError) -> Responder:
    """A responder that gives the answers in order, then 202 forever."""
    queue = list(answers)

    def respond(req: SentRequest) -> Response:
        if not queue:
            return Response(202, {}, '{"status":"accepted"}')
        a = queue.pop(0)
        if isinstance(a, TransportError):
            raise a
        if isinstance(a, Response):
            return a
        return Response(a, {}, f'{{"status":{a}}}')

    return respond


def sample_document(
    linkedid: str = "1700000000.1",
    *,
    revision: int = 1,
    phase: str = "complete",
    src: str = "+15145550101",
    dst: str = "201",
) -> dict[str, Any]:
    """A call document shaped like ingest-api.md's contract."""
    t = "2026-01-15T11:59:00+00:00"
    threads = [
        {
            "time": t,
            "event": "CHAN_START",
            "channel": "PJSIP/trunk-00000001",
            "exten": dst,
            "context": "from-trunk",
            "uniqueid": linkedid,
        },
        {
            "time": "2026-01-15T11:59:03+00:00",
            "event": "ANSWER",
            "channel": "PJSIP/201-00000002",
            "exten": dst,
            "context": "from-internal",
            "uniqueid": linkedid + "1",
        },
        {
            "time": "2026-01-15T11:59:40+00:00",
            "event": "CDR",
            "src": src,
            "dst": dst,
            "duration": 40,
            "billsec": 37,
            "disposition": "ANSWERED",
            "channel": "PJSIP/trunk-00000001",
            "dstchannel": "PJSIP/201-00000002",
            "uniqueid": linkedid,
        },
    ]
    return {
        "connector": "asterisk",
        "connector_version": "0.14.0",
        "customer_id": 42,
        "tenant": "",
        "hostname": "pbx1",
        "linkedid": linkedid,
        "is_complete": phase == "complete",
        "call_time": t,
        "duration_seconds": 40,
        "disposition": "ANSWERED",
        "direction": "i",
        "call_threads": threads,
        "call_threads_count": len(threads),
        "ship_phase": phase,
        "shipped_at": "2026-01-15T11:59:41+00:00",
        "revision": revision,
        "src_number": src,
        "dst_number": dst,
        "dst_extension": dst,
        "billsec": 37,
        "answered": True,
        "linkedids": [linkedid],
        "timezone": "UTC",
    }
