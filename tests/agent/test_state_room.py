"""The room the state store keeps for delivering (state/room.py), on the real store:
which writes are refused at which room, the state file's free pages counted as room,
the hysteresis, and the auto reserve. The filesystem's free space is the one input
set by the test (os.statvfs); everything else is SQLite's."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.state import Need, StateDiskFull, StateDiskLow, StateStore
from sipstack_agent.state import room as room_mod
from sipstack_agent.state.room import MB, auto_min_free

from .calls.helpers import Seq
from .calls.live_sequences import commit_order, pickup
from .test_settle_store import _split

FS_SIZE = 1024 * MB


class FakeStatvfs:
    """os.statvfs of the state directory, with `available` bytes left."""

    def __init__(self) -> None:
        self.available = 500 * MB

    def __call__(self, path: str) -> Any:
        frsize = 4096
        return os.statvfs_result(
            (4096, frsize, FS_SIZE // frsize, 0, self.available // frsize, 0, 0, 0, 0, 255)
        )


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStatvfs]:
    fake = FakeStatvfs()
    monkeypatch.setattr(room_mod.os, "statvfs", fake)
    yield fake


def test_auto_keeps_a_tenth_between_32_and_256_mb() -> None:
    assert auto_min_free(64 * MB) == 32 * MB
    assert auto_min_free(8 * MB) == 4 * MB  # never more than half a small volume
    assert auto_min_free(1024 * MB) == int(102.4 * MB)
    assert auto_min_free(100 * 1024 * MB) == 256 * MB


async def test_rows_then_documents_are_refused_deliveries_never(
    tmp_path: Path, disk: FakeStatvfs
) -> None:
    store = await StateStore.open(tmp_path / "state.db", connector_id="t", min_free_mb=10)
    seq = Seq()
    a, b = pickup(seq), pickup(seq, at=100.0)
    now = datetime.now(UTC)
    try:
        await store.ingest(*_split(commit_order(a.cels, a.cdrs)), {})
        keys = await store.due_calls(now + timedelta(hours=1), 10)
        (rec,) = await store.load_calls(keys)
        disk.available = 9 * MB  # below the 10 MB reserve: no new rows
        with pytest.raises(StateDiskLow, match="STATE_MIN_FREE_MB") as e:
            await store.ingest(*_split(commit_order(b.cels, b.cdrs)), {})
        assert isinstance(e.value, StateDiskFull)  # the sources' backpressure path
        assert store.disk_full
        assert "no new rows" in str(e.value) and "9 MB left" in str(e.value)
        assert not await store.has_room(Need.ROWS)
        assert await store.has_room(Need.DOCUMENTS)  # documents may use half the reserve
        ev = _complete_evaluation(rec)
        assert await store.save_evaluations([(rec.call_key, ev)], now=now) == 1
        disk.available = 4 * MB
        assert not await store.has_room(Need.DOCUMENTS)
        (item,) = await store.outbox_due(now + timedelta(hours=1), 10)
        disk.available = 0  # deliveries use the whole reserve
        await store.outbox_delivered([item.id])
        assert await store.outbox_due(now + timedelta(hours=1), 10) == []
        # refused once, rows resume only with 1.5 x their share left: no flapping
        disk.available = 12 * MB
        assert not await store.has_room(Need.ROWS)
        disk.available = 15 * MB
        assert await store.has_room(Need.ROWS)
        await store.ingest(*_split(commit_order(b.cels, b.cdrs)), {})
        disk.available = 12 * MB
        assert await store.has_room(Need.ROWS)  # not refused since: the plain share
    finally:
        await store.close()


async def test_the_state_files_free_pages_count_as_room(tmp_path: Path, disk: FakeStatvfs) -> None:
    """Deleted rows' pages are reused before the file grows, and SQLite never returns
    them to the filesystem: an outbox drained on a full disk makes room inside the file."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path, connector_id="t", min_free_mb=10)
    try:
        disk.available = 4 * MB
        assert not await store.has_room(Need.ROWS)
        with closing(sqlite3.connect(path)) as c:  # 8 MB of pages, then freed
            c.execute("CREATE TABLE filler (b BLOB)")
            c.executemany("INSERT INTO filler VALUES (?)", [(b"\0" * 65536,) for _ in range(128)])
            c.commit()
            c.execute("DROP TABLE filler")
            c.commit()
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert await store.has_room(Need.ROWS) is False  # 4 + 8 < 1.5 x 10 after a refusal
        disk.available = 8 * MB
        assert await store.has_room(Need.ROWS)  # 8 MB free + 8 MB of free pages
    finally:
        await store.close()


async def test_zero_keeps_no_reserve_and_other_openers_keep_none(
    tmp_path: Path, disk: FakeStatvfs
) -> None:
    disk.available = 0
    for kw in ({"min_free_mb": 0}, {}):
        store = await StateStore.open(tmp_path / f"s{len(kw)}.db", connector_id="t", **kw)
        try:
            assert store.room is None and await store.has_room(Need.ROWS)
        finally:
            await store.close()


def _complete_evaluation(rec: Any) -> Any:
    from sipstack_agent.calls import evaluate
    from sipstack_agent.config import CallSettings, Identity

    return evaluate(
        rec.cels,
        rec.cdrs,
        rec.recordings,
        rec.ship,
        call_key=rec.call_key,
        now=datetime.now(UTC) + timedelta(hours=1),
        settings=CallSettings(),
        identity=Identity(connector_id="t", version="0"),
    )
