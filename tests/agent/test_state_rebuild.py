"""A store rebuilt after a quarantine (a real state.db with garbage over its pages, or
one marked corrupt at runtime) issues revisions above a floor above any the old file
may have issued: a call re-read from the PBX never reuses an Idempotency-Key, rebuild
after rebuild. The real store and the real call core (`Agent.evaluate_keys`)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sipstack_agent.app import Agent
from sipstack_agent.calls.document import REBUILD_SPAN, RESEND_STRIDE
from sipstack_agent.config import Identity, Settings
from sipstack_agent.state import StateStore
from sipstack_agent.state.floor import floor_file

from .calls.helpers import Seq
from .calls.live_sequences import LiveCall, pickup


def _garble(path: Path) -> None:
    """Random bytes over pages 1-3 of a real state file (the header page kept)."""
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek(page)
        f.write(os.urandom(3 * page))


async def _ship(store: StateStore, now: datetime) -> list[dict[str, Any]]:
    """Evaluate the due calls and deliver what they queued (the payloads)."""
    agent = _agent(Path(store.path).parent)
    agent.store = store
    await agent.evaluate_keys(await store.due_calls(now, 100), now)
    items = await store.outbox_due(now + timedelta(days=30), 1000, kind="call")
    if items:
        await store.outbox_delivered([i.id for i in items])
    return [i.payload for i in items]


def _agent(tmp_path: Path) -> Agent:
    return Agent(replace(Settings(), state_dir=str(tmp_path), identity=Identity(connector_id="t")))


async def _rebuild_and_ship(
    path: Path, call: LiveCall, now: datetime
) -> tuple[int, list[dict[str, Any]]]:
    store = await StateStore.open(path, connector_id="t", quarantine_corrupt=True)
    try:
        assert store.quarantined is not None
        await store.ingest(call.cels, call.cdrs, {})  # the PBX tables read again
        return store.revision_floor, await _ship(store, now)
    finally:
        await store.close()


async def test_a_rebuilt_store_ships_above_a_floor_rebuild_after_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    call = pickup(Seq())
    now = call.last_cel_at + timedelta(hours=1)
    store = await StateStore.open(path, connector_id="t")
    try:
        assert store.revision_floor == 0  # never rebuilt: revisions 1, 2, ...
        await store.ingest([], call.cdrs, {})  # the CDR rows first: a partial revision 1
        partial = await _ship(store, now)
        assert partial and {d["revision"] for d in partial} == {1}
        assert all(t["event"] == "CDR" for d in partial for t in d["call_threads"])
    finally:
        await store.close()
    sent = {(d["linkedid"], d["revision"]) for d in partial}

    floors: list[int] = []
    for _ in range(2):  # garbage over the file, then again over the rebuilt one
        _garble(path)
        floor, docs = await _rebuild_and_ship(path, call, now)
        assert floor > max(floors, default=0) + RESEND_STRIDE
        assert floor == int(Path(floor_file(str(path))).read_text())
        assert docs and min(d["revision"] for d in docs) == floor + 1
        assert all(d["revision"] < floor + RESEND_STRIDE for d in docs)
        keys = {(d["linkedid"], d["revision"]) for d in docs}
        assert not keys & sent  # no Idempotency-Key the old files used
        # the full document this time: CEL events and CDR rows
        assert any(t["event"] != "CDR" for d in docs for t in d["call_threads"])
        sent |= keys
        floors.append(floor)
    assert floors[1] >= floors[0] + REBUILD_SPAN  # `.floor` counts, whatever the clock


async def test_the_runtime_marker_path_rebuilds_above_the_floor_too(tmp_path: Path) -> None:
    """A file marked corrupt at runtime (`state.db.corrupt`) passes quick_check but is
    quarantined at the next open: the same floor."""
    path = tmp_path / "state.db"
    call = pickup(Seq())
    now = call.last_cel_at + timedelta(hours=1)
    store = await StateStore.open(path, connector_id="t")
    await store.ingest([], call.cdrs, {})
    await _ship(store, now)
    await store.close()
    Path(f"{path}.corrupt").write_text("2026-12-01T10:00:00+00:00 state file corrupt\n")
    floor, docs = await _rebuild_and_ship(path, call, now)
    assert floor > RESEND_STRIDE and min(d["revision"] for d in docs) == floor + 1


async def test_the_floor_is_kept_across_restarts_and_adopted_after_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path, connector_id="t")
    await store.ingest([], [], {"cel": {"id": 1}})
    await store.close()
    _garble(path)
    store = await StateStore.open(path, connector_id="t", quarantine_corrupt=True)
    floor = store.revision_floor
    await store.close()
    store = await StateStore.open(path, connector_id="t")  # a plain restart keeps it
    assert store.revision_floor == floor
    await store.close()
    # killed after `.floor` was written and the file moved, before the new file's meta:
    # the fresh file adopts the floor beside it (and stores it)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    store = await StateStore.open(path, connector_id="t")
    assert store.revision_floor == floor
    await store.close()
    with sqlite3.connect(path) as c:
        (value,) = c.execute("SELECT value FROM meta WHERE name = 'revision_floor'").fetchone()
    assert int(value) == floor


async def test_resend_and_dead_letter_retry_stay_above_the_floor(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    call = pickup(Seq())
    now = call.last_cel_at + timedelta(hours=1)
    store = await StateStore.open(path, connector_id="t")
    await store.close()
    _garble(path)
    store = await StateStore.open(path, connector_id="t", quarantine_corrupt=True)
    try:
        floor = store.revision_floor
        assert floor > 0
        # resend of a call the rebuilt store never held: above its live revisions
        doc = {"linkedid": "1700000000.1", "revision": 1, "ship_phase": "complete"}
        keys = await store.enqueue_resend([doc], {}, run=1)
        assert keys == [f"t:1700000000.1:{floor + RESEND_STRIDE + 1}"]
        # a live document refused for good, retried: the call's next revision
        agent = _agent(tmp_path)
        agent.store = store
        await store.ingest(call.cels, call.cdrs, {})
        await agent.evaluate_keys(await store.due_calls(now, 100), now)
        items = [i for i in await store.outbox_due(now + timedelta(days=30), 100, kind="call")
                 if i.payload["linkedid"] == call.key]  # fmt: skip
        assert items and items[-1].payload["revision"] == floor + 1
        assert await store.outbox_dead(items[-1].id, 422, "no", "rejected")
        [(_, key)] = await store.requeue_dead_letters()
        assert key == f"t:{call.key}:{floor + 2}"
    finally:
        await store.close()
