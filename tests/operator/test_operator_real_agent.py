"""The operator's status from a real agent: `sipstack-agent run` reading a SQLite
PBX written live, shipping to the local receiver, and the operator (kopf, against
kmock) reading that agent's /status into the AsteriskConnector status.

backlog is a number, lastShippedAt an RFC 3339 time, lastError set after the API
fails, and the CR as written validates against the CRD's schema.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sipstack_agent.demo import AgentProcess, agent_env
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.play import play
from sipstack_agent.sim.timeline import SimCall, timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import PbxWriter
from sipstack_operator import handlers
from sipstack_operator.config import OperatorConfig

from .kmock_emulator import Emulator
from .operator_testlib import strip_for_draft4
from .test_operator_kmock import (
    API_KEY,
    CONNECTORS,
    NS,
    cluster,
    connector,
    create,
    eventually,
    make_ready,
    obj,
    operator,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(120)]
__all__ = ["cluster"]  # the fixture, imported for pytest


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RealAgent:
    process: AgentProcess
    receiver: Receiver
    pbx: PbxWriter
    status_url: str

    async def play(self, n: int, seed: int) -> list[SimCall]:
        """`n` calls whose rows are committed at the pace Asterisk commits them."""
        start = datetime.now(UTC) + timedelta(seconds=0.3)
        gen = TrafficGenerator(seed, start=start, ring=(0.2, 0.6), talk=(0.3, 1.5))
        calls = gen.calls(n, rate=5.0, start=start)
        await play(timeline(calls), self.pbx.write)
        return calls


@pytest.fixture()
async def real_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RealAgent]:
    receiver = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    pbx_path = str(tmp_path / "asterisk.db")
    pbx = await PbxWriter.connect("sqlite", database=pbx_path)
    await pbx.create_tables()
    port = free_port()
    state = tmp_path / "state"
    env = agent_env(
        api_url=receiver.calls_url,
        state_dir=str(state),
        db={"DB_TYPE": "sqlite", "DB_NAME": pbx_path},
        api_key=API_KEY,
        extra={
            "CONNECTOR_ID": f"{NS}/pbx-east",
            "MONITORING_PORT": str(port),
            "MONITORING_HOST": "127.0.0.1",
            "CDR_POLL_INTERVAL": "0.3",
            "CALL_IDLE_TIMEOUT": "3",
        },
    )
    process = AgentProcess(env, tmp_path / "agent.log")
    process.start()
    status_url = f"http://127.0.0.1:{port}/status"
    config = OperatorConfig.from_env()
    monkeypatch.setattr(
        handlers,
        "CONFIG",
        OperatorConfig(
            default_image=config.default_image,
            status_interval=config.status_interval,
            agent_status_url=status_url,  # every connector reads this one agent
            agent_status_timeout=2.0,
            retry_base=config.retry_base,
            retry_cap=config.retry_cap,
        ),
    )
    try:
        yield RealAgent(process, receiver, pbx, status_url)
    finally:
        await asyncio.to_thread(process.terminate, 15)
        await pbx.close()
        await receiver.stop()


def cr_status(cluster: Emulator) -> dict[str, Any]:
    return dict((obj(cluster, CONNECTORS, "pbx-east") or {}).get("status") or {})


def delivered(receiver: Receiver, calls: Sequence[SimCall]) -> bool:
    docs = receiver.latest_complete_all()
    return all(c.expected.linkedid in docs for c in calls)


async def test_the_cr_status_comes_from_the_real_agent(
    cluster: Emulator, real_agent: RealAgent, crd_schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft4Validator(strip_for_draft4(crd_schema))
    await seed(cluster)
    await create(cluster, connector())
    calls = await real_agent.play(6, seed=91)
    async with operator():
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east")["status"], what="status")
        await make_ready(cluster, "pbx-east")

        # Shipping: the backlog drains, lastShippedAt is the agent's last delivery.
        status = await eventually(
            lambda: (
                delivered(real_agent.receiver, calls)
                and (s := cr_status(cluster)).get("backlog") == 0
                and s.get("lastShippedAt")
                and s
            ),
            timeout=60,
            what="backlog 0 and lastShippedAt from the agent",
        )
        assert type(status["backlog"]) is int
        shipped = datetime.strptime(status["lastShippedAt"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(datetime.now(UTC) - shipped.replace(tzinfo=UTC)) < timedelta(minutes=5)
        assert status["lastError"] == ""
        full = obj(cluster, CONNECTORS, "pbx-east")
        assert full is not None
        full.pop("metadata")
        validator.validate(full)

        # The API fails: lastError says so, the backlog counts what waits.
        real_agent.receiver.set_faults(fail_status=500)
        await real_agent.play(2, seed=92)
        status = await eventually(
            lambda: (
                (s := cr_status(cluster)).get("lastError", "").startswith("HTTP 500")
                and s.get("backlog", 0) > 0
                and s
            ),
            timeout=60,
            what="lastError after HTTP 500",
        )
        assert type(status["backlog"]) is int
        full = obj(cluster, CONNECTORS, "pbx-east")
        assert full is not None
        full.pop("metadata")
        validator.validate(full)

        # The API recovers: the backlog drains again.
        real_agent.receiver.reset_faults()
        await eventually(lambda: cr_status(cluster).get("backlog") == 0, timeout=60, what="drain")
        shipped_at = cr_status(cluster)["lastShippedAt"]

        # The agent stops answering (its pod still counted ready): the counts go, since
        # no one knows them now; the last delivery stays, a fact of the past.
        await asyncio.to_thread(real_agent.process.terminate, 15)
        status = await eventually(
            lambda: "backlog" not in (s := cr_status(cluster)) and s,
            timeout=30,
            what="no backlog once /status is unreadable",
        )
        assert "deadLetters" not in status and "deadLettersByReason" not in status
        assert status["lastShippedAt"] == shipped_at
