"""AiohttpTransport against the real Receiver on 127.0.0.1 (random port)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from datetime import UTC, datetime

import psutil
import pytest
from sipstack_agent.config import ApiSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.receiver import Receiver
from sipstack_agent.shipping import (
    AiohttpTransport,
    Shipper,
    TransportError,
    audio_content_type,
    build_headers,
)

from .shipping_fakes import FakeStore, sample_document

API_KEY = "sk_" + "x" * 32


@pytest.fixture
async def receiver(tmp_path):
    r = Receiver(tmp_path / "receiver.sqlite")
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


@pytest.fixture
async def transport():
    t = AiohttpTransport(timeout=5.0, limit=4)
    yield t
    await t.close()


def headers(key: str = "pbx1:1.1:1") -> dict[str, str]:
    return build_headers(API_KEY, idempotency_key=key)


def body(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_post_json_accepted_then_replay_is_a_duplicate(receiver, transport):
    doc = sample_document("1.1")
    r1 = await transport.post_json(receiver.calls_url, body(doc), headers())
    r2 = await transport.post_json(receiver.calls_url, body(doc), headers())
    assert (r1.status, r2.status) == (202, 200)
    assert json.loads(r1.text) == {"status": "accepted"}
    assert json.loads(r2.text) == {"status": "duplicate"}
    assert r1.header("content-type").startswith("application/json")
    assert receiver.count_documents() == 1
    assert receiver.docs_for("1.1")[0]["linkedid"] == "1.1"


async def test_error_statuses_come_back_as_responses(receiver, transport):
    bad = sample_document("1.2")
    del bad["call_time"]
    r = await transport.post_json(receiver.calls_url, body(bad), headers("k2"))
    assert r.status == 400
    assert "call_time" in r.text
    r = await transport.post_json(
        receiver.calls_url, body(sample_document("1.3")), build_headers("nope")
    )
    assert r.status == 401


async def test_keep_alive_reuses_one_connection(receiver, transport):
    for i in range(20):
        r = await transport.post_json(
            receiver.calls_url, body(sample_document(f"2.{i}")), headers(f"pbx1:2.{i}:1")
        )
        assert r.status == 202
    assert receiver.count_documents() == 20
    assert len(receiver.connections) == 1


async def test_concurrent_requests_stay_within_the_pool_limit(receiver):
    t = AiohttpTransport(timeout=5.0, limit=3)
    try:
        results = await asyncio.gather(
            *(
                t.post_json(
                    receiver.calls_url, body(sample_document(f"3.{i}")), headers(f"pbx1:3.{i}:1")
                )
                for i in range(30)
            )
        )
    finally:
        await t.close()
    assert {r.status for r in results} == {202}
    assert receiver.count_documents() == 30
    assert 1 <= len(receiver.connections) <= 3


async def test_timeout_raises_transport_error(receiver):
    receiver.set_faults(delay=3.0, fail_count=1)
    t = AiohttpTransport(timeout=0.3)
    try:
        with pytest.raises(TransportError) as ei:
            await t.post_json(receiver.calls_url, body(sample_document()), headers())
    finally:
        await t.close()
    assert ei.value.timeout is True
    assert ei.value.reason == "timeout"


async def test_connection_refused_raises_transport_error(transport):
    url = f"http://127.0.0.1:{free_port()}/v1/mqs/connectors/asterisk/calls"
    with pytest.raises(TransportError) as ei:
        await transport.post_json(url, b"{}", headers())
    assert ei.value.timeout is False
    assert ei.value.reason == "connection"


async def test_dropped_connection_is_retried_once_on_a_fresh_one(receiver, transport):
    # warm the pool so the drop hits a reused keep-alive connection
    r = await transport.post_json(receiver.calls_url, body(sample_document("4.0")), headers("a"))
    assert r.status == 202
    receiver.set_faults(drop=True, fail_count=1)
    r = await transport.post_json(receiver.calls_url, body(sample_document("4.1")), headers("b"))
    assert r.status == 202
    assert receiver.stats()["injected_drop"] == 1
    # dropped every time: the caller gets a TransportError, not a hang
    receiver.set_faults(drop=True)
    with pytest.raises(TransportError):
        await transport.post_json(receiver.calls_url, body(sample_document("4.2")), headers("c"))


async def test_no_redirect_following(transport):
    from aiohttp import web

    async def redirect(request):
        raise web.HTTPMovedPermanently("https://elsewhere.invalid/")

    app = web.Application()
    app.router.add_post("/calls", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        r = await transport.post_json(f"http://127.0.0.1:{port}/calls", b"{}", headers())
    finally:
        await runner.cleanup()
    assert r.status == 301  # surfaced, never turned into a GET elsewhere


def recording_fields(path, linkedid="5.1", size=None):
    size = os.path.getsize(path) if size is None else size
    return [
        ("recording_id", "5.1"),
        ("linkedid", linkedid),
        ("call_id", "5.1"),
        ("src_number", "+15145550101"),
        ("dst_number", "201"),
        ("direction", "i"),
        ("duration", "40"),
        ("start_time", "2026-01-15T11:59:00+00:00"),
        ("tenant_name", ""),
        ("file_name", os.path.basename(path)),
        ("file_size", str(size)),
        ("original_file_path", str(path)),
    ]


async def test_multipart_upload_stores_the_exact_bytes(receiver, transport, tmp_path):
    audio = tmp_path / "out-201-5.1.wav"
    data = os.urandom(300_000)
    audio.write_bytes(data)
    r = await transport.post_multipart(
        receiver.recording_url,
        recording_fields(audio),
        audio,
        "audio",
        audio_content_type(audio),
        build_headers(API_KEY, content_type=None, idempotency_key="pbx1:rec:5.1"),
    )
    assert r.status == 202, r.text
    [rec] = receiver.recordings()
    assert rec["bytes_received"] == rec["file_size"] == len(data)
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["content_type"] == "audio/wav"
    assert rec["fields"]["linkedid"] == "5.1"
    # every text field arrived, in the order sent, before the audio part
    assert list(rec["fields"]) == [name for name, _ in recording_fields(audio)]
    with open(rec["stored_path"], "rb") as f:
        assert f.read() == data


async def test_multipart_size_mismatch_is_rejected(receiver, transport, tmp_path):
    audio = tmp_path / "short.mp3"
    audio.write_bytes(b"ID3" + b"\0" * 1000)
    r = await transport.post_multipart(
        receiver.recording_url,
        recording_fields(audio, size=5000),
        audio,
        "audio",
        audio_content_type(audio),
        build_headers(API_KEY, content_type=None),
    )
    assert r.status == 400
    assert "file_size mismatch" in r.text
    assert receiver.recordings() == []


async def test_multipart_missing_file_raises_oserror(transport, tmp_path):
    with pytest.raises(OSError):
        await transport.post_multipart(
            "http://127.0.0.1:9/x", [], tmp_path / "gone.wav", "audio", "audio/wav", {}
        )


async def test_multipart_streams_a_200mb_file_with_bounded_memory(receiver, tmp_path):
    """A 200 MB upload must not be read into memory (client nor receiver side)."""
    size = 200 * 1024 * 1024
    audio = tmp_path / "big.wav"
    with open(audio, "wb") as f:  # sparse: costs no disk until written by the receiver
        f.write(b"RIFF")
        f.seek(size - 1)
        f.write(b"\0")
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = before
    done = asyncio.Event()

    async def sample_rss():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_rss())
    t = AiohttpTransport(timeout=60.0)
    try:
        r = await t.post_multipart(
            receiver.recording_url,
            recording_fields(audio),
            audio,
            "audio",
            "audio/wav",
            build_headers(API_KEY, content_type=None),
        )
    finally:
        done.set()
        await sampler
        await t.close()
    assert r.status == 202, r.text
    [rec] = receiver.recordings()
    assert rec["bytes_received"] == size
    growth_mb = (peak - before) / 2**20
    print(f"RSS growth during a 200 MB upload: {growth_mb:.1f} MB")
    assert growth_mb < 60, f"RSS grew by {growth_mb:.0f} MB during a 200 MB upload"
    os.unlink(rec["stored_path"])


async def test_shipper_with_real_transport_and_receiver_end_to_end(receiver):
    store = FakeStore()
    now = datetime.now(UTC)
    for i in range(50):
        store.add(sample_document(f"6.{i}"), key=f"pbx1:6.{i}:1", created_at=now)
    bad = sample_document("6.bad")
    bad["direction"] = "sideways"
    store.add(bad, key="pbx1:6.bad:1", created_at=now)
    receiver.set_faults(fail_status=503, fail_count=3, retry_after="0", fail_path="calls")
    api = ApiSettings(url=receiver.calls_url, api_key=API_KEY, concurrency=4, backoff_cap=0.05)
    metrics = Metrics()
    async with AiohttpTransport.from_settings(api) as t:
        shipper = Shipper(store, t, api, Identity(connector_id="pbx1"), metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        async with asyncio.timeout(30):  # hang guard only
            while store.pending():
                await asyncio.sleep(0.02)
        stop.set()
        await task
    assert receiver.count_unique_calls() == 50
    assert receiver.count_documents() == 50
    assert [it.call_key for it in store.dead()] == ["6.bad"]
    assert store.dead()[0].dead[0] == 400
    assert receiver.stats()["injected_503"] == 3
    assert metrics.registry.get_sample_value("calls_shipped_total", {"phase": "complete"}) == 50


async def test_proxy_environment_is_read_once_at_start_up(receiver, monkeypatch):
    """HTTP_PROXY is honoured (the receiver answers absolute-form requests, so it can
    stand in as the proxy of a URL nothing listens on), NO_PROXY too, and the
    environment is not looked up again per request."""
    dead = f"http://127.0.0.1:{free_port()}/v1/mqs/connectors/asterisk/calls"
    monkeypatch.setenv("HTTP_PROXY", receiver.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = AiohttpTransport(timeout=5.0, limit=2)
    try:
        r = await t.post_json(dead, body(sample_document("9.1")), headers("pbx1:9.1:1"))
        assert r.status == 202
        monkeypatch.delenv("HTTP_PROXY")  # read at start-up: still proxied
        r = await t.post_json(dead, body(sample_document("9.2")), headers("pbx1:9.2:1"))
        assert r.status == 202
        assert {c["linkedid"] for c in receiver.receipts()} >= {"9.1", "9.2"}
    finally:
        await t.close()

    monkeypatch.setenv("HTTP_PROXY", receiver.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    t = AiohttpTransport(timeout=5.0, limit=2)
    try:
        with pytest.raises(TransportError):  # direct: nothing listens there
            await t.post_json(dead, body(sample_document("9.3")), headers("pbx1:9.3:1"))
    finally:
        await t.close()
