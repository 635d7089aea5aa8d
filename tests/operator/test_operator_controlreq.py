"""controlreq.py (the request annotation and its outcome: pure) and relay.call_agent's
bounds (a real aiohttp server answering too much or too slowly)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from sipstack_operator import controlreq as cr
from sipstack_operator import relay
from sipstack_operator.kubectl.main import new_request


def test_a_request_round_trips_through_its_annotation() -> None:
    req = new_request(cr.RESEND, {"since": "2026-11-30T00:00:00Z", "linkedids": ["1.2"]})
    assert cr.parse(req.annotation()) == req
    assert cr.agent_call(req) == cr.AgentCall(
        "POST", "resend", {"since": "2026-11-30T00:00:00Z", "linkedids": ["1.2"]}
    )
    retry = new_request(cr.RETRY, {"ids": [3, 4]})
    assert cr.agent_call(retry) == cr.AgentCall("POST", "dead-letters/retry", {"ids": [3, 4]})
    listing = new_request(cr.LIST, {"reason": "http_400"})
    assert cr.agent_call(listing) == cr.AgentCall("GET", "dead-letters", {"reason": "http_400"})


@pytest.mark.parametrize(
    ("raw", "problem", "action"),
    [
        ("nope", "not JSON", cr.UNKNOWN),
        ("[1]", "JSON object", cr.UNKNOWN),
        ({"id": "has space", "action": "resend"}, "id:", cr.UNKNOWN),
        ({"id": "a", "action": "reboot"}, "action:", cr.UNKNOWN),
        ({"id": "a", "action": "resend", "args": {}}, "args.since", cr.RESEND),
        ({"id": "a", "action": "resend", "args": {"since": "2026-11-30"}}, "no offset", cr.RESEND),
        ({"id": "a", "action": "resend", "args": {"since": "x", "y": 1}}, "unknown y", cr.RESEND),
        ({"id": "a", "action": "dead-letters-retry", "args": {}}, "give ids", cr.RETRY),
        ({"id": "a", "action": "dead-letters-retry", "args": {"ids": [True]}}, "ids", cr.RETRY),
        ({"id": "a", "action": "dead-letters-retry", "args": {"ids": [-1]}}, "ids", cr.RETRY),
    ],
)
def test_malformed_requests_name_the_field(raw: Any, problem: str, action: str) -> None:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    with pytest.raises(cr.RequestError) as err:
        cr.parse(text)
    assert problem in str(err.value)
    assert err.value.request is not None and err.value.request.action == action
    # The same malformed text is recorded under the same id: handled once.
    with pytest.raises(cr.RequestError) as again:
        cr.parse(text)
    assert again.value.request is not None
    assert again.value.request.id == err.value.request.id


def test_outcomes_from_the_agents_answers() -> None:
    resend = new_request(cr.RESEND, {"since": "2026-11-30T00:00:00Z"})
    window = {"since": "2026-11-30T00:00:00+00:00", "until": "2026-12-01T00:00:00+00:00"}
    ok = cr.outcome(resend, 202, {"accepted": True, "window": window, "sent": 0})
    assert ok.outcome == cr.SUCCEEDED and "2026-11-30T00:00:00+00:00 .. 2026-12-01" in ok.message
    busy = cr.outcome(resend, 409, {"error": "a resend is running", "window": window, "sent": 9})
    assert busy.outcome == cr.FAILED and "9 sent so far" in busy.message
    assert "HTTP 401" in cr.outcome(resend, 401, {"error": "missing or wrong"}).message
    assert "disabled" in cr.outcome(resend, 403, {"error": "control endpoint disabled"}).message

    retry = new_request(cr.RETRY, {"ids": [1, 2]})
    answer = {"requeued": [{"id": 1, "idempotency_key": "k"}], "dropped": [], "missing": [2]}
    partly = cr.outcome(retry, 404, answer)
    assert partly.outcome == cr.FAILED
    assert "requeued 1 dead letter(s) (1)" in partly.message and "not found: 2" in partly.message

    listing = new_request(cr.LIST, {})
    rows = [
        {
            "id": i,
            "reason": "http_400",
            "linkedid": f"17.{i}",
            "attempts": 1,
            "dead_at": "t",
            "body": "+15551234567 refused",
        }
        for i in range(cr.MAX_ITEMS + 5)
    ]
    listed = cr.outcome(listing, 200, {"dead_letters": rows})
    assert listed.message == f"{len(rows)} dead letter(s): http_400: {len(rows)} (first 100 listed)"
    assert len(listed.items) == cr.MAX_ITEMS and listed.items[0].startswith("0 http_400")
    assert "+15551234567" not in json.dumps(cr.last_request(listing, listed))  # no body


@pytest.fixture()
async def agent_like() -> AsyncIterator[str]:
    async def big(_: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        resp = aiohttp.web.StreamResponse()
        await resp.prepare(_)
        for _i in range(40):
            await resp.write(b"x" * 65536)  # no Content-Length: counted while read
        return resp

    async def slow(_: aiohttp.web.Request) -> aiohttp.web.Response:
        await asyncio.sleep(1.5)
        return aiohttp.web.json_response({})

    async def echo(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {"auth": request.headers.get("Authorization"), "query": dict(request.query)}
        )

    app = aiohttp.web.Application()
    app.router.add_get("/control/big", big)
    app.router.add_get("/control/slow", slow)
    app.router.add_get("/control/echo", echo)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/control"
    await runner.cleanup()


async def test_call_agent_is_bounded_in_size_and_time(agent_like: str) -> None:
    async with aiohttp.ClientSession() as session:
        status, answer = await relay.call_agent(
            session, f"{agent_like}/echo", "tok", cr.AgentCall("GET", "x", {"reason": "r"}),
            timeout=2,
        )  # fmt: skip
        assert status == 200 and answer == {"auth": "Bearer tok", "query": {"reason": "r"}}
        with pytest.raises(relay.AgentUnreachableError, match="larger than"):
            await relay.call_agent(
                session, f"{agent_like}/big", "tok", cr.AgentCall("GET", "x", {}), timeout=5
            )
        with pytest.raises(relay.AgentUnreachableError, match="Timeout"):
            await relay.call_agent(
                session, f"{agent_like}/slow", "tok", cr.AgentCall("GET", "x", {}), timeout=0.3
            )
