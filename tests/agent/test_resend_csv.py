"""`resend` with CEL_MODE=csv: the real Asterisk 20 cel_custom Master.csv read again
through the live parser; the calls that started in the window reach the state
store's outbox as complete documents, the others do not."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipstack_agent.admin import resend
from sipstack_agent.calls.document import RESEND_STRIDE
from sipstack_agent.config import load_settings
from sipstack_agent.state import StateStore


def first_start(path: Path) -> dict[str, datetime]:
    """linkedid -> the time of its own CHAN_START (the channel that names the call)."""
    out: dict[str, datetime] = {}
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if row[0] == "CHAN_START" and row[14] == row[15]:
                t = datetime.fromisoformat(row[1]).replace(tzinfo=UTC)
                out.setdefault(row[15], t)
    return out


async def test_resend_reads_the_csv_window(asterisk_sample: Any, tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    shutil.copy(asterisk_sample.dir / "csv" / "cel_custom_Master.csv", path)
    starts = first_start(path)
    times = sorted(starts.values())
    since, until = times[1], times[-1]  # the first call and the last one are outside
    settings = load_settings({
        "API_KEY": "sk_" + "a" * 32, "CEL_MODE": "csv", "CEL_CSV_PATH": str(path),
        "DB_TIMEZONE": "UTC", "STATE_DIR": str(tmp_path), "CONNECTOR_ID": "pbx1",
    })  # fmt: skip
    assert not settings.database_enabled
    await (await StateStore.open(tmp_path / "state.db", connector_id="pbx1")).close()

    pages: list[resend.Progress] = []
    done = await resend.resend(
        settings, resend.Window(since, until), on_page=lambda p: pages.append(p)
    )
    assert done.done and pages[-1].sent == done.sent

    store = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    try:
        items = await store.outbox_due(datetime.now(UTC), 1000)
    finally:
        await store.close()
    got = {i.payload["linkedid"] for i in items}
    covered = {
        lid for i in items for lid in (i.payload.get("linkedids") or [i.payload["linkedid"]])
    }
    want = {lid for lid, t in starts.items() if since <= t < until}
    assert want and got <= want <= covered  # merged calls ship under their first linkedid
    assert not covered & {lid for lid, t in starts.items() if not since <= t < until}
    assert done.sent == len(items)
    for i in items:
        doc = i.payload
        assert doc["ship_phase"] == "complete" and doc["is_complete"]
        assert doc["revision"] == RESEND_STRIDE + 1  # the store never held these calls
        assert i.idempotency_key == f"pbx1:{doc['linkedid']}:{doc['revision']}"
        assert any(t["event"] == "CHAN_START" for t in doc["call_threads"])
