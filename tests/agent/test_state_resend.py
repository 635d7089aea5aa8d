"""StateStore.enqueue_resend: the revision a resent call gets, and the cursor saved
in the same transaction."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from sipstack_agent.calls.document import RESEND_STRIDE, resend_revision
from sipstack_agent.state import StateStore


def test_resend_revision_rule() -> None:
    assert resend_revision(3, run=1) == 4
    assert resend_revision(None, run=1) == RESEND_STRIDE + 1
    assert resend_revision(0, run=2) == 2 * RESEND_STRIDE + 1


async def test_a_call_the_store_no_longer_holds_gets_the_runs_revision(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    try:
        doc = {"linkedid": "1700000000.1", "revision": 1, "ship_phase": "complete"}
        cursor = {"resend": {"run": 2, "read_through": "2026-01-01T00:15:00+00:00"}}
        keys = await store.enqueue_resend([doc], cursor, run=2)
        assert keys == [f"pbx1:1700000000.1:{2 * RESEND_STRIDE + 1}"]
        assert await store.get_position("resend") == cursor["resend"]
        [item] = await store.outbox_due(datetime.now(UTC))
        assert item.idempotency_key == keys[0]
        assert item.payload["revision"] == 2 * RESEND_STRIDE + 1
        # the same document again (a page read twice after a kill) is not queued twice
        assert await store.enqueue_resend([doc], cursor, run=2) == keys
    finally:
        await store.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as c:
        rows = c.execute("SELECT payload FROM outbox").fetchall()
    assert [json.loads(p)["revision"] for (p,) in rows] == [2 * RESEND_STRIDE + 1]
