"""The monitoring endpoints, with providers passed in (no stage imported)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sipstack_agent.health import HealthServer, combine_checks
from sipstack_agent.metrics import Metrics


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def get(http, url):
    async with http.get(url) as resp:
        ctype = resp.headers.get("Content-Type", "")
        body = await resp.json() if "json" in ctype else await resp.text()
        return resp.status, ctype, body


async def test_metrics_endpoint_serves_the_agents_registry(http):
    metrics = Metrics()
    metrics.calls_shipped.labels("complete").inc(3)
    metrics.outbox_depth.labels("call").set(7)
    metrics.api_auth_failed.set(1)
    async with HealthServer(metrics) as hs:
        url = await hs.start("127.0.0.1", 0)
        status, ctype, text = await get(http, url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("calls_shipped_total", (("phase", "complete"),))] == 3
    assert samples[("sipstack_outbox_depth", (("kind", "call"),))] == 7
    assert samples[("sipstack_api_auth_failed", ())] == 1


async def test_healthz_is_200_while_the_process_is_alive(http):
    async def broken_ready():
        raise RuntimeError("db gone")

    async with HealthServer(Metrics(), ready_provider=broken_ready, version="9.9.9") as hs:
        url = await hs.start("127.0.0.1", 0)
        status, _, body = await get(http, url + "/healthz")
    assert status == 200
    assert body == {"status": "ok", "version": "9.9.9"}


async def test_readyz_200_when_ready(http):
    async def ready():
        return True, []

    async with HealthServer(Metrics(), ready_provider=ready) as hs:
        url = await hs.start("127.0.0.1", 0)
        status, _, body = await get(http, url + "/readyz")
    assert (status, body) == (200, {"ready": True, "reasons": []})


async def test_readyz_503_with_reasons(http):
    async def not_ready():
        return False, ["database unreachable: connection refused", "api key rejected"]

    async with HealthServer(Metrics(), ready_provider=not_ready) as hs:
        url = await hs.start("127.0.0.1", 0)
        status, _, body = await get(http, url + "/readyz")
    assert status == 503
    assert body["ready"] is False
    assert body["reasons"] == ["database unreachable: connection refused", "api key rejected"]


async def test_readyz_503_when_the_provider_raises_or_hangs(http):
    async def raises():
        raise RuntimeError("store closed")

    async def hangs():
        await asyncio.Event().wait()
        return True, []

    async with HealthServer(Metrics(), ready_provider=raises) as hs:
        url = await hs.start("127.0.0.1", 0)
        status, _, body = await get(http, url + "/readyz")
        assert status == 503
        assert "store closed" in body["reasons"][0]
        hs.ready_provider = hangs
        hs.provider_timeout = 0.05
        status, _, body = await get(http, url + "/readyz")
        assert status == 503
        assert "longer than" in body["reasons"][0]


async def test_status_returns_the_providers_json_with_version(http):
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

    async def status():
        return {
            "checkpoints": {"cel": {"id": 1234}, "cdr": {"id": 99}},
            "outbox_depth": 3,
            "oldest_undelivered_seconds": 4.5,
            "last_success_at": now,  # datetimes are serialized
            "last_error": None,
            "open_calls": 2,
            "linkedid_end_seen": True,
        }

    async with HealthServer(Metrics(), status_provider=status, version="1.2.3") as hs:
        url = await hs.start("127.0.0.1", 0)
        code, ctype, body = await get(http, url + "/status")
    assert code == 200 and "json" in ctype
    assert body["version"] == "1.2.3"
    assert body["checkpoints"]["cel"] == {"id": 1234}
    assert body["last_success_at"] == "2026-01-15T12:00:00+00:00"
    assert body["linkedid_end_seen"] is True


async def test_status_provider_failure_is_500_json(http):
    async def status():
        raise ValueError("boom")

    async with HealthServer(Metrics(), status_provider=status) as hs:
        url = await hs.start("127.0.0.1", 0)
        code, _, body = await get(http, url + "/status")
    assert code == 500
    assert "boom" in body["error"]


async def test_combine_checks_collects_problems_from_every_check():
    async def db_ok():
        return []

    async def shipper_stuck():
        return ["shipper stuck"]

    async def db_raises():
        raise ConnectionError("refused")

    async def slow():
        await asyncio.Event().wait()
        return []

    assert await combine_checks(db_ok)() == (True, [])
    ok, problems = await combine_checks(db_ok, shipper_stuck, db_raises, slow, timeout=0.05)()
    assert ok is False
    assert problems[0] == "shipper stuck"
    assert "db_raises: ConnectionError: refused" in problems
    assert any(p.startswith("slow: no answer") for p in problems)
