"""`resend` with CEL_MODE=csv: the real Asterisk 20 cel_custom Master.csv read again
through the live parser; the calls that started in the window reach the state
store's outbox as complete documents, the others do not."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
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

    sent: list[int] = []
    done = await resend.resend(
        settings, resend.Window(since, until), on_page=lambda p: sent.append(p.sent)
    )
    assert done.done and sent == sorted(sent) and sent[-1] == done.sent > 0

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


async def test_since_alone_resumes_the_unfinished_window(
    asterisk_sample: Any, tmp_path: Path
) -> None:
    """`resend --since T` (no --until: now) interrupted, then `--since T` again: it goes
    on with the first window (its end, its run, its cursor) instead of starting over."""
    path = tmp_path / "Master.csv"
    shutil.copy(asterisk_sample.dir / "csv" / "cel_custom_Master.csv", path)
    since = min(first_start(path).values()) - timedelta(minutes=20)
    settings = load_settings({
        "API_KEY": "sk_" + "a" * 32, "CEL_MODE": "csv", "CEL_CSV_PATH": str(path),
        "DB_TIMEZONE": "UTC", "STATE_DIR": str(tmp_path), "CONNECTOR_ID": "pbx1",
    })  # fmt: skip
    await (await StateStore.open(tmp_path / "state.db", connector_id="pbx1")).close()
    end = since + timedelta(hours=2)

    class Stop(Exception):
        pass

    def stop(p: resend.Progress) -> None:
        raise Stop(p.read_through)

    with pytest.raises(Stop) as first:
        await resend.resend(settings, resend.Window(since, end, open_end=True), on_page=stop)
    later = resend.Window(since, end + timedelta(hours=5), open_end=True)
    pages: list[datetime] = []
    done = await resend.resend(settings, later, on_page=lambda p: pages.append(p.read_through))
    assert done.window.until == end and done.run == 1 and done.done
    assert pages[0] == first.value.args[0] + resend.PAGE
    # a finished window: the same command starts a new run with the new end
    again = await resend.resend(settings, later)
    assert again.window.until == later.until and again.run == 2
