"""StateStore faults on real files: a full filesystem (tmpfs), a corrupt state.db, synchronous."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sipstack_agent.model import CelRow
from sipstack_agent.state import StateCorrupt, StateCorruptExit, StateDiskFull, StateStore

if TYPE_CHECKING:
    from .support.sample import AsteriskSample
    from .support.smallfs import SmallFs


async def _filled_store(path: Path, sample: AsteriskSample) -> None:
    store = await StateStore.open(path)
    try:
        await store.ingest(
            sample.cel_rows("postgres"), sample.cdr_rows("postgres"), {"cel": {"id": 1}}
        )
    finally:
        await store.close()


def _garble(path: Path, first_page: int, pages: int) -> None:
    """Random bytes over whole pages of a real state file (the header page kept)."""
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek(first_page * page)
        f.write(os.urandom(pages * page))


def _batch(rows: list[CelRow], n: int) -> list[CelRow]:
    """The sample's CEL rows as new rows (ids of batch n): each batch adds pages."""
    return [replace(r, row_id=n * 100_000 + i, linkedid=f"{n}.{r.linkedid}")
            for i, r in enumerate(rows)]  # fmt: skip


async def test_disk_full_is_named_rolls_back_and_recovers(
    small_fs: SmallFs, asterisk_sample: AsteriskSample
) -> None:
    """A real 8 MiB tmpfs runs full: StateDiskFull (not a masked ROLLBACK error), the
    batch and its position are not stored, and the same batch goes in once space returns."""
    rows = asterisk_sample.cel_rows("postgres")
    store = await StateStore.open(small_fs.path / "state.db")
    try:
        await store.ingest([], [], {"cel": {"id": 0}})
        filler = small_fs.fill()
        with pytest.raises(StateDiskFull, match="state disk full"):
            for n in range(1, 10_000):  # until the filesystem refuses a write
                await store.ingest(_batch(rows, n), [], {"cel": {"id": n}})
        assert store.disk_full
        stored = (await store.get_position("cel") or {})["id"]
        assert stored == n - 1  # the failed batch's position did not move
        filler.unlink()
        res = await store.ingest(_batch(rows, n), [], {"cel": {"id": n}})
        assert not store.disk_full
        assert res.new_cels == len(_batch(rows, n)) and res.duplicates == 0
        assert await store.get_position("cel") == {"id": n}
    finally:
        await store.close()


@pytest.mark.parametrize(("first_page", "pages"), [(0, 1), (1, 3)], ids=["header", "pages"])
async def test_corrupt_file_is_refused_then_quarantined(
    tmp_path: Path, first_page: int, pages: int, asterisk_sample: AsteriskSample
) -> None:
    path = tmp_path / "state.db"
    await _filled_store(path, asterisk_sample)
    _garble(path, first_page, pages)
    with pytest.raises(StateCorrupt):
        await StateStore.open(path)
    assert path.exists()  # without quarantine_corrupt the file is left alone

    store = await StateStore.open(path, quarantine_corrupt=True)
    try:
        moved = store.quarantined
        assert moved is not None and moved.exists() and moved.name.startswith("state.db.corrupt-")
        assert stat.S_IMODE(moved.stat().st_mode) == 0o600
        assert await store.positions() == {}  # a fresh store
        await store.ingest(asterisk_sample.cel_rows("postgres"), [], {"cel": {"id": 1}})
        assert await store.get_position("cel") == {"id": 1}
    finally:
        await store.close()
    reopened = await StateStore.open(path)  # the fresh file passes quick_check
    try:
        assert reopened.quarantined is None
    finally:
        await reopened.close()


@pytest.mark.parametrize("mode", ["NORMAL", "FULL"])
async def test_synchronous_is_applied(tmp_path: Path, mode: str) -> None:
    store = await StateStore.open(tmp_path / "state.db", synchronous=mode)
    try:
        got = await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()
    assert got == {"NORMAL": 1, "FULL": 2}[mode]


def _garble_table(path: Path, table: str) -> None:
    """Random bytes over the root page of `table` (the header page kept), written behind
    the back of an open store, then a write from a second connection so that the open
    store's next transaction drops its page cache and reads the garbage."""
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    with open(path, "r+b") as f:
        f.seek((root[0] - 1) * page)
        f.write(os.urandom(page))
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO positions (name, value, updated_at) VALUES ('other', '{}', 0)")


async def test_a_page_that_breaks_while_the_store_is_open_stops_the_process(
    tmp_path: Path, asterisk_sample: AsteriskSample
) -> None:
    """Not a stage restarting against the broken file in a loop: StateCorruptExit (a
    SystemExit, exit code 1) once, the file marked, and the next open quarantines it."""
    path = tmp_path / "state.db"
    rows = asterisk_sample.cel_rows("postgres")
    store = await StateStore.open(path)
    try:
        await store.ingest(rows, [], {"cel": {"id": 1}})
        _garble_table(path, "cel")
        with pytest.raises(StateCorruptExit) as caught:
            await store.ingest(_batch(rows, 1), [], {"cel": {"id": 2}})
        assert caught.value.code == 1 and isinstance(caught.value.cause, StateCorrupt)
        assert "malformed" in str(caught.value) or "not a database" in str(caught.value)
        with pytest.raises(StateCorruptExit):  # every later use stops too, nothing stored
            await store.load_calls([rows[0].call_linkedid])
    finally:
        await store.close()
    marker = tmp_path / "state.db.corrupt"
    assert marker.exists() and stat.S_IMODE(marker.stat().st_mode) == 0o600
    with pytest.raises(StateCorrupt, match="broke while in use"):
        await StateStore.open(path)  # even if quick_check passed: the marker decides

    store = await StateStore.open(path, quarantine_corrupt=True)
    try:
        moved = store.quarantined
        assert moved is not None and moved.exists() and not marker.exists()
        reason = moved.with_name(moved.name + ".reason")
        assert "state file corrupt" in reason.read_text()
        assert await store.positions() == {}  # a fresh store: the sources re-read
        assert (await store.ingest(rows, [], {"cel": {"id": 1}})).new_cels == len(rows)
    finally:
        await store.close()


async def test_a_read_only_store_that_meets_a_broken_page_stops_without_marking_it(
    tmp_path: Path, asterisk_sample: AsteriskSample
) -> None:
    """`status` or `dead-letters` beside the agent: exit 1, the agent's file left alone."""
    path = tmp_path / "state.db"
    await _filled_store(path, asterisk_sample)
    store = await StateStore.open_readonly(path)
    try:
        _garble_table(path, "cel")
        with pytest.raises(StateCorruptExit) as caught:
            await store.load_calls([asterisk_sample.cel_rows("postgres")[0].call_linkedid])
        assert caught.value.code == 1
    finally:
        await store.close()
    assert not (tmp_path / "state.db.corrupt").exists()
