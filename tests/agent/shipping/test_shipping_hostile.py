"""A hostile API on loopback: absurd Retry-After values and endless or compressed-bomb bodies.

The real Shipper, StateStore and AiohttpTransport against real aiohttp servers
(the receiver's fault injection, and a small server that streams 200 MiB).
Time is a FakeClock; nothing here asserts on how long something took.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import psutil
import pytest
from aiohttp import web
from sipstack_agent.config import ApiSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.receiver import Receiver
from sipstack_agent.shipping import AiohttpTransport, Shipper
from sipstack_agent.shipping.client import MAX_RESPONSE_BYTES
from sipstack_agent.state import StateStore

from .shipping_fakes import T0, FakeClock, sample_document

API_KEY = "sk_" + "h" * 32
CAP = 300.0
MiB = 1024 * 1024
HUGE = 200 * MiB


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    yield s
    await s.close()


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    r = Receiver(tmp_path / "rx.sqlite", api_key=API_KEY)
    await r.start()
    yield r
    await r.stop()


async def _enqueue(store: StateStore, n: int, clock: FakeClock) -> list[str]:
    keys = []
    for i in range(n):
        key = f"pbx1:50.{i}:1"
        await store.enqueue("call", key, sample_document(f"50.{i}"), f"50.{i}", now=clock())
        keys.append(key)
    return keys


def _shipper(store: StateStore, transport: AiohttpTransport, url: str, clock: FakeClock) -> Shipper:
    api = ApiSettings(url=url, api_key=API_KEY, concurrency=8, backoff_cap=CAP)
    return Shipper(
        store,
        transport,
        api,
        Identity(connector_id="pbx1"),
        Metrics(),
        clock=clock,
        monotonic=clock.monotonic,
    )


@pytest.mark.parametrize(
    "retry_after",
    [
        "inf",
        "1e12",
        "86400000",
        "nan",
        "soon",
        "-inf",
        format_datetime(T0 + timedelta(days=400), usegmt=True),
    ],
)
async def test_no_retry_after_parks_the_shipper_or_fails_the_pass(
    store: StateStore, receiver: Receiver, retry_after: str
) -> None:
    clock = FakeClock()
    keys = await _enqueue(store, 8, clock)
    # The first answer of the pass is the hostile one; the other seven are accepted.
    receiver.set_faults(fail_status=429, fail_count=1, retry_after=retry_after)
    async with AiohttpTransport() as transport:
        shipper = _shipper(store, transport, receiver.calls_url, clock)
        assert await shipper.ship_once(clock()) == 8
        assert receiver.count_documents() == 7
        [waiting] = await store.outbox_due(clock() + timedelta(days=3650), 10)
        assert waiting.attempts == 1
        assert waiting.next_attempt_at <= clock() + timedelta(seconds=CAP)
        assert shipper._pause_left() <= CAP
        clock.advance(CAP)
        while await shipper.ship_once(clock()):
            clock.advance(CAP)
    assert not await store.dead_letters()
    assert receiver.count_documents() == len(keys)
    stats = receiver.stats()
    assert (stats["accepted"], stats.get("duplicates", 0)) == (8, 0)  # none sent twice


async def test_a_near_retry_after_date_is_honoured(store: StateStore, receiver: Receiver) -> None:
    clock = FakeClock()
    await _enqueue(store, 1, clock)
    when = format_datetime(T0 + timedelta(seconds=90), usegmt=True)
    receiver.set_faults(fail_status=503, fail_count=1, retry_after=when)
    async with AiohttpTransport() as transport:
        shipper = _shipper(store, transport, receiver.calls_url, clock)
        await shipper.ship_once(clock())
        [waiting] = await store.outbox_due(clock() + timedelta(days=1), 10)
    assert waiting.next_attempt_at == T0 + timedelta(seconds=90)


# --------------------------------------------------------------------------- bodies


class Hostile:
    """Answers every POST with a 500 whose body is 200 MiB (plain, streamed) or a gzip bomb."""

    def __init__(self) -> None:
        self.sent = 0  # bytes written to the socket by the handler
        self.bomb = b""

    def make_bomb(self) -> None:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
        block = b"\0" * MiB
        parts = [comp.compress(block) for _ in range(HUGE // MiB)]
        self.bomb = b"".join(parts) + comp.flush()

    async def plain(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=500, headers={"Content-Type": "text/plain"})
        resp.content_length = HUGE
        await resp.prepare(request)
        chunk = b"x" * (256 * 1024)
        try:
            while self.sent < HUGE:
                await resp.write(chunk)
                self.sent += len(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def gzip(self, request: web.Request) -> web.Response:
        self.sent += len(self.bomb)
        return web.Response(
            status=500,
            body=self.bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, str]]:
    h = Hostile()
    h.make_bomb()
    app = web.Application()
    app.router.add_post("/plain", h.plain)
    app.router.add_post("/gzip", h.gzip)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield h, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("path", ["plain", "gzip"])
async def test_an_endless_or_bomb_body_is_read_only_up_to_the_cap(
    hostile: tuple[Hostile, str], path: str
) -> None:
    h, base = hostile
    proc = psutil.Process()
    before = proc.memory_info().rss
    async with AiohttpTransport() as transport:
        resp = await transport.post_json(f"{base}/{path}", b"{}", {})
    grown = proc.memory_info().rss - before
    assert resp.status == 500
    assert resp.truncated
    assert len(resp.text) == MAX_RESPONSE_BYTES
    if path == "plain":
        assert h.sent < HUGE // 4  # the client stopped reading; the socket pushed back
    assert grown < 100 * MiB  # not the 200 MiB body (nor its decompression) in memory


async def test_the_shipper_dead_letters_a_bomb_answer_with_a_bounded_body(
    store: StateStore, hostile: tuple[Hostile, str]
) -> None:
    _, base = hostile
    clock = FakeClock()
    await _enqueue(store, 1, clock)
    async with AiohttpTransport() as transport:
        shipper = _shipper(store, transport, f"{base}/gzip", clock)
        await shipper.ship_once(clock())
    [waiting] = await store.outbox_due(clock() + timedelta(days=1), 10)
    assert waiting.attempts == 1 and "HTTP 500" in waiting.last_error
    assert len(waiting.last_error) <= 2000


async def test_a_clock_step_back_while_stopped_delays_no_retry_beyond_the_cap(
    store: StateStore, receiver: Receiver
) -> None:
    """Issue 14: a document scheduled for T0 + 60 s by an agent whose clock read two days
    ahead (then NTP stepped it back while the agent was stopped) is due within the
    backoff cap of the restarted agent's start, not two days later."""
    ahead = FakeClock(T0 + timedelta(days=2))
    [key] = await _enqueue(store, 1, ahead)
    [item] = await store.outbox_due(ahead(), 10)
    await store.outbox_retry(item.id, ahead() + timedelta(seconds=60), "HTTP 503")
    clock = FakeClock(T0)  # the restart, on the corrected clock
    transport = AiohttpTransport(timeout=5.0)
    shipper = _shipper(store, transport, receiver.calls_url, clock)
    assert await store.outbox_due(clock() + timedelta(seconds=CAP), 10) == []  # before start
    try:
        stop = asyncio.Event()
        stop.set()  # start (the pull-in), then stop at once
        await shipper.run(stop)
        [due] = await store.outbox_due(clock() + timedelta(seconds=CAP), 10)
        assert due.idempotency_key == key and due.next_attempt_at == clock() + timedelta(
            seconds=CAP
        )
        clock.advance(CAP)
        assert await shipper.ship_once(clock()) == 1
        assert receiver.count_documents() == 1
    finally:
        await transport.close()
