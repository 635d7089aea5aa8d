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
from sipstack_agent.state import StateCorrupt, StateDiskFull, StateStore

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
