"""Tombstones: a delivered call that was pruned is not shipped again when its rows are
read again (overlap, restart, CSV from 0); a genuinely new row continues its revisions.

The real store and the real call core (`Agent.evaluate_keys`), no PBX, no process.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sipstack_agent.app import Agent
from sipstack_agent.config import Identity, Settings
from sipstack_agent.state import StateStore

from .calls.helpers import Seq
from .calls.live_sequences import LiveCall, pickup


async def _deliver_all(store: StateStore, now: datetime) -> list[dict[str, Any]]:
    items = await store.outbox_due(now + timedelta(days=30), 1000, kind="call")
    if items:
        await store.outbox_delivered([i.id for i in items])
    return [i.payload for i in items]


async def _ship(agent: Agent, store: StateStore, now: datetime) -> list[dict[str, Any]]:
    await agent.evaluate_keys(await store.due_calls(now, 100), now)
    return await _deliver_all(store, now)


async def _delivered_and_pruned(tmp_path: Path) -> tuple[Agent, StateStore, LiveCall, datetime]:
    agent = Agent(replace(Settings(), state_dir=str(tmp_path), identity=Identity(connector_id="t")))
    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    agent.store = store
    call = pickup(Seq())
    now = call.last_cel_at + timedelta(hours=1)
    await store.ingest(call.cels, call.cdrs, {})
    (doc,) = await _ship(agent, store, now)
    assert (doc["linkedid"], doc["revision"], doc["ship_phase"]) == (call.key, 1, "complete")
    res = await store.prune(now + timedelta(hours=2), keep_closed_for=3600.0)
    assert res.calls == 1 and res.cel_rows == len(call.cels)
    return agent, store, call, now + timedelta(hours=2)


async def test_reread_of_a_pruned_delivered_call_ships_nothing(tmp_path: Path) -> None:
    agent, store, call, now = await _delivered_and_pruned(tmp_path)
    try:
        res = await store.ingest(call.cels, call.cdrs, {})  # the same rows, read again
        assert (res.new_cels, res.new_cdrs) == (0, 0)
        assert res.duplicates == len(call.cels) + len(call.cdrs)
        assert await _ship(agent, store, now) == []
        assert await store.find_call(call.key) is None
    finally:
        await store.close()


async def test_a_new_row_after_prune_continues_the_revisions(tmp_path: Path) -> None:
    agent, store, call, now = await _delivered_and_pruned(tmp_path)
    try:
        late = replace(call.cdrs[-1], row_id=9_999, userfield="late")
        res = await store.ingest([], [late], {})
        assert res.new_cdrs == 1
        docs = await _ship(agent, store, now)
        assert [(d["linkedid"], d["revision"]) for d in docs] == [(call.key, 2)]
    finally:
        await store.close()


async def test_expired_tombstones_forget_the_call(tmp_path: Path) -> None:
    """Past keep_delivered_for the store remembers nothing (and the re-read ships again)."""
    agent, store, call, now = await _delivered_and_pruned(tmp_path)
    try:
        res = await store.prune(now + timedelta(days=8), keep_delivered_for=7 * 86400.0)
        assert res.tombstones_expired == len({r.call_linkedid for r in call.cels})
        await store.ingest(call.cels, call.cdrs, {})
        docs = await _ship(agent, store, now + timedelta(days=8))
        assert [(d["linkedid"], d["revision"]) for d in docs] == [(call.key, 1)]
    finally:
        await store.close()
