"""`sipstack-agent support-bundle` beside the real agent (MariaDB PBX, SELECT-only
user with a password, receiver refusing one call with a body that carries a phone
number and a key): one tar.gz with every member, and a grep of the whole archive
finds no secret and no unmasked phone number."""

from __future__ import annotations

import asyncio
import json
import re
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent import __version__
from sipstack_agent.receiver import Receiver

from .helpers import (
    API_KEY,
    all_complete,
    dead_letters,
    free_port,
    start_agent,
    wait_until,
    write_calls,
)
from .test_e2e import past_calls

pytestmark = pytest.mark.timeout(240)

LEAKY_NUMBER = "+14165550199"
LEAKY_KEY = "sk_" + "leak" * 8


async def test_support_bundle_has_everything_and_no_secret(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    receiver = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    pbx = await make_pbx_db("mysql")
    assert pbx.settings.password  # the read-only user has one: it must not leak
    calls = past_calls(8, seed=11)
    bad = calls[2].expected.linkedid
    receiver.set_faults(
        fail_status=422, fail_linkedid=bad, fail_path="calls",
        body=f"refused: caller {LEAKY_NUMBER} unknown for key {LEAKY_KEY}",
    )  # fmt: skip
    await write_calls(pbx.writer, calls)
    state = tmp_path / "state"
    port = free_port()
    agent = start_agent(
        pbx.settings, receiver.calls_url, state,
        MONITORING_PORT=str(port), MONITORING_HOST="127.0.0.1", LOG_LEVEL="DEBUG",
    )  # fmt: skip
    good = [c for c in calls if c.expected.linkedid != bad]
    out = tmp_path / "bundle.tar.gz"
    try:
        assert await wait_until(all_complete(receiver, good, state_dir=state), 90), agent.log_tail()
        assert await wait_until(lambda: len(dead_letters(state)) >= 1, 30)
        with open(state / "agent.log", "a", encoding="utf-8") as fh:  # as a careless line would
            fh.write(f"DEBUG dialing {LEAKY_NUMBER} with {API_KEY}\n")
        res = await asyncio.to_thread(
            agent.cli, "support-bundle", "-o", str(out), "--log", str(state / "agent.log")
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"wrote {out}" in res.stderr
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
        await receiver.stop()

    with tarfile.open(out, "r:gz") as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar}
    assert set(members) == {
        "config.json", "status.json", "status.txt", "check.txt", "versions.txt", "log.txt",
    }  # fmt: skip
    config = json.loads(members["config.json"])
    assert config["api"]["api_key"] == "<redacted>"
    assert config["database"]["password"] == "<redacted>"
    assert config["database"]["host"] == pbx.settings.host and config["identity"]["connector_id"]
    status = json.loads(members["status.json"])
    assert status["health"]["state"] == "degraded"
    assert status["status"]["backlog"]["dead_letters_by_reason"] == {
        "http_422": len(dead_letters(state))
    }
    assert "refused: caller …99 unknown" in status["status"]["shipper"]["last_error"]
    assert "DEGRADED (exit 1)" in members["status.txt"]
    assert "OK   database reachable: mysql" in members["check.txt"]
    assert "OK   api" in members["check.txt"] and "state dir" in members["check.txt"]
    assert f"sipstack-agent {__version__}" in members["versions.txt"]
    assert "sqlite " in members["versions.txt"] and "aiohttp " in members["versions.txt"]
    assert "dialing …99 with <redacted>" in members["log.txt"]
    assert "sipstack-agent" in members["log.txt"]  # the agent's own start line

    # grep the raw archive (every member, decompressed) for anything that must not leak
    with tarfile.open(out, "r:gz") as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar).decode()
    secrets = [API_KEY, pbx.settings.password, LEAKY_KEY, LEAKY_NUMBER]
    numbers = {
        n for c in calls for n in (c.expected.src_number, c.expected.dst_number)
        if n and len(re.sub(r"\D", "", n)) >= 7
    }  # fmt: skip
    assert numbers  # the traffic has real phone numbers
    for s in [*secrets, *numbers]:
        assert s not in blob, s
    assert not re.search(r"sk_[A-Za-z0-9]{8,}", blob)
    assert not re.search(r"(?<![\w.])\+?\d{7,15}(?![\w.])", blob)
