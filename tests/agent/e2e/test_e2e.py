"""The whole agent process (`sipstack-agent run`) against real PostgreSQL, MariaDB and
SQLite PBX databases read by a SELECT-only user, shipping to the local receiver.

Calls come from `sim.traffic.TrafficGenerator` (Asterisk 20 sequences: answered,
unanswered, busy, blind transfer, queue with Local channels, internal, outbound),
with NULL columns, accented and non-UTF-8 names, out-of-order commits and CDRs
committed after LINKEDID_END.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import SimCall, timeline
from sipstack_agent.sim.traffic import TrafficGenerator

from .helpers import (
    API_KEY,
    all_complete,
    assert_revisions_once,
    dead_letters,
    free_port,
    outbox_depth,
    runs,
    start_agent,
    wait_anchored,
    wait_until,
    write_calls,
)

pytestmark = pytest.mark.timeout(180)

DIALECTS = ("postgresql", "mysql", "sqlite")


def past_calls(n: int, seed: int, **kw: Any) -> list[SimCall]:
    """`n` finished calls that started an hour ago (a backlog to read from the beginning)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    gen = TrafficGenerator(seed, start=start, ring=(0.5, 3), talk=(1, 20), **kw)
    return gen.calls(n, rate=5.0, start=start)


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def history(receiver: Receiver, linkedid: str) -> list[tuple[Any, ...]]:
    """(revision, phase, completion_reason, threads, has queue) of every stored document."""
    return [
        (d.get("revision"), d.get("ship_phase"), d.get("completion_reason"),
         d.get("call_threads_count"), "queue" in d)
        for d in receiver.docs_for(linkedid)
    ]  # fmt: skip


def check_fields(receiver: Receiver, calls: list[SimCall], tz_checked: bool = True) -> None:
    assert receiver.rejects() == []  # every document passed the receiver's schema
    docs = receiver.latest_complete_all()
    assert set(receiver.linkedids()) == {c.expected.linkedid for c in calls}
    for c in calls:
        e = c.expected
        d = docs[e.linkedid]
        assert d["is_complete"] is True
        assert d["disposition"] == e.disposition, (e.scenario, e.linkedid)
        assert d["direction"] == e.direction, (e.scenario, e.linkedid)
        if "answered" in d:
            assert d["answered"] == e.answered, (e.scenario, e.linkedid)
        n_cdr = sum(1 for t in d["call_threads"] if t["event"] == "CDR")
        assert n_cdr == e.cdr_count, (e.scenario, e.linkedid)
        if tz_checked:
            call_time = datetime.fromisoformat(d["call_time"])
            assert abs((call_time - e.start).total_seconds()) < 1.5, (d["call_time"], e.start)
        assert d.get("src_number") == e.src_number, (e.scenario, e.linkedid)
        if e.scenario != "blind_transfer":  # there dst is the transfer target
            assert d.get("dst_number") == e.dst_number, (e.scenario, e.linkedid)
        if e.direction == "i":
            assert d.get("dnid") == e.dst_number, (e.scenario, history(receiver, e.linkedid))
        assert len(d.get("transfers", ())) == e.transfers, (e.scenario, e.linkedid)
        if e.queue:
            assert "queue" in d, (e.linkedid, e.cel_count, history(receiver, e.linkedid))
            assert d["queue"]["name"] == e.queue and d["queue"]["answered_by"] == e.answered_by
        assert d.get("recording_files", []) == [] or e.recording


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_backlog_arrives_complete_once(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """A few hundred calls (PBX in America/Toronto time) arrive complete, once, right."""
    pbx = await make_pbx_db(dialect, timezone="America/Toronto")
    calls = past_calls(250, seed=11, oddities=True)
    await write_calls(pbx.writer, calls)
    agent = start_agent(pbx.settings, receiver.calls_url, tmp_path / "state")
    try:
        ok = await wait_until(all_complete(receiver, calls, state_dir=tmp_path / "state"), 90)
        assert ok, agent.log_tail()
    finally:
        rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0, agent.log_tail()
    check_fields(receiver, calls)
    assert_revisions_once(receiver)
    assert receiver.rejects() == []


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_live_traffic_with_late_cdrs_and_odd_rows(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """Live inserts: CDRs committed 2 s after LINKEDID_END, NULLs, non-UTF-8 names,
    and ids committed out of order (an open transaction holds a lower id)."""
    pbx = await make_pbx_db(dialect)
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state, START_FROM="latest")
    try:
        await wait_anchored(agent, state)  # START_FROM=latest: the tables' end
        start = datetime.now(UTC)
        gen = TrafficGenerator(5, start=start, ring=(0.2, 1), talk=(0.5, 2), oddities=True)
        calls = gen.calls(60, rate=30.0, start=start)
        if dialect != "postgresql":  # a UTF8 PostgreSQL database refuses invalid bytes
            for c in calls[::7]:
                for r in c.cels:
                    if r["cid_name"]:
                        r["cid_name"] = r["cid_name"].encode("utf-8")[:3] + b"\xe9\xff"
        batches = runs(timeline(calls, late_cdr_seconds=2.0))
        held = None
        for i, (kind, rows) in enumerate(batches):
            if i == len(batches) // 3 and dialect != "sqlite":
                # Out-of-order commit: this batch takes lower ids but commits later.
                held = pbx.writer.transaction()
                w = await held.__aenter__()
                await (w.insert_cel(rows) if kind == "cel" else w.insert_cdr(rows))
                continue
            await (pbx.writer.insert_cel(rows) if kind == "cel" else pbx.writer.insert_cdr(rows))
            if i == len(batches) // 3 + 5 and held is not None:
                await asyncio.sleep(1.0)
                await held.__aexit__(None, None, None)
                held = None
        if held is not None:
            await held.__aexit__(None, None, None)
        ok = await wait_until(all_complete(receiver, calls, state_dir=state), timeout=60)
        assert ok, agent.log_tail()
    finally:
        rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0
    check_fields(receiver, calls, tz_checked=False)
    assert_revisions_once(receiver)


@pytest.mark.parametrize("dialect", ("postgresql", "sqlite"))
async def test_kill9_mid_backlog_then_restart_loses_nothing(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """kill -9 twice at random points while the backlog ships, then a last restart: every
    call arrives complete, each Idempotency-Key names one content, revisions 1..n once."""
    seed = int(os.environ.get("KILL_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    pbx = await make_pbx_db(dialect)
    # 2 000 calls: two kills after at most 200 more complete calls and 0.2 s each leave a
    # backlog even when calls complete in bursts of several hundred (a fast, idle machine)
    calls = past_calls(2000, seed=21)
    await write_calls(pbx.writer, calls)
    state = tmp_path / "state"
    note = f"KILL_SEED={seed}"
    for _ in range(2):
        before = receiver.count_complete_calls()
        target = before + rng.randint(20, 200)  # complete calls to wait for, then a random pause
        agent = start_agent(pbx.settings, receiver.calls_url, state)
        try:
            assert await wait_until(lambda t=target: receiver.count_complete_calls() >= t, 60), (
                note,
                agent.log_tail(),
            )
            await asyncio.sleep(rng.uniform(0, 0.2))
        finally:
            await asyncio.to_thread(agent.kill)
        assert agent.proc is not None and agent.proc.returncode == -signal.SIGKILL
        assert receiver.count_complete_calls() < len(calls), (note, "backlog already drained")
    agent = start_agent(pbx.settings, receiver.calls_url, state)
    try:
        ok = await wait_until(all_complete(receiver, calls, state_dir=state), timeout=90)
        assert ok, (note, agent.log_tail())
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    check_fields(receiver, calls, tz_checked=False)
    assert_revisions_once(receiver)
    assert receiver.key_conflicts == [], note  # no key sent twice with different content


async def test_receiver_down_then_back_loses_nothing(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    pbx = await make_pbx_db("sqlite")
    calls = past_calls(150, seed=31)
    await write_calls(pbx.writer, calls)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/mqs/connectors/asterisk/calls"
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, url, state)
    try:
        await asyncio.sleep(4.0)  # documents pile up in the outbox; connections refused
        assert agent.alive(), agent.log_tail()
        r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
        await r.start("127.0.0.1", port)
        try:
            ok = await wait_until(all_complete(r, calls, state_dir=state), timeout=60)
            assert ok, agent.log_tail()
            check_fields(r, calls, tz_checked=False)
            assert_revisions_once(r)
        finally:
            await r.stop()
    finally:
        await asyncio.to_thread(agent.terminate, 15)


async def test_400_dead_letters_one_call_and_the_rest_flows(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("mysql")
    calls = past_calls(60, seed=41)
    bad = calls[17].expected.linkedid
    receiver.set_faults(fail_status=400, fail_linkedid=bad, fail_path="calls")
    await write_calls(pbx.writer, calls)
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state)
    good = [c for c in calls if c.expected.linkedid != bad]
    try:
        ok = await wait_until(all_complete(receiver, good), timeout=60)
        assert await wait_until(lambda: outbox_depth(state) == 0, 30)
        assert ok, agent.log_tail()
        await asyncio.sleep(1.0)
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    assert bad not in receiver.linkedids()
    dead = dead_letters(state)
    assert [d[0] for d in dead] == [bad], dead
    assert dead[0][1] == 400


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_database_connections_killed_mid_run_lose_nothing(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db(dialect)
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state, START_FROM="latest")
    try:
        await wait_anchored(agent, state)  # START_FROM=latest: the tables' end
        start = datetime.now(UTC)
        gen = TrafficGenerator(51, start=start, ring=(0.2, 1), talk=(0.5, 2))
        calls = gen.calls(90, rate=30.0, start=start)
        batches = runs(timeline(calls))
        killed = 0
        for i, (kind, rows) in enumerate(batches):
            await (pbx.writer.insert_cel(rows) if kind == "cel" else pbx.writer.insert_cdr(rows))
            if i % max(1, len(batches) // 4) == 0:
                killed += await pbx.writer.kill_connections(pbx.settings.user)
                await asyncio.sleep(0.3)
        assert killed > 0
        ok = await wait_until(all_complete(receiver, calls, state_dir=state), timeout=90)
        assert ok, agent.log_tail()
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    check_fields(receiver, calls, tz_checked=False)
    assert_revisions_once(receiver)


async def test_sigterm_stops_within_grace(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("sqlite")
    await write_calls(pbx.writer, past_calls(300, seed=61))
    agent = start_agent(pbx.settings, receiver.calls_url, tmp_path / "state")
    await wait_until(lambda: receiver.count_documents() > 0, 30)
    t0 = time.monotonic()
    rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0, agent.log_tail()
    assert time.monotonic() - t0 < 10.5


@pytest.mark.parametrize("mode", ["no_linkedid_end", "cdr_only"])
async def test_idle_timeout_completion(
    mode: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """Stock cel.conf (no LINKEDID_END) and CDR-only installs complete by idle timeout."""
    pbx = await make_pbx_db("sqlite")
    calls = past_calls(40, seed=71, linkedid_end=False)
    await write_calls(pbx.writer, calls)
    extra = {"CALL_IDLE_TIMEOUT": "2"}
    if mode == "cdr_only":
        extra["CEL_MODE"] = ""
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state, **extra)
    try:
        cel = mode != "cdr_only"
        ok = await wait_until(all_complete(receiver, calls, cel=cel, state_dir=state), 60)
        assert ok, agent.log_tail()
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    docs = receiver.latest_complete_all()
    assert set(docs) == {c.expected.linkedid for c in calls}
    for c in calls:
        assert docs[c.expected.linkedid]["disposition"] == c.expected.disposition
    assert_revisions_once(receiver)
