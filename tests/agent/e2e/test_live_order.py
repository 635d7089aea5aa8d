"""The whole agent (`sipstack-agent run`) on rows that arrive live, in Asterisk's order
and pace, and on a backlog read from the beginning: one call, one document.

Live: the real Asterisk sample plus a group pickup and an attended transfer are
replayed into a real PostgreSQL / SQLite PBX database at 10x their recorded
pace (support/live_writer.py), while the agent reads them as a SELECT-only user and
ships to the local receiver; the agent's idle timeout is scaled the same way
(3 s for 30 s), so the picker's and the transfer target's own linkedid, which
get LINKEDID_END while their channel is still up, sit idle "30 s" before the
channel's last rows arrive under the caller's linkedid.

Backlog: hundreds of finished calls in the tables, the agent started with
START_FROM=beginning and small pages, so the CDR poller runs far ahead of the
CEL poller (the CEL table has ~15 rows per call, the CDR table 1-3).

Both: every call arrives exactly once, as revision 1, complete, with all of
its CEL rows and CDR rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.calls import linkedid_sort_key
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline

from ..calls.helpers import Seq
from ..calls.live_sequences import LiveCall, assert_whole, attended_transfer, calls_of, pickup
from ..support.live_writer import replay, schedule
from ..support.sample import sample_cdr_rows, sample_cel_rows
from .helpers import API_KEY, outbox_depth, runs, start_agent, wait_anchored, wait_until
from .test_e2e import past_calls

pytestmark = pytest.mark.timeout(240)

SPEED = 10.0


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def assert_once_whole(receiver: Receiver, calls: list[LiveCall]) -> None:
    """Exactly one document per call: revision 1, complete, every CEL and CDR row."""
    assert receiver.rejects() == []
    got = [(r["linkedid"], r["revision"], r["ship_phase"]) for r in receiver.receipts()]
    assert sorted(got) == sorted((c.key, 1, "complete") for c in calls)
    for c in calls:
        (doc,) = receiver.docs_for(c.key)
        assert doc["linkedids"] == sorted(c.linkedids, key=linkedid_sort_key)
        assert_whole(doc, c)


def _all_arrived(receiver: Receiver, calls: list[LiveCall], state: Path) -> Callable[[], bool]:
    keys = {c.key for c in calls}

    def pred() -> bool:
        return keys <= set(receiver.latest_complete_all()) and outbox_depth(state) == 0

    return pred


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_live_pickup_and_transfer_replayed_at_pace(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db(dialect)
    sample_cels, sample_cdrs = sample_cel_rows("postgres"), sample_cdr_rows("postgres")
    s = Seq()
    picked, moved = pickup(s, at=0), attended_transfer(s, at=200)
    calls = [*calls_of(sample_cels, sample_cdrs), picked, moved]
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings,
        receiver.calls_url,
        state,
        START_FROM="latest",
        CALL_IDLE_TIMEOUT=str(30 / SPEED),
    )
    try:
        await wait_anchored(agent, state)  # START_FROM=latest: the tables' end
        start = datetime.now(UTC) + timedelta(seconds=0.2)
        writes = schedule(
            [(0.0, [*sample_cels, *sample_cdrs]), (20.0, [*picked.cels, *picked.cdrs]),
             (25.0, [*moved.cels, *moved.cdrs])],
            start=start,
            speed=SPEED,
        )  # fmt: skip
        await replay(pbx.writer, writes, start=start)
        ok = await wait_until(_all_arrived(receiver, calls, state), timeout=60)
        assert ok, agent.log_tail()
        # one more idle timeout: a document that would still come (a second revision,
        # a linkedid shipped on its own) has had its chance
        await asyncio.sleep(2 * 30 / SPEED)
    finally:
        rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0, agent.log_tail()
    assert outbox_depth(state) == 0
    assert_once_whole(receiver, calls)
    for c in (picked, moved):
        (doc,) = receiver.docs_for(c.key)
        assert doc["completion_reason"] == "linkedid_end"
        assert len(doc["linkedids"]) == 2


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
async def test_backlog_from_the_beginning_ships_each_call_once_whole(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db(dialect)
    sims = past_calls(300, seed=23)  # an hour ago, 5 calls/s
    # pickups and attended transfers among them; the tables in commit order, as a PBX has them
    s = Seq(t0=sims[0].expected.start + timedelta(seconds=20))
    extra = [f(s, at=i * 6.0) for i in range(4) for f in (pickup, attended_transfer)]
    writes = sorted(
        [*timeline(sims), *schedule([(0.0, [*s.rows, *s.cdrs])], start=s.t0, speed=1.0)],
        key=lambda w: w.at,
    )
    for kind, rows in runs(writes):
        await (pbx.writer.insert_cel(rows) if kind == "cel" else pbx.writer.insert_cdr(rows))
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings,
        receiver.calls_url,
        state,
        START_FROM="beginning",
        CDR_BATCH_SIZE="100",
        MAX_RECORDS_PER_POLL="200",
    )
    try:
        expected = {c.expected.linkedid for c in sims} | {c.key for c in extra}
        ok = await wait_until(
            lambda: expected <= set(receiver.latest_complete_all()) and outbox_depth(state) == 0,
            timeout=150,
        )
        assert ok, agent.log_tail()
    finally:
        rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0, agent.log_tail()
    assert receiver.rejects() == []
    receipts = receiver.receipts()
    assert len(receipts) == len(expected), sorted(
        (r["linkedid"], r["revision"]) for r in receipts if r["revision"] != 1
    )
    assert {(r["linkedid"], r["revision"], r["ship_phase"]) for r in receipts} == {
        (k, 1, "complete") for k in expected
    }
    for sim in sims:
        (doc,) = receiver.docs_for(sim.expected.linkedid)
        events = [t["event"] for t in doc["call_threads"]]
        assert events.count("CDR") == sim.expected.cdr_count, sim.expected.linkedid
        cel_events = {r["eventtype"] for r in sim.cels} & set(events)
        assert "LINKEDID_END" in cel_events, sim.expected.linkedid  # CEL rows, to the end
    for c in extra:
        (doc,) = receiver.docs_for(c.key)
        assert_whole(doc, c)
