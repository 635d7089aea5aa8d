"""Peering and events, against kmock.

- two real `sipstack-operator run` processes (two replicas of the operator's
  Deployment, POD_NAME from the downward API): they create and share the
  KopfPeering object; only the higher-priority one handles connectors (every
  event names it as reportingInstance), the other stands by, and takes over
  when the first one stops;
- under KopfRunner: events are reported as sipstack-operator with the pod as
  instance, not kopf's "kopf"/"dev".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from sipstack_operator import handlers
from sipstack_operator.kopfsettings import ProcessSettings, priority_of

from .kmock_emulator import Emulator
from .operator_testlib import ROOT
from .test_operator_kmock import (
    EVENTS,
    NS,
    cluster,
    connector,
    create,
    eventually,
    operator,
    pod_hash,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(90)]

__all__ = ["cluster"]  # the fixture, imported for pytest

PEERINGS = kmock.resource("kopf.dev", "v1", "kopfpeerings")
CLUSTER_PEERINGS = kmock.resource("kopf.dev", "v1", "clusterkopfpeerings")


def events_for(cluster: Emulator, name: str) -> list[dict[str, Any]]:
    return [
        o.raw
        for k, o in cluster.objects.items()
        if k[0] == EVENTS and (o.raw.get("involvedObject") or {}).get("name") == name
    ]


class OperatorProcess:
    """`sipstack-operator run` as the pod `pod_name`, its log lines read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace"))

    def mentions(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))


@contextlib.asynccontextmanager
async def operator_process(pod_name: str, *scope: str) -> AsyncIterator[OperatorProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "POD_NAME": pod_name}
    env.pop("POD_ID", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipstack_operator.cli",
        "run",
        *(scope or ("--namespace", NS)),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = OperatorProcess(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
        await running.reader
        assert proc.returncode == 0, "".join(running.lines)[-3000:]


@pytest.mark.parametrize(
    ("scope", "peering", "kind"),
    [
        (("--namespace", NS), PEERINGS, "KopfPeering"),
        (("--all-namespaces",), CLUSTER_PEERINGS, "ClusterKopfPeering"),
    ],
    ids=["namespaced", "all-namespaces"],
)
async def test_a_second_replica_stands_by_and_takes_over(
    cluster: Emulator, scope: tuple[str, ...], peering: Any, kind: str
) -> None:
    cluster.resources[peering] = cluster.ResourceInfo(
        kind=kind,
        namespaced=kind == "KopfPeering",
        verbs={"list", "watch", "get", "create", "patch", "delete"},
    )

    def peers() -> dict[str, Any]:
        key = (peering, NS if kind == "KopfPeering" else None, "sipstack-operator")
        if key not in cluster.objects or cluster.objects[key].deleted:
            return {}
        return dict(cluster.objects[key].raw.get("status") or {})

    first, second = sorted(
        ["sipstack-operator-6f7c9-aaaaa", "sipstack-operator-6f7c9-bbbbb"],
        key=priority_of,
        reverse=True,
    )
    await seed(cluster)
    async with (
        operator_process(second, *scope) as standby,
        operator_process(first, *scope) as active,
    ):
        both = await eventually(
            lambda: len(status := peers()) == 2 and status,
            timeout=20,
            what="both replicas in the peering object",
        )
        assert both[first]["priority"] == priority_of(first)
        assert both[second]["priority"] == priority_of(second)

        await create(cluster, connector("pbx-east"))
        await eventually(lambda: pod_hash(cluster, "pbx-east"), timeout=20, what="reconciled")
        east = await eventually(lambda: events_for(cluster, "pbx-east"), what="events")
        assert {e["reportingInstance"] for e in east} == {first}
        assert active.mentions("pbx-east")
        assert not standby.mentions("pbx-east")  # it stood by: never handled the connector

        active.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(active.proc.wait(), timeout=30)
        await eventually(
            lambda: second in peers() and first not in peers(),
            what="the stopped replica left the peering",
        )
        await create(cluster, connector("pbx-west"))
        await eventually(lambda: pod_hash(cluster, "pbx-west"), timeout=20, what="taken over")
        west = await eventually(lambda: events_for(cluster, "pbx-west"), what="events")
        assert {e["reportingInstance"] for e in west} == {second}
        # Resumed pbx-east (the one connector that existed before) and created pbx-west.
        assert standby.mentions("Resuming is processed: 1 succeeded")
        assert standby.mentions("pbx-west")


async def test_events_are_reported_as_the_operator_pod(
    cluster: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "PROCESS", ProcessSettings(pod_name="sipstack-operator-x1"))
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        events = await eventually(lambda: events_for(cluster, "pbx-east"), what="events")
    for event in events:
        assert event["reportingComponent"] == "sipstack-operator"
        assert event["reportingInstance"] == "sipstack-operator-x1"
        assert event["source"] == {"component": "sipstack-operator"}
        assert event["metadata"]["name"].startswith("sipstack-operator-")
