"""Recording upload to the local receiver: bytes, retries, dead letters, deletion safety."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import ApiSettings, Identity, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import RecordingFile
from sipstack_agent.receiver.server import Receiver
from sipstack_agent.recording_queue import KIND, upload_payload
from sipstack_agent.recordings.manager import RecordingManager
from sipstack_agent.rules.api_urls import recording_url_for
from sipstack_agent.shipping import RecordingShipper
from sipstack_agent.shipping.client import AiohttpTransport, Response
from sipstack_agent.state import StateDiskFull, StateStore

from .helpers import (
    CALL_A,
    REAL_WAV,
    FakeClock,
    api_settings,
    copy_real_wav,
    fixture_cdrs,
    fixture_cels,
    recording_shipper,
    sample,
)

KEY = "sk_" + "k" * 32
IDENTITY = Identity(connector_id="pbx-test", version="0.14.0")


class ShiftClock:
    """Real UTC time plus an offset the test moves forward (retry timers).

    `monotonic()` moves with `advance()` (time passing) but not with `step()`
    (the wall clock jumping).
    """

    def __init__(self) -> None:
        self.offset = timedelta()
        self.elapsed = 0.0

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
        self.elapsed += seconds

    def step(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)

    def monotonic(self) -> float:
        return time.monotonic() + self.elapsed


def _api(url: str, **kw: Any) -> ApiSettings:
    base: dict[str, Any] = {
        "url": url,
        "recording_url": recording_url_for(url),
        "api_key": KEY,
        "backoff_initial": 0.5,
        "backoff_cap": 2.0,
    }
    base.update(kw)
    return ApiSettings(**base)


def _rset(root: Path, **kw: Any) -> RecordingSettings:
    base: dict[str, Any] = {
        "paths": (str(root),),
        "upload": True,
        "stability_check_count": 1,
        "stability_check_interval": 1.0,
    }
    base.update(kw)
    return RecordingSettings(**base)


async def _enqueue(store: StateStore, path: Path, linkedid: str = CALL_A) -> None:
    real = os.path.realpath(path)
    rec = RecordingFile(path.name, real, "filesystem", path.stat().st_size, uniqueid=linkedid)
    await store.add_recordings(linkedid, [rec])
    payload = upload_payload(
        rec,
        linkedid=linkedid,
        original_path=str(path),
        mtime_ns=path.stat().st_mtime_ns,
        call={"src_number": "4085551234", "dst_number": "4155551000", "direction": "i"},
    )
    await store.enqueue(KIND, f"pbx-test:recording:{linkedid}:{path.name}", payload, linkedid)


async def _drive(up: RecordingShipper, clock: ShiftClock, rounds: int = 12) -> None:
    """Run the queue to completion, moving the retry clock forward between rounds."""
    for _ in range(rounds):
        await up.drain()
        depth = await up.store.outbox_due(clock() + timedelta(days=30), 1, kind=KIND)  # type: ignore[attr-defined]
        if not depth:
            return
        clock.advance(5.0)


@pytest.fixture
async def receiver(tmp_path: Path):
    r = Receiver(tmp_path / "receiver.db", api_key=KEY, recordings_dir=tmp_path / "received")
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def transport():
    t = AiohttpTransport(timeout=10.0)
    try:
        yield t
    finally:
        await t.close()


async def test_manager_detects_and_uploads_the_real_wav_to_the_receiver(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    metrics = Metrics()
    fclock = FakeClock()
    api = _api(receiver.calls_url)
    up = recording_shipper(store, transport, _rset(root), api, IDENTITY, metrics)
    mgr = RecordingManager(
        _rset(root), store, metrics, identity=IDENTITY, on_queued=up.notify, clock=fclock
    )
    assert up.url == receiver.recording_url
    doc = {
        "src_number": "4085551234",
        "dst_number": "4155551000",
        "direction": "i",
        "duration_seconds": 17,
        "call_time": "2026-11-24T04:39:20+00:00",
        "tenant": "acme",
    }
    await mgr.on_call(CALL_A, fixture_cels(), fixture_cdrs(), complete=True, document=doc)
    for _ in range(3):
        await mgr.poll_once()
        fclock.advance(1.0)
    await up.drain()

    got = receiver.recordings()
    assert len(got) == 1
    r = got[0]
    assert r["file_name"] == REAL_WAV.name
    assert r["file_size"] == r["bytes_received"] == REAL_WAV.stat().st_size
    assert r["sha256"] == hashlib.sha256(REAL_WAV.read_bytes()).hexdigest()
    assert r["content_type"] == "audio/wav"
    assert r["linkedid"] == CALL_A and r["recording_id"] == CALL_A
    assert r["idempotency_key"] == f"pbx-test:recording:{CALL_A}:{REAL_WAV.name}"
    rec = await store.load_call(CALL_A)
    assert rec is not None and [x.uploaded for x in rec.recordings] == [True]
    assert sample(metrics, "sipstack_recordings_uploaded_total") == 1
    assert sample(metrics, "sipstack_recording_upload_bytes_total") == REAL_WAV.stat().st_size
    assert wav.exists()  # DELETE_RECORDINGS_AFTER_UPLOAD is off
    assert (await store.stats(datetime.now(UTC))).outbox_by_kind.get(KIND, 0) == 0


async def test_fields_in_contract_order_with_audio_last(tmp_path: Path, store: StateStore) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root, "call.WAV")
    seen: list[dict[str, Any]] = []

    class Capture:
        async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
            raise AssertionError

        async def post_multipart(
            self,
            url: str,
            fields: Sequence[tuple[str, str]],
            file_path: Any,
            file_field: str,
            content_type: str,
            headers: Mapping[str, str],
        ) -> Response:
            seen.append(
                {
                    "url": url,
                    "fields": list(fields),
                    "file_field": file_field,
                    "content_type": content_type,
                    "headers": dict(headers),
                    "file_path": str(file_path),
                }
            )
            return Response(201)

    await _enqueue(store, wav)
    up = recording_shipper(
        store, Capture(), _rset(root), api_settings(KEY, REGION="ca1"), IDENTITY, Metrics()
    )
    await up.drain()
    assert len(seen) == 1
    call = seen[0]
    assert call["url"] == "https://api-ca1.sipstack.com/v1/mqs/recording"
    assert [k for k, _ in call["fields"]] == [
        "recording_id",
        "linkedid",
        "call_id",
        "src_number",
        "dst_number",
        "direction",
        "duration",
        "start_time",
        "tenant_name",
        "file_name",
        "file_size",
        "original_file_path",
    ]
    assert dict(call["fields"])["file_size"] == str(wav.stat().st_size)
    assert call["file_field"] == "audio" and call["content_type"] == "audio/wav"
    assert call["headers"]["Authorization"] == f"Bearer {KEY}"
    assert call["headers"]["Idempotency-Key"] == f"pbx-test:recording:{CALL_A}:call.WAV"
    assert "Content-Type" not in call["headers"]  # the transport sets the multipart boundary


async def test_delete_after_upload_only_after_2xx_and_only_inside(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    ok = copy_real_wav(root / "2026" / "11" / "24", "in-1-2-20261124-043920-1795495160.0.wav")
    outside = copy_real_wav(tmp_path / "elsewhere", "in-1-2-20261124-043920-1795495160.5.wav")
    await _enqueue(store, ok)
    await _enqueue(store, outside, linkedid="1795495160.5")  # a poisoned queue item
    metrics = Metrics()
    up = recording_shipper(
        store,
        transport,
        _rset(root, delete_after_upload=True),
        _api(receiver.calls_url),
        IDENTITY,
        metrics,
    )
    await up.drain()
    assert not ok.exists()  # uploaded (2xx), inside the tree: deleted
    assert outside.exists()  # never uploaded, never deleted
    assert [r["file_name"] for r in receiver.recordings()] == [ok.name]
    dead = await store.dead_letters()
    assert [(d["reason"], d["call_key"]) for d in dead] == [("path_refused", "1795495160.5")]
    assert sample(metrics, "sipstack_recording_paths_refused_total") == 1
    assert (
        sample(metrics, "sipstack_recording_upload_failures_total", {"reason": "path_refused"}) == 1
    )


async def test_permanent_4xx_goes_to_dead_letter_and_keeps_the_file(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    await _enqueue(store, wav)
    receiver.set_faults(fail_status=413, fail_count=1, fail_path="recording", body="too big")
    metrics = Metrics()
    up = recording_shipper(
        store,
        transport,
        _rset(root, delete_after_upload=True),
        _api(receiver.calls_url),
        IDENTITY,
        metrics,
    )
    await up.drain()
    dead = await store.dead_letters()
    assert [(d["reason"], d["status"], d["body"]) for d in dead] == [("http_413", 413, "too big")]
    assert wav.exists()
    assert receiver.recordings() == []
    assert sample(metrics, "sipstack_recording_upload_failures_total", {"reason": "http_413"}) == 1
    assert sample(metrics, "sipstack_dead_letters_total", {"kind": KIND, "reason": "http_413"}) == 1
    rec = await store.load_call(CALL_A)
    assert rec is not None and [r.uploaded for r in rec.recordings] == [False]


async def test_5xx_and_429_are_retried_with_backoff_then_delivered(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    await _enqueue(store, wav)
    receiver.set_faults(fail_status=503, fail_count=2, fail_path="recording")
    metrics = Metrics()
    clock = ShiftClock()
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        _api(receiver.calls_url, backoff_cap=300.0),
        IDENTITY,
        metrics,
        clock=clock,
        monotonic=clock.monotonic,
        rng=random.Random(7),
    )
    await up.drain()
    items = await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)
    assert len(items) == 1 and items[0].attempts == 1 and "503" in items[0].last_error
    assert items[0].next_attempt_at > clock()  # backoff: not due at once
    await _drive(up, clock)
    assert len(receiver.recordings()) == 1
    assert sample(metrics, "sipstack_recording_upload_failures_total", {"reason": "http_503"}) == 2
    assert sample(metrics, "sipstack_recordings_uploaded_total") == 1

    # 429 with Retry-After: the next attempt is not before the hint
    wav2 = copy_real_wav(root, "second-1795495160.9.wav")
    await _enqueue(store, wav2, linkedid="1795495160.9")
    receiver.set_faults(fail_status=429, fail_count=1, retry_after=120, fail_path="recording")
    await up.drain()
    items = await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)
    assert len(items) == 1
    assert items[0].next_attempt_at >= clock() + timedelta(seconds=119)
    assert up.paused_until is not None
    await _drive(up, clock, rounds=3)
    assert await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)  # still waiting
    clock.advance(120)
    await _drive(up, clock)
    assert len(receiver.recordings()) == 2


async def test_receiver_down_then_restarted_on_the_same_port(
    tmp_path: Path, store: StateStore, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    await _enqueue(store, wav)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/mqs/connectors/asterisk/calls"
    metrics = Metrics()
    clock = ShiftClock()
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        _api(url),
        IDENTITY,
        metrics,
        clock=clock,
        monotonic=clock.monotonic,
    )
    await up.drain()  # nobody listening
    assert (
        sample(metrics, "sipstack_recording_upload_failures_total", {"reason": "connection"}) == 1
    )
    assert receiver_count(await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)) == 1

    first = Receiver(tmp_path / "r1.db", api_key=KEY, recordings_dir=tmp_path / "r1")
    await first.start(port=port)
    first.set_faults(drop=True, fail_count=1, fail_path="recording")  # connection cut mid-request
    clock.advance(5)
    await up.drain()
    assert first.recordings() == []
    await first.stop()

    second = Receiver(tmp_path / "r2.db", api_key=KEY, recordings_dir=tmp_path / "r2")
    await second.start(port=port)
    try:
        await _drive(up, clock)
        got = second.recordings()
        assert len(got) == 1 and got[0]["bytes_received"] == wav.stat().st_size
    finally:
        await second.stop()
    assert sample(metrics, "sipstack_recordings_uploaded_total") == 1


def receiver_count(items: Sequence[Any]) -> int:
    return len(items)


async def test_retry_horizon_dead_letters_after_age_and_attempts(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    await _enqueue(store, copy_real_wav(root))
    receiver.set_faults(fail_status=500, fail_path="recording")
    clock = ShiftClock()
    api = _api(receiver.calls_url, retry_horizon=60.0, backoff_initial=0.5, backoff_cap=30.0)
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        api,
        IDENTITY,
        Metrics(),
        clock=clock,
        monotonic=clock.monotonic,
    )
    await up.drain()
    clock.step(72 * 3600)  # the wall clock jumps three days: not a reason to give up
    await up.drain()
    assert not await store.dead_letters()
    failures = 2
    while not await store.dead_letters():
        clock.advance(30)
        await up.drain()
        failures += 1
        assert failures <= up.policy.horizon_attempts
    assert failures == up.policy.horizon_attempts
    assert [d["reason"] for d in await store.dead_letters()] == ["retry_horizon"]


@pytest.mark.parametrize("step", [-48 * 3600, -3600, 0, 72 * 3600])
async def test_a_wall_clock_step_neither_delays_nor_gives_up_an_upload(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport, step: int
) -> None:
    """The call shipper's rule (shipping/retry.py): the retry is due after its backoff of
    monotonic time, whatever the wall clock did meanwhile."""
    root = tmp_path / "monitor"
    await _enqueue(store, copy_real_wav(root))
    receiver.set_faults(fail_status=503, fail_count=1, fail_path="recording")
    clock = ShiftClock()
    api = _api(receiver.calls_url, backoff_initial=1.0, backoff_cap=2.0)
    up = recording_shipper(
        store, transport, _rset(root), api, IDENTITY, Metrics(), clock=clock,
        monotonic=clock.monotonic,
    )  # fmt: skip
    await up.drain()
    assert receiver.recordings() == []
    clock.step(step)
    clock.advance(1.0)  # the first backoff ceiling
    await up.drain()
    assert len(receiver.recordings()) == 1
    assert not await store.dead_letters()


@pytest.mark.parametrize("retry_after", ["172800", "inf", "1e12", "86400000", "soon"])
async def test_a_huge_or_garbage_retry_after_neither_gives_up_nor_parks_the_upload(
    tmp_path: Path,
    store: StateStore,
    receiver: Receiver,
    transport: AiohttpTransport,
    retry_after: str,
) -> None:
    root = tmp_path / "monitor"
    await _enqueue(store, copy_real_wav(root))
    receiver.set_faults(
        fail_status=429, fail_count=1, retry_after=retry_after, fail_path="recording"
    )
    clock = ShiftClock()
    api = _api(receiver.calls_url, backoff_cap=30.0)
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        api,
        IDENTITY,
        Metrics(),
        clock=clock,
        monotonic=clock.monotonic,
    )
    await up.drain()
    assert not await store.dead_letters()
    items = await store.outbox_due(clock() + timedelta(days=30), 5, kind=KIND)
    assert len(items) == 1 and items[0].attempts == 1
    assert items[0].next_attempt_at <= clock() + timedelta(seconds=30)
    assert up.paused_until is None or up.paused_until <= clock() + timedelta(seconds=30)
    clock.advance(30)
    await _drive(up, clock)
    assert len(receiver.recordings()) == 1


async def test_file_changed_during_upload_is_not_deleted(tmp_path: Path, store: StateStore) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    await _enqueue(store, wav)

    class Appender:
        async def post_json(self, *a: Any) -> Response:
            raise AssertionError

        async def post_multipart(self, url: str, fields: Any, file_path: Any, *a: Any) -> Response:
            with open(file_path, "ab") as fh:  # the PBX wrote more meanwhile
                fh.write(b"late bytes")
            return Response(202)

    up = recording_shipper(
        store,
        Appender(),
        _rset(root, delete_after_upload=True),
        ApiSettings(api_key=KEY),
        IDENTITY,
        Metrics(),
    )
    await up.drain()
    assert wav.exists() and up.deleted_total == 0


async def test_vanished_file_is_dead_lettered(tmp_path: Path, store: StateStore) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    await _enqueue(store, wav)
    wav.unlink()
    metrics = Metrics()
    up = recording_shipper(
        store,
        object(),
        _rset(root),
        ApiSettings(api_key=KEY),  # type: ignore[arg-type]
        IDENTITY,
        metrics,
    )
    await up.drain()
    assert [d["reason"] for d in await store.dead_letters()] == ["file_missing"]


async def test_run_respects_concurrency_and_stops(tmp_path: Path, store: StateStore) -> None:
    root = tmp_path / "monitor"
    for i in range(6):
        await _enqueue(store, copy_real_wav(root, f"r-1795495160.{i}.wav"), f"1795495160.{i}")
    active = 0
    peak = 0
    done = asyncio.Event()
    sent = 0

    class Slow:
        async def post_json(self, *a: Any) -> Response:
            raise AssertionError

        async def post_multipart(self, *a: Any) -> Response:
            nonlocal active, peak, sent
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            sent += 1
            if sent == 6:
                done.set()
            return Response(200)

    up = recording_shipper(
        store,
        Slow(),
        _rset(root, upload_concurrency=2),
        ApiSettings(api_key=KEY),
        IDENTITY,
        Metrics(),
        idle_interval=0.01,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(up.run(stop))
    await asyncio.wait_for(done.wait(), 20)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert sent == 6 and peak == 2


async def test_rejected_key_keeps_the_upload_queued(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    root = tmp_path / "monitor"
    await _enqueue(store, copy_real_wav(root))
    metrics = Metrics()
    clock = ShiftClock()
    wrong = _api(receiver.calls_url, api_key="sk_" + "w" * 32)
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        wrong,
        IDENTITY,
        metrics,
        clock=clock,
        monotonic=clock.monotonic,
    )
    await up.drain()
    assert up.auth_failed
    assert not await store.dead_letters()
    assert len(await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)) == 1
    assert sample(metrics, "sipstack_recording_upload_failures_total", {"reason": "auth"}) == 1
    # the key is fixed (new settings, same queue): delivered
    up2 = recording_shipper(
        store,
        transport,
        _rset(root),
        _api(receiver.calls_url),
        IDENTITY,
        metrics,
        clock=clock,
        monotonic=clock.monotonic,
    )
    await _drive(up2, clock)
    assert len(receiver.recordings()) == 1 and not up2.auth_failed


async def test_one_uploads_failure_is_logged_and_does_not_stop_the_others(
    tmp_path: Path,
    store: StateStore,
    receiver: Receiver,
    transport: AiohttpTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "monitor"
    await _enqueue(store, copy_real_wav(root, "a-1795495160.1.wav"), linkedid="1795495160.1")
    await _enqueue(store, copy_real_wav(root, "b-1795495160.2.wav"), linkedid="1795495160.2")
    first = (await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 1, kind=KIND))[0].id
    real_delivered = store.outbox_delivered

    async def broken_for_first(item_id: Any) -> None:
        if item_id == first:
            raise OSError("disk I/O error")
        await real_delivered(item_id)

    store.outbox_delivered = broken_for_first  # type: ignore[method-assign]
    clock = ShiftClock()
    up = recording_shipper(
        store,
        transport,
        _rset(root),
        _api(receiver.calls_url),
        IDENTITY,
        Metrics(),
        clock=clock,
        monotonic=clock.monotonic,
    )
    await up.fill()
    await asyncio.gather(*up._inflight.values(), return_exceptions=True)
    await asyncio.sleep(0)  # the done callbacks
    left = await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)
    assert [i.id for i in left] == [first]  # the other upload was recorded
    assert "disk I/O error" in (up.last_error or "")
    assert any("failed: disk I/O error" in r.getMessage() for r in caplog.records)
    store.outbox_delivered = real_delivered  # type: ignore[method-assign]
    await _drive(up, clock)
    assert not await store.outbox_due(clock() + timedelta(days=1), 5, kind=KIND)
    assert len(receiver.recordings()) == 2


async def test_an_upload_the_store_could_not_record_is_recorded_first_and_never_sent_again(
    tmp_path: Path, store: StateStore, receiver: Receiver, transport: AiohttpTransport
) -> None:
    """The API took the file but the state disk refused the delivered mark: the upload
    is recorded (outbox row gone, recording marked uploaded) before anything else is
    uploaded, and the file is not POSTed again meanwhile."""
    root = tmp_path / "monitor"
    first = copy_real_wav(root, "in-1-2-20261124-043920-1795495160.0.wav")
    second = copy_real_wav(root, "in-1-2-20261124-043920-1795495161.0.wav")
    await _enqueue(store, first)
    up = recording_shipper(
        store, transport, _rset(root), _api(receiver.calls_url), IDENTITY, Metrics()
    )
    real = store.outbox_delivered
    refusals = 2

    async def full_disk(item_id: Any) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise StateDiskFull("state disk full: database or disk is full")
        await real(item_id)

    store.outbox_delivered = full_disk  # type: ignore[method-assign]
    assert await up.fill() == 1
    await asyncio.gather(*up._inflight.values(), return_exceptions=True)
    assert len(receiver.recordings()) == 1 and up.uploaded_total == 0
    await _enqueue(store, second, linkedid="1795495161.0")
    with pytest.raises(StateDiskFull):  # still refused: nothing new starts
        await up.fill()
    assert not up._inflight and len(receiver.recordings()) == 1
    assert await up.fill() == 1  # recorded first, then the next upload
    await asyncio.gather(*up._inflight.values(), return_exceptions=True)
    names = [r["file_name"] for r in receiver.recordings()]
    assert names == [first.name, second.name]
    assert receiver.stats()["recording_requests"] == 2  # each sent once
    assert up.uploaded_total == 2
    (rec,) = (await store.load_call(CALL_A)).recordings  # type: ignore[union-attr]
    assert rec.uploaded
    assert await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 10, kind=KIND) == []
