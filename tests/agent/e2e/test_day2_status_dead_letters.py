"""`sipstack-agent status` and `dead-letters` against the real agent process, a real
PBX database and the local receiver refusing one call with HTTP 400: exit codes
(0 healthy / 1 degraded / 2 down), the state store read while the agent runs and
after it stopped, and a retry that arrives as a new revision with its own key."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sipstack_agent.calls.document import revision_key
from sipstack_agent.receiver import Receiver
from sipstack_agent.status_schema import AGENT_STATUS_SCHEMA

from .helpers import (
    API_KEY,
    all_complete,
    dead_letters,
    free_port,
    outbox_depth,
    start_agent,
    wait_until,
    write_calls,
)
from .test_e2e import past_calls

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def integrity(state: Path) -> str:
    with closing(sqlite3.connect(state / "state.db", timeout=10)) as c:
        return str(c.execute("PRAGMA integrity_check").fetchone()[0])


async def test_status_dead_letters_retry_while_running_then_down(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("mysql")
    calls = past_calls(12, seed=7)
    bad = calls[5].expected.linkedid
    receiver.set_faults(fail_status=400, fail_linkedid=bad, fail_path="calls", body="bad tenant")
    await write_calls(pbx.writer, calls)
    state = tmp_path / "state"
    port = free_port()
    agent = start_agent(
        pbx.settings, receiver.calls_url, state,
        MONITORING_PORT=str(port), MONITORING_HOST="127.0.0.1",
    )  # fmt: skip
    good = [c for c in calls if c.expected.linkedid != bad]
    try:
        assert await wait_until(all_complete(receiver, good, state_dir=state), 90), agent.log_tail()
        # the outbox is empty: every refusal is in (an initial and a complete revision, or
        # only the complete one, depending on how the rows fell into polls)
        n = len(dead_letters(state))
        assert n >= 1 and {d[0] for d in dead_letters(state)} == {bad}, agent.log_tail()

        # degraded: the agent answers, one document was refused
        st = await asyncio.to_thread(agent.cli, "status")
        assert st.returncode == 1, st.stdout + st.stderr
        assert "DEGRADED (exit 1)" in st.stdout
        assert f"read from http://127.0.0.1:{port}/status" in st.stdout
        assert f"dead letters: {n}" in st.stdout and f"http_400             {n}" in st.stdout
        assert "sql:cdr" in st.stdout and "connected" in st.stdout
        js = await asyncio.to_thread(agent.cli, "status", "--json")
        assert js.returncode == 1
        report = json.loads(js.stdout)
        jsonschema.validate(report["status"], AGENT_STATUS_SCHEMA)
        assert report["health"]["state"] == "degraded"
        assert report["status"]["health"]["state"] == "degraded"
        assert report["status"]["backlog"]["dead_letters_by_reason"] == {"http_400": n}
        assert set(report["status"]["sources"]) >= {"sql:cdr", "sql:cel"}

        # list / show, read-only beside the running agent
        ls = await asyncio.to_thread(agent.cli, "dead-letters", "list", "--json")
        assert ls.returncode == 0, ls.stderr
        rows = json.loads(ls.stdout)
        assert len(rows) == n
        for row in rows:
            assert row["linkedid"] == bad and row["status"] == 400 and row["reason"] == "http_400"
            assert "bad tenant" in row["body"]
        row = rows[-1]  # the newest revision refused
        text = await asyncio.to_thread(agent.cli, "dead-letters", "list")
        assert bad in text.stdout and f"{n} dead letter(s)" in text.stdout
        show = await asyncio.to_thread(agent.cli, "dead-letters", "show", str(row["id"]))
        assert show.returncode == 0
        assert json.loads(show.stdout)["document"]["linkedid"] == bad
        missing = await asyncio.to_thread(agent.cli, "dead-letters", "show", "999")
        assert missing.returncode == 1 and "no dead letter 999" in missing.stdout
        usage = await asyncio.to_thread(agent.cli, "dead-letters", "retry")
        assert usage.returncode == 2

        # the cause is fixed: retry while the agent runs -> a new revision, its own key
        receiver.reset_faults()
        retry = await asyncio.to_thread(agent.cli, "dead-letters", "retry", "--reason", "http_400")
        assert retry.returncode == 0, retry.stdout + retry.stderr
        # the newest refused revision goes back as the next one; older ones are superseded
        new_rev = int(row["revision"]) + 1
        key = revision_key("e2e", bad, new_rev)
        assert f"requeued dead letter {row['id']} as Idempotency-Key {key}" in retry.stdout
        assert "1 document(s) back in the outbox" in retry.stdout
        for old in rows[:-1]:
            assert f"dropped dead letter {old['id']}: its call has a later revision" in retry.stdout
        got = lambda: [r for r in receiver.receipts() if r["linkedid"] == bad]  # noqa: E731
        assert await wait_until(lambda: len(got()) == 1, 30), agent.log_tail()
        assert [(r["revision"], r["idempotency_key"]) for r in got()] == [(new_rev, key)]
        assert key not in {r["idempotency_key"] for r in rows}
        assert receiver.latest_complete(bad) is not None
        assert dead_letters(state) == []
        assert await wait_until(lambda: outbox_depth(state) == 0, 30)

        async def healthy() -> bool:
            return (await asyncio.to_thread(agent.cli, "status")).returncode == 0

        ok = False
        for _ in range(30):
            if ok := await healthy():
                break
            await asyncio.sleep(0.5)
        assert ok, (await asyncio.to_thread(agent.cli, "status")).stdout
        assert agent.alive()
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    assert integrity(state) == "ok"

    # down: nobody answers; the summary comes from the state dir, read-only
    down = await asyncio.to_thread(agent.cli, "status")
    assert down.returncode == 2, down.stdout + down.stderr
    assert "DOWN (exit 2)" in down.stdout
    assert "state.db (read-only)" in down.stdout and "does not answer" in down.stdout
    assert "read positions:" in down.stdout and "sql:cdr" in down.stdout
    assert f"time zone: {pbx.settings.timezone} (DB_TIMEZONE as configured" in down.stdout
    assert "dead letters: 0" in down.stdout
    js = await asyncio.to_thread(agent.cli, "status", "--json")
    assert js.returncode == 2
    assert json.loads(js.stdout)["health"]["state"] == "down"
    assert not (state / "state.db-journal").exists()
