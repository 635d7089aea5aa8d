"""The agent process with default settings (DB_TIMEZONE unset = auto) on a PBX whose
PostgreSQL database is set to Los Angeles time and holds local times, rows written
live at Asterisk's pace: every call ships once, complete, with the right call_time,
and none is force-completed for looking 8 hours old."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import Write, timeline
from sipstack_agent.sim.traffic import TrafficGenerator

from ..support.servers import ServerDb, pg_zone
from .helpers import all_complete, assert_revisions_once, start_agent, wait_anchored, wait_until
from .test_e2e import check_fields, receiver

__all__ = ["receiver"]

pytestmark = pytest.mark.timeout(180)


async def write_at_their_times(writer: Any, writes: list[Write]) -> None:
    """Each row committed when Asterisk would commit it (its `at`, on the wall clock)."""
    for w in writes:
        delay = (w.at - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        await (writer.insert_cel([w.row]) if w.kind == "cel" else writer.insert_cdr([w.row]))


async def test_local_time_postgresql_pbx_with_default_settings(
    make_pbx_db: Callable[..., Awaitable[Any]],
    pg_database: ServerDb,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="America/Los_Angeles")  # rows in LA time
    state = tmp_path / "state"
    async with pg_zone(pg_database, "America/Los_Angeles"):
        agent = start_agent(
            replace(pbx.settings, timezone="auto"), receiver.calls_url, state, START_FROM="latest"
        )
        try:
            await wait_anchored(agent, state)  # START_FROM=latest: the tables' end
            start = datetime.now(UTC) + timedelta(seconds=0.5)
            gen = TrafficGenerator(3, start=start, ring=(0.3, 1.5), talk=(0.5, 3))
            calls = gen.calls(12, rate=3.0, start=start)
            await write_at_their_times(pbx.writer, timeline(calls))
            ok = await wait_until(all_complete(receiver, calls, state_dir=state), timeout=60)
            assert ok, agent.log_tail()
        finally:
            rc = await asyncio.to_thread(agent.terminate, 15)
    assert rc == 0, agent.log_tail()
    check_fields(receiver, calls)  # call_time within 1.5 s of the call's real start
    assert_revisions_once(receiver)
    for c in calls:
        docs = receiver.docs_for(c.expected.linkedid)
        # (a CDR committed after LINKEDID_END may still give a second complete revision:
        # the per-source watermark of issue 10 part 2, not the zone)
        for d in docs:
            assert d.get("completion_reason") in (None, "linkedid_end"), d["revision"]
            assert "force_completed" not in d
            assert (d["timezone"], d["timezone_source"]) == ("America/Los_Angeles", "database")
    log = Path(agent.log_path).read_text(encoding="utf-8")
    assert "PBX time zone: America/Los_Angeles (database: PostgreSQL TimeZone)" in log
    assert "set DB_TIMEZONE" not in log
