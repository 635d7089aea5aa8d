"""`kubectl sipstack status` (sipstack_operator.kubectl) against kmock: the fleet
table from the AsteriskConnectors' status as the operator writes it, -n / -A /
the context's namespace, -o json / wide, exit codes 0 (all ready), 1 (one not),
2 (no cluster); every `kubectl sipstack` command the docs show parses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shlex
import socket
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipstack_operator.kubectl import main as plugin
from sipstack_operator.kubectl import table

from .kmock_emulator import Emulator
from .operator_testlib import ROOT
from .test_operator_kmock import NS, cluster, connector

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]
__all__ = ["cluster"]  # the fixture, imported for pytest


def ago(seconds: int) -> str:
    """A time `seconds` before now (taken when the CRs are built, not at import: under
    pytest-xdist a module is imported minutes before its tests run)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return (now - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready(status: str, reason: str, message: str) -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


def with_status(name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    body = connector(name)
    body["metadata"]["namespace"] = namespace
    body["status"] = status
    return body


def fleet() -> list[dict[str, Any]]:
    return [
        with_status(
            "pbx-east",
            NS,
            {
                "conditions": ready("True", "AgentReady", "the agent is running"),
                "backlog": 0,
                "newestRowAt": ago(4),
                "lastShippedAt": ago(30),
                "deadLetters": 0,
                "agentVersion": "0.14.0",
                "agent": {"image": "sipstack/connector-asterisk:0.14.0", "readyReplicas": 1},
            },
        ),
        with_status(
            "pbx-west",
            NS,
            {
                "conditions": ready("False", "SecretNotFound", "Secret 'west-api' not found"),
                "backlog": 1250,
                "newestRowAt": ago(7290),  # 2h1m30s: "2h1m" for 30 s
                "lastShippedAt": ago(3 * 86400),
                "deadLetters": 3,
                "agentVersion": "0.13.2",
            },
        ),
        with_status("pbx-lab", "lab", {}),
    ]


async def put(cluster: Emulator, body: dict[str, Any]) -> None:
    ns = body["metadata"]["namespace"]
    path = f"/apis/sipstack.com/v1alpha1/namespaces/{ns}/asteriskconnectors"
    async with cluster.post(path, json=body) as resp:
        assert resp.status < 300, await resp.text()


async def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(plugin.main, list(argv), out)
    return code, out.getvalue()


def set_context_namespace(namespace: str) -> None:
    path = Path(os.environ["KUBECONFIG"])
    config = yaml.safe_load(path.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config))


async def test_status_prints_the_fleet_from_the_crs(cluster: Emulator) -> None:
    for body in fleet():
        await put(cluster, body)

    code, text = await run("status", "-n", NS)
    assert code == 1  # pbx-west is not ready
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "READY", "BACKLOG", "LAG", "LAST", "SHIPPED", "DEAD",
                                "LETTERS", "VERSION"]  # fmt: skip
    east = lines[1].split()
    assert east[:3] == ["pbx-east", "True", "0"] and east[-2:] == ["0", "0.14.0"]
    assert east[3].endswith("s") and east[4:6] == [east[4], "ago"]
    west = lines[2].split()
    assert west[:4] == ["pbx-west", "False", "(SecretNotFound)", "1250"]
    assert west[4] == "2h1m" and west[5:7] == ["3d", "ago"] and west[-2:] == ["3", "0.13.2"]
    assert "pbx-west: Secret 'west-api' not found" in lines
    assert "pbx-lab" not in text

    # -A: every namespace, with a NAMESPACE column; an unreconciled connector shows "-".
    code, text = await run("status", "-A")
    assert code == 1
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    lab = next(line for line in lines if line.startswith("lab "))
    assert lab.split()[:3] == ["lab", "pbx-lab", "Unknown"] and lab.split()[-5:] == ["-"] * 5
    assert "lab/pbx-lab: no status yet" in lines

    # No -n: the context's namespace (lab: not reconciled, so not ready), then an empty one.
    set_context_namespace("lab")
    code, text = await run("status")
    assert code == 1 and "pbx-lab" in text and "pbx-east" not in text
    set_context_namespace("empty")
    code, text = await run("status")
    assert (code, text) == (0, "No AsteriskConnectors found in namespace empty.\n")


async def test_status_exits_0_when_every_connector_is_ready(cluster: Emulator) -> None:
    await put(cluster, fleet()[0])
    code, text = await run("status", "-n", NS)
    assert code == 0, text
    assert len(text.splitlines()) == 2  # header and pbx-east, no reasons below


async def test_status_json_gives_scripts_the_table_as_objects(cluster: Emulator) -> None:
    bodies = fleet()
    for body in bodies:
        await put(cluster, body)
    written = bodies[0]["status"]  # the times as written, not ago() again a second later

    code, text = await run("status", "-A", "-o", "json")
    assert code == 1  # the same exit code as the table
    rows = json.loads(text)
    assert [(r["namespace"], r["name"]) for r in rows] == sorted(
        [("lab", "pbx-lab"), (NS, "pbx-east"), (NS, "pbx-west")]
    )
    by_name = {r["name"]: r for r in rows}
    east, west, lab = by_name["pbx-east"], by_name["pbx-west"], by_name["pbx-lab"]
    assert east == {
        "namespace": NS,
        "name": "pbx-east",
        "ready": True,
        "readyStatus": "True",
        "readyReason": "AgentReady",
        "message": "",
        "backlog": 0,
        "newestRowAt": written["newestRowAt"],
        "lagSeconds": east["lagSeconds"],
        "lastShippedAt": written["lastShippedAt"],
        "lastShippedSecondsAgo": east["lastShippedSecondsAgo"],
        "deadLetters": 0,
        "agentVersion": "0.14.0",
        "image": "sipstack/connector-asterisk:0.14.0",
    }
    assert east["lagSeconds"] >= 4 and east["lastShippedSecondsAgo"] >= 30
    assert (west["ready"], west["readyReason"], west["message"]) == (
        False,
        "SecretNotFound",
        "Secret 'west-api' not found",
    )
    assert (west["backlog"], west["deadLetters"], west["agentVersion"]) == (1250, 3, "0.13.2")
    assert west["lagSeconds"] >= 7260 and west["lastShippedSecondsAgo"] >= 3 * 86400
    # Not reconciled yet: null where the table shows "-".
    assert (lab["ready"], lab["readyStatus"], lab["message"]) == (False, "Unknown", "no status yet")
    assert [lab[k] for k in ("backlog", "lagSeconds", "lastShippedAt", "deadLetters")] == [None] * 4
    assert (lab["agentVersion"], lab["image"]) == (None, None)

    # -n: the same objects, that namespace only; an empty namespace is an empty list.
    code, text = await run("status", "-n", NS, "-o", "json")
    assert code == 1 and [r["name"] for r in json.loads(text)] == ["pbx-east", "pbx-west"]
    code, text = await run("status", "-n", "empty", "-o", "json")
    assert (code, text) == (0, "[]\n")


async def test_status_wide_adds_image_and_message(cluster: Emulator) -> None:
    for body in fleet()[:2]:
        await put(cluster, body)
    code, text = await run("status", "-n", NS, "-o", "wide")
    assert code == 1
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["IMAGE", "MESSAGE"]
    assert len(lines) == 3  # the messages are in the MESSAGE column, not below
    cells = [re.split(r"\s{3,}", line) for line in lines[1:]]  # columns: 3 spaces apart
    assert cells[0][-2:] == ["sipstack/connector-asterisk:0.14.0", "-"]
    assert cells[1][-2:] == ["-", "Secret 'west-api' not found"]


async def test_status_exits_2_without_a_cluster(tmp_path: Path) -> None:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "gone",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    code, _ = await run("status", "--kubeconfig", str(path), "-n", NS)
    assert code == 2
    code, _ = await run("status", "--kubeconfig", str(tmp_path / "missing"))
    assert code == 2


def test_ages_read_like_kubectl() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert table.age("2026-12-01T11:59:55Z", now) == "5s"
    assert table.age("2026-12-01T11:57:00Z", now) == "3m"
    assert table.age("2026-12-01T10:00:00Z", now) == "2h"
    assert table.age("2026-12-01T09:55:00+00:00", now) == "2h5m"
    assert table.age("2026-11-27T12:00:00Z", now) == "4d"
    assert table.age(None, now) == "-"
    assert table.age("noon", now) == "?"


def documented_commands() -> list[str]:
    """`kubectl sipstack ...` lines of the ```sh blocks and `$ ` lines of the docs."""
    out: list[str] = []
    for doc in ("README.md", "docs/operations.md", "docs/operator.md"):
        text = (ROOT / doc).read_text()
        for lang, block in re.findall(r"```(sh)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                if not lang and not line.startswith("$ "):
                    continue
                m = re.search(r"kubectl sipstack ((?:status|resend|dead-letters)[^|<>#]*)", line)
                if m:
                    out.append(m.group(1).strip())
    return out


def test_the_docs_show_every_command() -> None:
    assert {c.split()[0] for c in documented_commands()} == {"status", "resend", "dead-letters"}


@pytest.mark.parametrize("line", documented_commands())
def test_documented_command_parses(line: str) -> None:
    args = plugin.build_parser().parse_args(shlex.split(line))
    assert args.func.__name__.startswith("cmd_")
