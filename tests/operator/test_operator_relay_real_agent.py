"""`kubectl sipstack resend` and `dead-letters` end to end: the plugin writes the
request onto the CR in kmock, the real operator (KopfRunner) relays it with the
token it generated to a real agent (`sipstack-agent run`, reading a SQLite PBX
written live, shipping to the local receiver), which really ships again; the
outcome lands in status.lastRequest and as an event, each request is handled
once (also after an operator restart), and a wrong or missing token is refused
by the agent.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from sipstack_agent.demo import AgentProcess, agent_env
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.play import play
from sipstack_agent.sim.timeline import SimCall, timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import PbxWriter
from sipstack_operator import handlers
from sipstack_operator.kubectl import main as plugin

from .kmock_emulator import Emulator
from .operator_testlib import strip_for_draft4
from .test_operator_kmock import (
    API_KEY,
    CONNECTORS,
    EVENTS,
    NS,
    SECRETS,
    cluster,
    connector,
    create,
    eventually,
    make_ready,
    obj,
    operator,
    seed,
)
from .test_operator_real_agent import free_port

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(180)]
__all__ = ["cluster"]  # the fixture, imported for pytest


@dataclass
class Stack:
    receiver: Receiver
    pbx: PbxWriter
    port: int
    root: Path
    agent: AgentProcess | None = None

    def start_agent(self, token: str | None) -> None:
        """The agent as its pod runs it: the control token read from a mounted file."""
        extra = {
            "CONNECTOR_ID": f"{NS}/pbx-east",
            "MONITORING_PORT": str(self.port),
            "MONITORING_HOST": "127.0.0.1",
            "CDR_POLL_INTERVAL": "0.3",
            "CALL_IDLE_TIMEOUT": "3",
        }
        if token is not None:
            path = self.root / "control" / "token"
            path.parent.mkdir(exist_ok=True)
            path.write_text(token)
            extra["CONTROL_TOKEN_FILE"] = str(path)
        env = agent_env(
            api_url=self.receiver.calls_url,
            state_dir=str(self.root / "state"),
            db={"DB_TYPE": "sqlite", "DB_NAME": str(self.root / "asterisk.db")},
            api_key=API_KEY,
            extra=extra,
        )
        self.agent = AgentProcess(env, self.root / "agent.log")
        self.agent.start()

    def calls(self, n: int, seed: int) -> list[SimCall]:
        start = datetime.now(UTC) + timedelta(seconds=0.3)
        gen = TrafficGenerator(seed, start=start, ring=(0.2, 0.6), talk=(0.3, 1.0))
        return gen.calls(n, rate=5.0, start=start)

    async def play(self, calls: list[SimCall]) -> None:
        """The rows committed at the pace Asterisk commits them."""
        await play(timeline(calls), self.pbx.write)

    def revisions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.receiver.receipts():
            out[r["linkedid"]] = out.get(r["linkedid"], 0) + 1
        return out


@pytest.fixture()
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    receiver = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    pbx = await PbxWriter.connect("sqlite", database=str(tmp_path / "asterisk.db"))
    await pbx.create_tables()
    port = free_port()
    monkeypatch.setattr(
        handlers,
        "CONFIG",
        dataclasses.replace(
            handlers.CONFIG,
            agent_status_url=f"http://127.0.0.1:{port}/status",
            agent_status_timeout=2.0,
            agent_control_url=f"http://127.0.0.1:{port}/control/{{action}}",
            agent_control_timeout=10.0,
        ),
    )
    s = Stack(receiver, pbx, port, tmp_path)
    try:
        yield s
    finally:
        if s.agent is not None:
            await asyncio.to_thread(s.agent.terminate, 15)
        await pbx.close()
        await receiver.stop()


async def kubectl(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(plugin.main, [*argv, "-n", NS, "--timeout", "60"], out)
    return code, out.getvalue()


def token_of(cluster: Emulator) -> str | None:
    body = obj(cluster, SECRETS, "pbx-east-control")
    return base64.b64decode(body["data"]["token"]).decode() if body else None


def status(cluster: Emulator) -> dict[str, Any]:
    return dict((obj(cluster, CONNECTORS, "pbx-east") or {}).get("status") or {})


def request_events(cluster: Emulator) -> list[dict[str, Any]]:
    return [
        o.raw
        for k, o in cluster.objects.items()
        if k[0] == EVENTS
        and not o.deleted
        and str(o.raw.get("reason", "")).startswith("Request")
        and (o.raw.get("involvedObject") or {}).get("name") == "pbx-east"
    ]


async def started(cluster: Emulator, stack: Stack) -> str:
    """The operator made the token; the agent starts with it (as its pod would)."""
    await eventually(lambda: token_of(cluster), timeout=30, what="the control Secret")
    token = token_of(cluster)
    assert token is not None
    stack.start_agent(token)
    await make_ready(cluster, "pbx-east")
    return token


async def test_resend_and_retry_relayed_to_the_real_agent_once(
    cluster: Emulator, stack: Stack, crd_schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft4Validator(strip_for_draft4(crd_schema))
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await started(cluster, stack)
        calls = stack.calls(4, seed=151)
        bad = calls[1].expected.linkedid
        good = [c.expected.linkedid for c in calls if c.expected.linkedid != bad]
        stack.receiver.set_faults(
            fail_status=400, fail_linkedid=bad, fail_path="calls", body="bad tenant"
        )
        await stack.play(calls)
        await eventually(
            lambda: (
                all(stack.receiver.latest_complete(lid) for lid in good)
                and status(cluster).get("deadLetters", 0) >= 1
            ),
            timeout=60,
            what="good calls delivered, the bad one dead-lettered (status.deadLetters)",
        )

        # dead-letters list: through the operator, the agent's own list.
        code, out = await kubectl("dead-letters", "pbx-east", "list")
        assert code == 0, out
        assert "Succeeded: " in out and "http_400" in out and f"linkedid={bad}" in out
        assert status(cluster)["lastRequest"]["action"] == "dead-letters-list"

        # The cause is fixed: retry -> the agent ships it again.
        stack.receiver.reset_faults()
        code, out = await kubectl("dead-letters", "pbx-east", "retry", "--reason", "http_400")
        assert code == 0, out
        assert "Succeeded: requeued 1 dead letter(s)" in out, out
        await eventually(lambda: stack.receiver.latest_complete(bad), timeout=30, what="retried")
        await eventually(lambda: status(cluster).get("deadLetters") == 0, timeout=30)

        # resend: every call of the window arrives once more as a new revision.
        await eventually(lambda: status(cluster).get("backlog") == 0, timeout=30)
        before = stack.revisions()
        since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
        code, out = await kubectl("resend", "pbx-east", "--since", since)
        assert code == 0, out
        assert "Succeeded: resend started in the agent" in out
        lids = [c.expected.linkedid for c in calls]
        await eventually(
            lambda: all(stack.revisions().get(lid, 0) == before[lid] + 1 for lid in lids),
            timeout=60,
            what="one more revision of each call",
        )
        progress = await eventually(
            lambda: (r := status(cluster).get("resend")) and r["done"] and r,
            timeout=30,
            what="status.resend done",
        )
        assert progress["sent"] == len(calls)
        last = status(cluster)["lastRequest"]
        assert (last["action"], last["outcome"]) == ("resend", "Succeeded")
        assert last["finishedAt"].endswith("Z") and last["requestedAt"]
        full = obj(cluster, CONNECTORS, "pbx-east")
        assert full is not None
        full.pop("metadata")
        validator.validate(full)
        events = await eventually(
            lambda: len(e := request_events(cluster)) == 3 and e, what="three request events"
        )
        assert {e["reason"] for e in events} == {"RequestSucceeded"}
        assert sorted(e["message"].split(":")[0] for e in events) == [
            "dead-letters-list",
            "dead-letters-retry",
            "resend",
        ]
        resend_id = last["id"]
        resent = stack.revisions()

    # A restarted operator sees the same request on the CR: not relayed again.
    async with operator():
        code, out = await kubectl("dead-letters", "pbx-east", "list")
        assert code == 0, out
        assert "0 dead letter(s)" in out
        await eventually(lambda: len(request_events(cluster)) == 4, what="the fourth event")
        assert [e["message"].split(":")[0] for e in request_events(cluster)].count("resend") == 1
        assert status(cluster)["lastRequest"]["id"] != resend_id
        await asyncio.sleep(2)  # a second resend would have shipped by now
        assert stack.revisions() == resent


async def test_a_wrong_or_missing_token_is_refused_by_the_agent(
    cluster: Emulator, stack: Stack
) -> None:
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: token_of(cluster), timeout=30, what="the control Secret")
        stack.start_agent("not-the-operators-token-0123456789")
        await make_ready(cluster, "pbx-east")
        await eventually(lambda: status(cluster).get("agentVersion"), timeout=30, what="agent up")

        code, out = await kubectl("resend", "pbx-east", "--since", "2026-11-30T00:00:00Z")
        assert code == 1, out
        assert "Failed: the agent refused the control token (HTTP 401)" in out
        assert status(cluster)["lastRequest"]["outcome"] == "Failed"
        event = await eventually(lambda: request_events(cluster), what="the event")
        assert (event[0]["type"], event[0]["reason"]) == ("Warning", "RequestFailed")

    # Without a token at all (not through the operator): 401, nothing started.
    url = f"http://127.0.0.1:{stack.port}/control/resend"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"since": "2026-11-30T00:00:00Z"}) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {token_of(cluster)}"}) as r:
            assert r.status == 401  # the operator's token is not the one this agent has
