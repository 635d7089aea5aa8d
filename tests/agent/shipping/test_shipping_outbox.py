"""Shipper logic with a fake transport, a fake store and an injected clock.

No real sleeping and no timed assertions: time is the FakeClock, and the
backoff's randomness is a stub that returns the top of the jitter range.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import timedelta
from email.utils import format_datetime

import pytest
from sipstack_agent.config import ApiSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.shipping import Response, Shipper, TransportError
from sipstack_agent.shipping import outbox as outbox_mod
from sipstack_agent.shipping.outbox import (
    Outcome,
    classify,
)
from sipstack_agent.shipping.retry import RetryPolicy, StepFreeClock, parse_retry_after
from sipstack_agent.state import StateDiskFull

from .shipping_fakes import (
    T0,
    FakeClock,
    FakeStore,
    FakeTransport,
    sample_document,
    statuses,
)

API_KEY = "sk_" + "A1b2C3d4" * 4  # 35 chars, ends in C3d4
URL = "https://api.example.test/v1/mqs/connectors/asterisk/calls"


class TopRandom(random.Random):
    """uniform(a, b) -> b: makes the full-jitter delay its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class BottomRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def make(
    store: FakeStore | None = None,
    transport: FakeTransport | None = None,
    *,
    concurrency: int = 4,
    rng: random.Random | None = None,
    **api_kw,
):
    store = store or FakeStore()
    transport = transport or FakeTransport()
    clock = FakeClock()
    metrics = Metrics()
    api = ApiSettings(url=URL, api_key=API_KEY, concurrency=concurrency, **api_kw)
    identity = Identity(connector_id="pbx1", version="0.14.0")
    shipper = Shipper(
        store,
        transport,
        api,
        identity,
        metrics,
        clock=clock,
        monotonic=clock.monotonic,
        rng=rng or TopRandom(),
    )
    return shipper, store, transport, clock, metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    v = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


def retries(metrics: Metrics, reason: str) -> float:
    return sample(metrics, "sipstack_api_retries_total", {"kind": "call", "reason": reason})


def dead(metrics: Metrics, reason: str) -> float:
    return sample(metrics, "sipstack_dead_letters_total", {"kind": "call", "reason": reason})


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (408, Outcome.RETRY),
        (425, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (599, Outcome.RETRY),
        (401, Outcome.AUTH),
        (403, Outcome.AUTH),
        (400, Outcome.DEAD),
        (404, Outcome.DEAD),
        (409, Outcome.DEAD),
        (413, Outcome.DEAD),
        (422, Outcome.DEAD),
        (301, Outcome.RETRY),
    ],
)
def test_classify_follows_the_contract(status, outcome):
    assert classify(status) is outcome


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        (format_datetime(T0 + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(T0 - timedelta(seconds=90), usegmt=True), 0.0),
    ],
)
def test_parse_retry_after_seconds_and_http_date(value, expected):
    assert parse_retry_after(value, T0) == expected


def test_backoff_ceiling_doubles_from_initial_to_cap():
    ceilings = [RetryPolicy(1.0, 300.0).ceiling(n) for n in range(12)]
    assert ceilings[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert ceilings[9:] == [300, 300, 300]
    assert RetryPolicy(1.0, 300.0).ceiling(10_000) == 300  # no overflow


# --------------------------------------------------------------------------- delivery


async def test_delivers_one_document_per_request_with_contract_headers():
    shipper, store, transport, clock, metrics = make()
    store.add(sample_document("1.1", phase="complete"), key="pbx1:1.1:1")
    store.add(sample_document("1.2", phase="initial", revision=1), key="pbx1:1.2:1")
    clock.advance(5)

    sent = await shipper.ship_once(clock())

    assert sent == 2
    assert [it.state for it in store.items.values()] == ["delivered", "delivered"]
    assert len(transport.sent) == 2
    req = transport.sent[0]
    assert req.url == URL
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"] == "sipstack-connector-asterisk/0.14.0"
    assert {r.headers["Idempotency-Key"] for r in transport.sent} == {"pbx1:1.1:1", "pbx1:1.2:1"}
    body = json.loads(req.body)
    assert isinstance(body, dict)  # one object, never an array
    # shipped_at is stamped when sent, not when enqueued
    assert body["shipped_at"] == clock().isoformat(timespec="seconds")
    assert body["shipped_at"].endswith("+00:00")
    assert sample(metrics, "calls_shipped_total", {"phase": "complete"}) == 1
    assert sample(metrics, "calls_shipped_total", {"phase": "initial"}) == 1
    assert shipper.last_success_at == clock()
    # the pass's deliveries are recorded in one store call
    assert store.delivered_calls == [[1, 2]]


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_each_success_status_delivers(status):
    shipper, store, _t, clock, _ = make(transport=FakeTransport(statuses(status)))
    store.add(sample_document())
    await shipper.ship_once(clock())
    assert store.delivered() and not store.pending()


async def test_nothing_due_sends_nothing():
    shipper, store, transport, clock, _ = make()
    store.add(sample_document(), next_attempt_at=T0 + timedelta(seconds=60))
    assert await shipper.ship_once(clock()) == 0
    assert transport.sent == []
    assert store.due_calls[-1][2] == "call"  # asks only for call documents


async def test_concurrency_is_bounded_by_api_concurrency():
    transport = FakeTransport()
    transport.gate = asyncio.Event()
    shipper, store, _, clock, _ = make(transport=transport, concurrency=3)
    for i in range(10):
        store.add(sample_document(f"1.{i}"))

    task = asyncio.create_task(shipper.ship_once(clock()))
    while transport.in_flight < 3:
        await asyncio.sleep(0)
    for _ in range(20):  # give extra requests every chance to start
        await asyncio.sleep(0)
    assert transport.in_flight == 3
    transport.gate.set()
    assert await task == 10
    assert transport.max_in_flight == 3
    assert len(store.delivered()) == 10


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_retryable_status_schedules_a_retry_with_backoff(status):
    shipper, store, _t, clock, metrics = make(transport=FakeTransport(statuses(status)))
    item = store.add(sample_document(), attempts=3)

    await shipper.ship_once(clock())

    it = store.items[item.id]
    assert it.state == "pending"
    assert it.attempts == 4
    # attempt index 3 -> ceiling 1 * 2**3 = 8 s (TopRandom gives the ceiling)
    assert it.next_attempt_at == clock() + timedelta(seconds=8)
    assert f"HTTP {status}" in it.last_error
    assert retries(metrics, f"http_{status}") == 1
    assert shipper.last_error.startswith(f"HTTP {status}")


async def test_full_jitter_stays_within_zero_and_the_ceiling():
    rng = random.Random(1234)
    transport = FakeTransport(lambda req: Response(503, {}, ""))
    shipper, store, _, clock, _ = make(transport=transport, rng=rng, concurrency=50)
    items = [store.add(sample_document(f"2.{i}"), attempts=4) for i in range(50)]
    await shipper.ship_once(clock())
    delays = [(store.items[i.id].next_attempt_at - clock()).total_seconds() for i in items]
    assert all(0.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 40  # jittered, not one synchronized retry time


async def test_backoff_is_capped():
    transport = FakeTransport(lambda req: Response(500, {}, ""))
    shipper, store, _, clock, _ = make(transport=transport, backoff_initial=1.0, backoff_cap=300.0)
    item = store.add(sample_document(), attempts=25)
    await shipper.ship_once(clock())
    assert store.items[item.id].next_attempt_at == clock() + timedelta(seconds=300)


@pytest.mark.parametrize(
    "error",
    [TransportError("request timed out", timeout=True), TransportError("connection refused")],
)
async def test_transport_errors_are_retried(error):
    shipper, store, _t, clock, metrics = make(transport=FakeTransport(statuses(error)))
    item = store.add(sample_document())
    await shipper.ship_once(clock())
    it = store.items[item.id]
    assert it.state == "pending" and it.attempts == 1
    assert it.next_attempt_at == clock() + timedelta(seconds=1)  # attempt 0: ceiling 1 s
    assert retries(metrics, error.reason) == 1
    assert error.reason in shipper.last_error


async def test_retry_after_seconds_is_honoured():
    answer = Response(429, {"Retry-After": "120"}, "slow down")
    shipper, store, _, clock, _ = make(transport=FakeTransport(statuses(answer)))
    item = store.add(sample_document())
    await shipper.ship_once(clock())
    assert store.items[item.id].next_attempt_at == clock() + timedelta(seconds=120)
    assert shipper.paused_until == clock() + timedelta(seconds=120)


async def test_retry_after_http_date_is_honoured_case_insensitively():
    when = T0 + timedelta(minutes=4)  # within the 5 min backoff cap
    answer = Response(503, {"retry-after": format_datetime(when, usegmt=True)}, "")
    shipper, store, _, clock, _ = make(transport=FakeTransport(statuses(answer)))
    item = store.add(sample_document())
    await shipper.ship_once(clock())
    assert store.items[item.id].next_attempt_at == when


async def test_retry_horizon_needs_age_and_attempts():
    """48 h old AND retried as often as the schedule needs: dead. Old alone is not enough."""
    transport = FakeTransport(lambda req: Response(503, {}, "down"))
    shipper, store, _, clock, metrics = make(transport=transport, concurrency=8)
    n = shipper.policy.horizon_attempts
    old_created = T0 - timedelta(hours=48, seconds=1)
    old = store.add(sample_document("3.1"), created_at=old_created, attempts=n - 1)
    young = store.add(sample_document("3.2"), created_at=T0 - timedelta(hours=47), attempts=n - 1)
    untried = store.add(sample_document("3.3"), created_at=old_created, attempts=0)

    await shipper.ship_once(clock())

    assert store.items[old.id].state == "dead"
    status, body, reason = store.items[old.id].dead
    assert (status, reason) == (503, "retry_horizon")
    assert "503" in body
    assert store.items[young.id].state == "pending"
    assert store.items[untried.id].state == "pending"  # looks old (a clock step?), barely tried
    assert dead(metrics, "retry_horizon") == 1


async def test_wall_clock_step_of_72h_dead_letters_nothing():
    transport = FakeTransport(lambda req: Response(503, {}, "down"))
    shipper, store, _, clock, metrics = make(transport=transport, concurrency=8)
    items = [store.add(sample_document(f"4.{i}"), created_at=T0) for i in range(5)]
    await shipper.ship_once(clock())
    pause = shipper._pause_left()
    clock.step(72 * 3600)  # NTP steps the clock three days forward
    assert shipper._pause_left() == pause  # the circuit's pause is not shortened by the step
    assert await shipper.ship_once(clock()) == 0
    clock.advance(pause)
    shipper.consecutive_failures = 0  # full batch again: every item gets its attempt
    assert await shipper.ship_once(clock()) == 5
    assert [store.items[i.id].state for i in items] == ["pending"] * 5
    assert [store.items[i.id].attempts for i in items] == [2] * 5
    assert dead(metrics, "retry_horizon") == 0


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (-48 * 3600, "NTP steps the clock two days back (a VM restored from a snapshot)"),
        (-3600, "a step back of one hour (a wrong zone corrected)"),
        (-30, "a small step back"),
        (0, "no step"),
        (30, "a small step forward"),
        (72 * 3600, "three days forward (a VM resumed)"),
    ],
)
async def test_a_wall_clock_step_neither_delays_a_retry_nor_dead_letters(step, why):
    """Decided (issue 14): retry timing is the monotonic time elapsed, in either direction;
    the retry is sent once its backoff has passed, whatever the wall clock did meanwhile."""
    transport = FakeTransport(statuses(503, 202))
    shipper, store, _, clock, metrics = make(transport=transport, concurrency=1)
    item = store.add(sample_document(), created_at=T0)
    await shipper.ship_once(clock())
    wait = (store.items[item.id].next_attempt_at - T0).total_seconds()
    assert store.items[item.id].attempts == 1 and wait == 1.0  # TopRandom: the first ceiling
    clock.step(step)
    clock.advance(max(wait, shipper._pause_left()))
    assert await shipper.ship_once(clock()) == 1, why
    assert store.items[item.id].state == "delivered"
    assert dead(metrics, "retry_horizon") == 0


@pytest.mark.parametrize(
    ("wall_moves", "mono_moves", "reads"),
    [
        (10.0, 10.0, 10.0),  # no step: the wall clock
        (9.5, 10.0, 9.5),  # slewed half a second (within the tolerance): the wall clock
        (-3590.0, 10.0, 10.0),  # stepped an hour back: carries on from the last reading
        (3610.0, 10.0, 3610.0),  # stepped an hour forward: the wall clock
    ],
)
def test_step_free_clock_table(wall_moves, mono_moves, reads):
    wall, mono = [T0], [0.0]
    clock = StepFreeClock(lambda: wall[0], lambda: mono[0])
    assert clock() == T0
    wall[0] += timedelta(seconds=wall_moves)
    mono[0] += mono_moves
    assert clock() == T0 + timedelta(seconds=reads)


async def test_connection_errors_until_the_horizon_then_dead_letter():
    """Many passes of a dead API: the item retries with growing waits, then dies at 48 h."""
    transport = FakeTransport(lambda req: (_ for _ in ()).throw(TransportError("refused")))
    shipper, store, _, clock, _ = make(transport=transport)
    item = store.add(sample_document())
    waits = []
    for _ in range(2 * shipper.policy.horizon_attempts):
        it = store.items[item.id]
        if it.state != "pending":
            break
        clock.now = max(it.next_attempt_at, shipper.paused_until or it.next_attempt_at)
        before = clock()
        await shipper.ship_once(clock())
        waits.append((store.items[item.id].next_attempt_at - before).total_seconds())
    assert store.items[item.id].state == "dead"
    assert store.items[item.id].dead[2] == "retry_horizon"
    assert waits[:5] == [1, 2, 4, 8, 16]
    assert max(waits) == 300
    assert clock() >= T0 + timedelta(hours=48)
    assert store.items[item.id].attempts == shipper.policy.horizon_attempts - 1


# --------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
async def test_permanent_4xx_dead_letters_at_once_with_status_and_body(status):
    answer = Response(status, {}, '{"error":"call_time: not a date-time"}')
    shipper, store, _, clock, metrics = make(transport=FakeTransport(statuses(answer)))
    item = store.add(sample_document())
    await shipper.ship_once(clock())
    it = store.items[item.id]
    assert it.state == "dead"
    assert it.dead == (status, '{"error":"call_time: not a date-time"}', f"http_{status}")
    assert dead(metrics, f"http_{status}") == 1
    assert shipper.paused_until is None  # a definitive answer is not an outage


async def test_one_bad_document_does_not_hold_back_the_rest():
    def respond(req):
        doc = json.loads(req.body)
        return Response(400, {}, "bad") if doc["linkedid"] == "4.2" else Response(202, {}, "")

    shipper, store, _, clock, _ = make(transport=FakeTransport(respond))
    for i in range(5):
        store.add(sample_document(f"4.{i}"))
    await shipper.ship_once(clock())
    assert [it.call_key for it in store.dead()] == ["4.2"]
    assert len(store.delivered()) == 4
    assert shipper.consecutive_failures == 0


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_keeps_documents_raises_health_and_backs_off(status):
    transport = FakeTransport(lambda req: Response(status, {}, "bad key"))
    shipper, store, _, clock, metrics = make(transport=transport)
    for i in range(5):
        store.add(sample_document(f"5.{i}"))

    await shipper.ship_once(clock())
    assert shipper.auth_failed is True
    assert sample(metrics, "sipstack_api_auth_failed") == 1
    assert store.dead() == []  # a wrong key must not throw calls away
    assert all(it.attempts == 1 for it in store.pending())
    assert shipper.readiness_problems(clock())
    assert "API_KEY" in shipper.readiness_problems(clock())[0]

    # paused: no request before the pause ends, however often we are called
    n = len(transport.sent)
    assert shipper.paused_until is not None and shipper.paused_until > clock()
    for _ in range(10):
        assert await shipper.ship_once(clock()) == 0
    assert len(transport.sent) == n

    # after the pause: a single probe, not the whole outbox
    clock.now = shipper.paused_until + timedelta(seconds=400)
    assert await shipper.ship_once(clock()) == 1
    assert shipper.consecutive_failures == 2

    # key fixed (e.g. rotated upstream): the next 2xx clears the flag
    transport.responder = lambda req: Response(202, {}, "")
    clock.now = shipper.paused_until + timedelta(seconds=400)
    assert await shipper.ship_once(clock()) == 1
    assert shipper.auth_failed is False
    assert sample(metrics, "sipstack_api_auth_failed") == 0
    assert shipper.readiness_problems(clock()) == []
    # and full-rate shipping resumes
    clock.advance(600)
    assert await shipper.ship_once(clock()) == 4  # the 5 minus the delivered probe
    assert store.pending() == []


async def test_outage_opens_a_circuit_then_probes_with_one_document():
    transport = FakeTransport(lambda req: Response(503, {}, "maintenance"))
    shipper, store, _, clock, _ = make(transport=transport, concurrency=8)
    for i in range(20):
        store.add(sample_document(f"6.{i}"))
    assert await shipper.ship_once(clock()) == 20
    assert shipper.consecutive_failures == 1
    pauses = []
    for _ in range(4):
        assert await shipper.ship_once(clock()) == 0  # paused
        pauses.append((shipper.paused_until - clock()).total_seconds())
        clock.now = shipper.paused_until + timedelta(seconds=300)  # items due again too
        assert await shipper.ship_once(clock()) == 1  # one probe per pause
    assert pauses == [1, 2, 4, 8]  # the circuit's pause grows like the backoff
    transport.responder = lambda req: Response(202, {}, "")
    clock.now = shipper.paused_until + timedelta(seconds=300)
    assert await shipper.ship_once(clock()) == 1
    assert shipper.consecutive_failures == 0 and shipper.paused_until is None
    clock.advance(600)
    await shipper.ship_once(clock())
    assert store.pending() == []


# --------------------------------------------------------------------------- stats, readiness


async def test_refresh_stats_sets_outbox_gauges():
    shipper, store, _, clock, metrics = make()
    store.add(sample_document("7.1"), created_at=T0 - timedelta(seconds=90))
    store.add(sample_document("7.2"))
    store.add({"linkedid": "7.1", "file": "x.wav"}, kind="recording", key="rec")
    await shipper.refresh_stats(clock())
    assert sample(metrics, "sipstack_outbox_depth", {"kind": "call"}) == 2
    assert sample(metrics, "sipstack_outbox_depth", {"kind": "recording"}) == 1
    assert sample(metrics, "sipstack_oldest_undelivered_seconds") == 90
    assert shipper.outbox_depth == 2

    await shipper.ship_once(clock())
    await shipper.refresh_stats(clock())
    assert sample(metrics, "sipstack_outbox_depth", {"kind": "call"}) == 0
    assert sample(metrics, "sipstack_outbox_depth", {"kind": "recording"}) == 1


async def test_stats_are_read_less_often_when_counting_costs_more(monkeypatch):
    """The gauges' stats() run every stats_interval, or every 20 times what the last one
    took, whichever is longer: a deep outbox costs the store at most 5 % of its time."""
    shipper, store, _, _, _ = make()
    shipper.stats_interval = 1.0
    mono = [1000.0]
    calls: list[float] = []
    cost = [0.01]
    real_stats = store.stats

    async def stats(now):
        calls.append(mono[0])
        mono[0] += cost[0]  # the count takes this long
        return await real_stats(now)

    monkeypatch.setattr(store, "stats", stats)
    monkeypatch.setattr(outbox_mod.time, "monotonic", lambda: mono[0])

    async def tick(seconds: float) -> None:
        mono[0] += seconds
        await shipper._maybe_refresh_stats()

    for _ in range(10):
        await tick(0.5)  # cheap counts: once a second
    assert len(calls) == 5
    cost[0] = 0.5  # a deep outbox: every 10 s, not every second
    await tick(1.0)
    n = len(calls)
    for _ in range(18):
        await tick(0.5)
    assert len(calls) == n  # 9 s later: not yet
    await tick(1.0)
    assert len(calls) == n + 1


async def test_stuck_when_nothing_delivered_for_a_while_with_an_old_backlog():
    transport = FakeTransport(lambda req: Response(503, {}, ""))
    shipper, store, _, clock, _ = make(transport=transport)
    shipper.stuck_after = 600
    store.add(sample_document())
    await shipper.ship_once(clock())
    await shipper.refresh_stats(clock())
    assert shipper.stuck is False  # young backlog

    clock.advance(601)
    await shipper.refresh_stats(clock())
    assert shipper.stuck is True
    problems = shipper.readiness_problems(clock())
    assert len(problems) == 1 and "stuck" in problems[0] and "503" in problems[0]
    assert shipper.status()["stuck"] is True

    transport.responder = lambda req: Response(202, {}, "")
    shipper.paused_until = None
    await shipper.ship_once(clock())
    await shipper.refresh_stats(clock())
    assert shipper.stuck is False
    assert shipper.status()["last_success_at"] == clock().isoformat()


async def test_not_stuck_when_outbox_empty_even_without_any_success():
    shipper, _, _, clock, _ = make()
    clock.advance(3600)
    await shipper.refresh_stats(clock())
    assert shipper.stuck is False
    assert shipper.readiness_problems(clock()) == []


# --------------------------------------------------------------------------- secrets in logs


async def test_api_key_and_numbers_never_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="sipstack_agent")
    answers = [
        Response(401, {}, f"key {API_KEY} rejected"),
        Response(400, {}, f"src_number +15145550101 invalid for key {API_KEY}"),
        Response(503, {}, "down"),
        TransportError("refused"),
    ]
    shipper, store, _, clock, _ = make(transport=FakeTransport(statuses(*answers)), concurrency=1)
    for i in range(4):
        store.add(sample_document(f"8.{i}", src="+15145550101"))
    for _ in range(6):
        shipper.paused_until = None
        clock.advance(400)
        await shipper.ship_once(clock())
    run_stop = asyncio.Event()
    run_stop.set()
    await shipper.run(run_stop)  # start/stop log lines too

    assert store.dead()  # the 400 happened
    for rec in caplog.records:
        assert API_KEY not in rec.getMessage()
        if rec.levelno >= logging.INFO:
            assert "+15145550101" not in rec.getMessage()
    assert API_KEY not in (shipper.last_error or "")
    assert all(API_KEY not in (it.dead[1] if it.dead else "") for it in store.items.values())
    assert "sk_…C3d4" in caplog.text  # the redacted form is what operators see


# --------------------------------------------------------------------------- the loop


async def test_run_ships_until_stopped_and_wakes_on_notify():
    store = FakeStore()
    transport = FakeTransport()
    metrics = Metrics()
    api = ApiSettings(url=URL, api_key=API_KEY, concurrency=4)
    shipper = Shipper(store, transport, api, Identity(connector_id="pbx1"), metrics,
                      idle_interval=30.0)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(shipper.run(stop))
    await asyncio.sleep(0)
    for i in range(3):
        await store.enqueue("call", f"pbx1:9.{i}:1", sample_document(f"9.{i}"))
    shipper.notify()  # without it the loop would idle for 30 s
    async with asyncio.timeout(10):  # hang guard only
        while len(store.delivered()) < 3:
            await asyncio.sleep(0.01)
    stop.set()
    async with asyncio.timeout(10):
        await task
    assert len(transport.sent) == 3
    assert sample(metrics, "calls_shipped_total", {"phase": "complete"}) == 3
    assert sample(metrics, "sipstack_outbox_depth", {"kind": "call"}) == 0


async def test_run_survives_store_errors():
    class FlakyStore(FakeStore):
        fails = 2

        async def outbox_due(self, now, limit=100, kind=None):
            if self.fails:
                self.fails -= 1
                raise RuntimeError("database is locked")
            return await super().outbox_due(now, limit, kind)

    store = FlakyStore()
    store.add(sample_document())
    transport = FakeTransport()
    shipper = Shipper(store, transport, ApiSettings(url=URL, api_key=API_KEY),
                      Identity(), Metrics(), idle_interval=0.01)  # fmt: skip
    stop = asyncio.Event()

    async def stopper():
        while not store.delivered():
            await asyncio.sleep(0.01)
        stop.set()

    async with asyncio.timeout(20):  # hang guard only
        await asyncio.gather(shipper.run(stop), stopper())
    assert store.fails == 0
    assert len(store.delivered()) == 1
    assert shipper.last_success_at is not None


# --------------------------------------------------------------------------- payload encoding


async def test_unencodable_document_is_dead_lettered_and_the_rest_flows():
    shipper, store, transport, clock, metrics = make()
    bad = sample_document("10.1")
    bad["when"] = object()  # not JSON
    store.add(bad)
    store.add(sample_document("10.2"))
    assert await shipper.ship_once(clock()) == 2
    [dead_item] = store.dead()
    assert dead_item.call_key == "10.1"
    assert dead_item.dead[0] is None and dead_item.dead[2] == "invalid_payload"
    assert [json.loads(r.body)["linkedid"] for r in transport.sent] == ["10.2"]
    assert dead(metrics, "invalid_payload") == 1


async def test_lone_surrogates_from_undecodable_pbx_bytes_are_sent_as_escapes():
    shipper, store, transport, clock, _ = make()
    doc = sample_document("11.1")
    doc["src_name"] = b"Jos\xe9".decode("utf-8", "surrogateescape")
    store.add(doc)
    await shipper.ship_once(clock())
    [req] = transport.sent
    assert req.body.isascii()
    assert json.loads(req.body)["src_name"] == doc["src_name"]
    assert store.delivered()


async def test_payload_stored_as_json_text_is_accepted():
    shipper, store, transport, clock, _ = make()
    item = store.add(sample_document("12.1"))
    item.payload = json.dumps(sample_document("12.1"))  # a store that keeps TEXT
    await shipper.ship_once(clock())
    assert json.loads(transport.sent[0].body)["linkedid"] == "12.1"


async def test_a_pass_of_only_unencodable_documents_does_not_pause_shipping():
    shipper, store, transport, clock, _ = make()
    bad = sample_document("13.1")
    bad["x"] = {1, 2}  # a set is not JSON
    store.add(bad)
    await shipper.ship_once(clock())
    assert shipper.paused_until is None and shipper.consecutive_failures == 0
    store.add(sample_document("13.2"))
    assert await shipper.ship_once(clock()) == 1
    assert len(transport.sent) == 1


async def test_deliveries_the_store_could_not_mark_are_marked_before_anything_is_sent_again():
    """A full state disk refuses the pass's delivered marks: the accepted documents are
    never POSTed again meanwhile; the marks are retried first, then shipping goes on."""
    shipper, store, transport, clock, _ = make()
    for i in range(3):
        store.add(sample_document(f"1.{i}"), key=f"pbx1:1.{i}:1")
    real = store.outbox_delivered
    refusals = 2

    async def full_disk(item_id):
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise StateDiskFull("state disk full: database or disk is full")
        await real(item_id)

    store.outbox_delivered = full_disk
    with pytest.raises(StateDiskFull):
        await shipper.ship_once(clock())
    assert len(transport.sent) == 3 and len(store.pending()) == 3  # accepted, not marked
    with pytest.raises(StateDiskFull):  # still full: the marks again, nothing sent
        await shipper.ship_once(clock())
    assert len(transport.sent) == 3
    store.add(sample_document("2.0"), key="pbx1:2.0:1")
    assert await shipper.ship_once(clock()) == 1  # marked first, then only the new one
    assert store.delivered_calls == [[1, 2, 3], [4]]
    assert [r.headers["Idempotency-Key"] for r in transport.sent][3:] == ["pbx1:2.0:1"]
    assert not store.pending()


async def test_a_full_state_disk_pauses_the_shipper_with_one_warning(caplog):
    """run(): a refused mark is one WARNING and a pause of DISK_FULL_PAUSE, not a
    traceback and a new pass every second."""
    shipper, store, transport, _clock, _ = make()
    store.add(sample_document("1.1"), key="pbx1:1.1:1")

    attempts: list[list[int]] = []

    async def full_disk(item_id):
        attempts.append(list(item_id))
        raise StateDiskFull("state disk full: database or disk is full")

    store.outbox_delivered = full_disk
    waits: list[float] = []

    async def fake_wait(stop, wake, timeout):
        waits.append(timeout)
        if waits.count(outbox_mod.DISK_FULL_PAUSE) == 3:
            stop.set()

    stop = asyncio.Event()
    orig = outbox_mod._wait
    outbox_mod._wait = fake_wait
    try:
        with caplog.at_level(logging.WARNING, logger="sipstack_agent.shipping"):
            await asyncio.wait_for(shipper.run(stop), 5)
    finally:
        outbox_mod._wait = orig
    assert attempts == [[1], [1], [1]]  # each refused mark, then a pause before the next
    assert waits.count(outbox_mod.DISK_FULL_PAUSE) == 3
    assert len(transport.sent) == 1  # sent once, never again while unmarked
    warnings = [r for r in caplog.records if "not yet marked" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
    assert "1 documents delivered" in warnings[0].getMessage()


@pytest.mark.parametrize("retry_after", [None, "300"])
async def test_a_long_outage_probes_at_least_once_a_minute_unless_the_api_asks_for_longer(
    retry_after,
):
    """The circuit's own pause stops growing at PROBE_PAUSE_MAX (the first delivery after
    an outage within a minute of the API's return); a Retry-After still counts, up to
    the 5-minute cap."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    transport = FakeTransport(lambda req: Response(503, headers, "down"))
    shipper, store, _, clock, _ = make(transport=transport)  # TopRandom: the ceilings
    for i in range(3):
        store.add(sample_document(f"7.{i}"))
    pauses = []
    for _ in range(10):
        await shipper.ship_once(clock())
        pauses.append((shipper.paused_until - clock()).total_seconds())
        clock.now = shipper.paused_until + timedelta(seconds=600)  # items due again too
    if retry_after is None:
        assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
        assert outbox_mod.PROBE_PAUSE_MAX == 60
    else:
        assert pauses == [300] * 10
