"""The Shipper against the real StateStore outbox, the real transport and the receiver."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sipstack_agent.config import ApiSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.receiver import Receiver
from sipstack_agent.shipping import AiohttpTransport, Shipper
from sipstack_agent.state import StateStore

from .shipping_fakes import sample_document

API_KEY = "sk_" + "s" * 32


@pytest.fixture
async def store(tmp_path):
    s = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    yield s
    await s.close()


@pytest.fixture
async def receiver(tmp_path):
    r = Receiver(tmp_path / "rx.sqlite", api_key=API_KEY)
    await r.start()
    yield r
    await r.stop()


async def test_outbox_drains_to_the_receiver_and_a_bad_document_is_dead_lettered(store, receiver):
    for i in range(40):
        doc = sample_document(f"40.{i}")
        await store.enqueue("call", f"pbx1:40.{i}:1", doc, f"40.{i}")
    bad = sample_document("40.bad")
    bad["customer_id"] = "seven"
    await store.enqueue("call", "pbx1:40.bad:1", bad, "40.bad")
    receiver.set_faults(fail_status=503, fail_count=2, retry_after="0")

    api = ApiSettings(url=receiver.calls_url, api_key=API_KEY, concurrency=4, backoff_cap=0.05)
    metrics = Metrics()
    async with AiohttpTransport.from_settings(api) as transport:
        shipper = Shipper(store, transport, api, Identity(connector_id="pbx1"), metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        async with asyncio.timeout(30):  # hang guard only
            while (await store.stats(datetime.now(UTC))).outbox_depth:
                await asyncio.sleep(0.02)
        stop.set()
        await task

    assert receiver.count_unique_calls() == 40
    assert receiver.count_documents() == 40
    [dead] = await store.dead_letters()
    assert dead["idempotency_key"] == "pbx1:40.bad:1"
    assert dead["status"] == 400
    assert dead["reason"] == "http_400"
    assert "customer_id" in dead["body"]
    assert dead["payload"]["linkedid"] == "40.bad"
    stats = await store.stats(datetime.now(UTC))
    assert stats.outbox_depth == 0 and stats.dead_letters == 1
    assert metrics.registry.get_sample_value("sipstack_dead_letters_stored") == 1
    assert metrics.registry.get_sample_value("sipstack_outbox_depth", {"kind": "call"}) == 0


async def test_retry_state_is_persisted_in_the_store(store):
    class Down:
        async def post_json(self, url, body, headers):
            from sipstack_agent.shipping import Response

            return Response(503, {"Retry-After": "60"}, "maintenance")

        async def post_multipart(self, *a, **kw):
            raise NotImplementedError

    now = datetime.now(UTC)
    await store.enqueue("call", "pbx1:41.1:1", sample_document("41.1"), "41.1", now=now)
    shipper = Shipper(
        store,
        Down(),
        ApiSettings(url="http://unused.invalid/calls", api_key=API_KEY),
        Identity(),
        Metrics(),
        clock=lambda: now,
        monotonic=lambda: 0.0,  # time stands still on both clocks
    )
    assert await shipper.ship_once(now) == 1
    assert await store.outbox_due(now + timedelta(seconds=59), 10, kind="call") == []
    [item] = await store.outbox_due(now + timedelta(seconds=60), 10, kind="call")
    assert item.attempts == 1
    assert "503" in item.last_error


async def test_a_stored_row_is_shipped_as_its_text_with_shipped_at_spliced(store, monkeypatch):
    from sipstack_agent.shipping import outbox

    from .shipping_fakes import FakeTransport

    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    content = sample_document("42.1", revision=3)
    # the evaluator's row form: the volatile keys first (calls.document.outbox_text)
    doc = {k: content.pop(k) for k in ("revision", "ship_phase", "shipped_at")} | content
    doc["src_name"] = "José"
    await store.enqueue("call", "pbx1:42.1:3", doc, "42.1", now=now)
    [item] = await store.outbox_due(now, 10, kind="call")
    assert item.payload == doc  # parsed on demand
    row = item.payload_text

    def no_parse(*a, **kw):
        raise AssertionError("the shipper parsed a row it can splice")

    monkeypatch.setattr(outbox.json, "loads", no_parse)
    transport = FakeTransport()
    shipper = Shipper(
        store,
        transport,
        ApiSettings(url="http://unused.invalid/calls", api_key=API_KEY),
        Identity(connector_id="pbx1"),
        Metrics(),
        clock=lambda: now,
    )
    assert await shipper.ship_once(now) == 1
    [req] = transport.sent
    old = '"shipped_at":' + json.dumps(doc["shipped_at"])
    assert row.count(old) == 1
    assert req.body == row.replace(old, '"shipped_at":"2026-12-01T09:00:00+00:00"').encode()
    assert (await store.stats(now)).outbox_depth == 0
