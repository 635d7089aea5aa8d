"""The agent hands the AMI source's recorded gaps to the call core."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sipstack_agent.app import Agent
from sipstack_agent.config import Settings
from sipstack_agent.sources.cel_ami import GAPS_POSITION, Gap
from sipstack_agent.state import StateStore

from .calls.test_gaps import CELS, LID, T0, cdr


async def _outbox_docs(store: StateStore, now):
    return [item.payload for item in await store.outbox_due(now, 100, kind="call")]


async def test_gap_from_the_store_flags_and_completes_the_call(tmp_path) -> None:
    settings = replace(Settings(), cel_mode="ami", state_dir=str(tmp_path))
    agent = Agent(settings)
    store = await StateStore.open(str(tmp_path / "state.db"), connector_id="t")
    agent.store = store
    try:
        gap = Gap(T0 + timedelta(seconds=5), T0 + timedelta(seconds=60), "connection lost")
        await store.set_position(GAPS_POSITION, {"gaps": [gap.as_json()]})
        await store.ingest(CELS, [cdr()], {})
        now = T0 + timedelta(minutes=5)
        await agent.evaluate_keys([LID], now)
        docs = await _outbox_docs(store, now)
        assert [d["ship_phase"] for d in docs] == ["complete"]
        assert docs[0]["gap"] is True
        assert docs[0]["linkedid"] == LID
    finally:
        await store.close()


async def test_without_ami_the_gap_position_is_ignored(tmp_path) -> None:
    settings = replace(Settings(), cel_mode="db", state_dir=str(tmp_path))
    agent = Agent(settings)
    store = await StateStore.open(str(tmp_path / "state.db"), connector_id="t")
    agent.store = store
    try:
        gap = Gap(T0 + timedelta(seconds=5), None, "connection lost")
        await store.set_position(GAPS_POSITION, {"gaps": [gap.as_json()]})
        assert await agent._cel_gaps() == []
    finally:
        await store.close()
