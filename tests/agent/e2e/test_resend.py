"""`sipstack-agent resend` against the real agent process, a real PBX database
(PostgreSQL and MariaDB) and the local receiver: every call that started in the
window arrives again as a new revision with its own Idempotency-Key, nothing
outside the window does; an interrupted resend resumes after its last page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sipstack_agent.admin import resend
from sipstack_agent.calls.document import revision_key
from sipstack_agent.config import load_settings
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import SimCall
from sipstack_agent.sim.traffic import TrafficGenerator

from .helpers import (
    all_complete,
    dead_letters,
    free_port,
    outbox_depth,
    start_agent,
    wait_until,
    write_calls,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    from .helpers import API_KEY

    r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def batch(start: datetime, n: int, seed: int, first_channel: int) -> list[SimCall]:
    gen = TrafficGenerator(
        seed, start=start, ring=(0.5, 3), talk=(1, 20), first_channel=first_channel
    )
    return gen.calls(n, rate=5.0, start=start)


def revisions(receiver: Receiver) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for r in receiver.receipts():
        out.setdefault(r["linkedid"], []).append((int(r["revision"]), r["idempotency_key"]))
    return out


class Interrupt(Exception):
    pass


def stop_after_sent() -> Callable[[resend.Progress], None]:
    """Interrupts an in-process resend (like Ctrl-C) after the first saved page that
    queued calls."""

    def on_page(p: resend.Progress) -> None:
        if p.sent:
            raise Interrupt(p.line())

    return on_page


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_resend_window_while_running_interrupt_and_resume(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db(dialect)
    now = datetime.now(UTC).replace(microsecond=0)
    before = batch(now - timedelta(hours=5), 4, seed=1, first_channel=0)  # outside
    first = batch(now - timedelta(hours=3), 4, seed=2, first_channel=1000)  # in
    second = batch(now - timedelta(hours=2, minutes=20), 4, seed=3, first_channel=2000)  # in
    after = batch(now - timedelta(minutes=50), 4, seed=4, first_channel=3000)  # outside
    calls = [*before, *first, *second, *after]
    await write_calls(pbx.writer, calls)
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state)
    try:
        assert await wait_until(all_complete(receiver, calls, state_dir=state), 120), (
            agent.log_tail()
        )
        shipped = revisions(receiver)
        since = (now - timedelta(hours=3, minutes=5)).isoformat()
        until = (now - timedelta(hours=2)).isoformat()

        # interrupted after the page that queued the first batch
        settings = load_settings(agent.process_env())
        window = resend.Window(resend.parse_time(since), resend.parse_time(until))
        with pytest.raises(Interrupt) as cut:
            await resend.resend(settings, window, on_page=stop_after_sent())
        assert f" {len(first)} call(s) queued" in str(cut.value)

        # resumed through the CLI: it goes on after the saved page
        cli = await asyncio.to_thread(agent.cli, "resend", "--since", since, "--until", until)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        lines = cli.stdout.splitlines()
        stopped_at = str(cut.value).split("read through ")[1].split(",")[0]
        assert stopped_at not in lines[0], cli.stdout
        assert f"{len(first) + len(second)} call(s) queued as new revisions" in cli.stdout

        inside = {c.expected.linkedid for c in (*first, *second)}
        want = {lid: shipped[lid][-1][0] + 1 for lid in inside}
        assert await wait_until(
            lambda: all(len(revisions(receiver)[lid]) == len(shipped[lid]) + 1 for lid in inside),
            60,
        ), agent.log_tail()
        assert await wait_until(lambda: outbox_depth(state) == 0, 30)
        got = revisions(receiver)
        for lid in inside:
            assert got[lid][:-1] == shipped[lid]
            assert got[lid][-1] == (want[lid], revision_key("e2e", lid, want[lid]))
            doc = receiver.latest_complete(lid)
            assert doc is not None and doc["revision"] == want[lid]
            assert doc["linkedid"] == lid and doc["ship_phase"] == "complete"
        for c in (*before, *after):
            assert got[c.expected.linkedid] == shipped[c.expected.linkedid]
        assert receiver.rejects() == []

        # the same window again, finished: a new run, one more revision each
        again = await asyncio.to_thread(agent.cli, "resend", "--since", since, "--until", until,
                                        "--linkedid", first[0].expected.linkedid)  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 call(s) queued as new revisions" in again.stdout
        lid = first[0].expected.linkedid
        assert await wait_until(lambda: revisions(receiver)[lid][-1][0] == want[lid] + 1, 30)
    finally:
        agent.terminate()


TOKEN = "ctl-" + "k" * 28


async def control(
    port: int, method: str, action: str, body: dict[str, Any] | None = None, token: str = TOKEN
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://127.0.0.1:{port}/control/{action}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_control_endpoint_resend_and_dead_letter_retry_in_the_agent(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("postgresql")
    now = datetime.now(UTC).replace(microsecond=0)
    inside = batch(now - timedelta(hours=3), 5, seed=5, first_channel=0)
    outside = batch(now - timedelta(hours=1), 3, seed=6, first_channel=1000)
    bad = outside[0].expected.linkedid
    receiver.set_faults(fail_status=400, fail_linkedid=bad, fail_path="calls", body="bad tenant")
    await write_calls(pbx.writer, [*inside, *outside])
    state = tmp_path / "state"
    port = free_port()
    agent = start_agent(
        pbx.settings, receiver.calls_url, state,
        MONITORING_PORT=str(port), MONITORING_HOST="127.0.0.1", CONTROL_TOKEN=TOKEN,
    )  # fmt: skip
    good = [c for c in (*inside, *outside) if c.expected.linkedid != bad]
    try:
        assert await wait_until(all_complete(receiver, good, state_dir=state), 120), (
            agent.log_tail()
        )
        assert await wait_until(lambda: bool(dead_letters(state)), 30)
        shipped = revisions(receiver)
        window = {"since": (now - timedelta(hours=3, minutes=5)).isoformat(),
                  "until": (now - timedelta(hours=2)).isoformat()}  # fmt: skip

        # no token, a wrong one, another scheme: 401, and nothing changes
        for token in ("", "ctl-" + "j" * 28, TOKEN[:-1]):
            status, answer = await control(port, "POST", "resend", window, token=token)
            assert status == 401, answer
            status, answer = await control(port, "POST", "dead-letters/retry", {"all": True}, token)
            assert status == 401, answer
        assert len(dead_letters(state)) >= 1
        assert (await control(port, "POST", "nothing", {}))[0] == 404
        assert (await control(port, "POST", "resend", {"since": "yesterday"}))[0] == 400
        assert (await control(port, "POST", "resend", {**window, "until": window["since"]}))[
            0
        ] == 400

        # the cause is fixed: retry through the agent -> a new revision, its own key
        receiver.reset_faults()
        status, answer = await control(port, "POST", "dead-letters/retry", {"reason": "http_400"})
        assert status == 200, answer
        [requeued] = answer["requeued"]
        assert requeued["idempotency_key"].startswith(f"e2e:{bad}:")
        assert await wait_until(lambda: receiver.latest_complete(bad) is not None, 30)
        assert dead_letters(state) == []

        # resend through the agent: 202, progress until done, a new revision of each call
        status, answer = await control(port, "POST", "resend", window)
        assert status == 202 and answer["accepted"], answer

        async def finished() -> dict[str, Any]:
            for _ in range(300):
                st, got = await control(port, "GET", "resend")
                assert st == 200, got
                if not got["running"]:
                    return got
                await asyncio.sleep(0.2)
            raise AssertionError("resend did not finish")

        report = await finished()
        assert report["done"] and report["error"] == "" and report["sent"] == len(inside), report
        lids = {c.expected.linkedid for c in inside}
        assert await wait_until(
            lambda: all(len(revisions(receiver)[lid]) == len(shipped[lid]) + 1 for lid in lids), 60
        ), agent.log_tail()
        got = revisions(receiver)
        for c in outside[1:]:
            assert got[c.expected.linkedid] == shipped[c.expected.linkedid]
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0


async def test_control_is_refused_without_a_configured_token(tmp_path: Path) -> None:
    """The real HealthServer with the real control actions, no CONTROL_TOKEN: 403."""
    from sipstack_agent.admin.control import Control
    from sipstack_agent.health import HealthServer
    from sipstack_agent.metrics import Metrics
    from sipstack_agent.state import StateStore

    settings = load_settings({"API_KEY": "sk_" + "a" * 32, "DB_TYPE": "postgresql",
                              "DB_NAME": "x", "STATE_DIR": str(tmp_path)})  # fmt: skip
    store = await StateStore.open(tmp_path / "state.db", connector_id="e2e")
    server = HealthServer(Metrics(), control=Control(settings, store).actions(), control_token="")
    url = await server.start("127.0.0.1", 0)
    port = int(url.rsplit(":", 1)[1])
    try:
        for method, action in (("POST", "resend"), ("POST", "dead-letters/retry")):
            status, answer = await control(port, method, action, {"all": True})
            assert status == 403 and "CONTROL_TOKEN" in str(answer["error"]), answer
        assert await store.get_position(resend.CURSOR) is None
    finally:
        await server.stop()
        await store.close()
