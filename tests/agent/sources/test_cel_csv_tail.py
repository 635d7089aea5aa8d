"""CelCsvSource against files written the way Asterisk's cel_custom writes them.

Every test uses the real StateStore; rows are identified by a sequence number
written into appdata, so "every row arrives once" is checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import stat
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import CsvSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.sources.cel_csv import CelCsvSource, check_csv
from sipstack_agent.state import StateStore, stored_cel

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)
NAMES = ["John Smith", "Smith, John", 'Bob "the builder"', "José Núñez", "Zoë", ""]


def cel_line(n: int, *, latin1: bool = False, multiline: bool = False) -> bytes:
    """One realistic cel_custom record (CSV_QUOTE on every column) carrying seq n."""
    t = T0 + timedelta(milliseconds=37 * n)
    name = NAMES[n % len(NAMES)]
    call = n // 12
    extra = '{"bridge_id":"b-' + str(call) + '","bridge_technology":"simple_bridge"}'
    if multiline:
        extra = '{"note":"first line\nsecond, line"}'
    values = [
        ["CHAN_START", "APP_START", "ANSWER", "BRIDGE_ENTER", "HANGUP", "CHAN_END"][n % 6],
        t.strftime("%Y-%m-%d %H:%M:%S.%f"),
        name,
        "4085551234",
        "4085551234",
        "",
        "4155551000",
        "4155551000",
        "from-pstn",
        f"SIP/pstn-in-{call:08x}",
        "Dial",
        f"SIP/101,20,tT,seq={n}",
        "3",
        "",
        f"1795495160.{call}",
        f"1795495160.{call}",
        "",
        "",
        extra,
    ]
    text = ",".join('"' + v.replace('"', '""') + '"' for v in values) + "\n"
    if latin1 and name.isascii() is False and all(ord(c) < 256 for c in name):
        return text.encode("latin-1")
    return text.encode("utf-8")


class AsteriskWriter:
    """Appends records like cel_custom (open, append, close per event) and rotates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rotations = 0
        self.partial: bytes = b""

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(data)

    def write(self, line: bytes, split_at: int | None = None) -> None:
        if split_at is None:
            self.append(line)
        else:
            self.append(line[:split_at])
            self.partial = line[split_at:]

    def finish_partial(self) -> None:
        if self.partial:
            self.append(self.partial)
            self.partial = b""

    def rotate_rename(self) -> None:
        self.rotations += 1
        os.rename(self.path, f"{self.path}.{self.rotations}")

    def rotate_copytruncate(self) -> None:
        self.rotations += 1
        shutil.copyfile(self.path, f"{self.path}.{self.rotations}")
        with open(self.path, "r+b") as fh:
            fh.truncate(0)


class CountingStore:
    """The real store, counting what ingest reports (duplicates must stay 0)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.duplicates = 0
        self.ingests = 0
        self.after_ingest: Any = None

    async def ingest(self, cels=(), cdrs=(), positions=None):
        res = await self.store.ingest(cels, cdrs, positions)
        self.duplicates += res.duplicates
        self.ingests += 1
        if self.after_ingest is not None:
            self.after_ingest()
        return res

    async def get_position(self, name):
        return await self.store.get_position(name)

    async def set_position(self, name, value):
        await self.store.set_position(name, value)


def stored_seqs(db_path: Path) -> Counter[int]:
    con = sqlite3.connect(db_path)
    try:
        out: Counter[int] = Counter()
        for (data,) in con.execute("SELECT data FROM cel"):
            appdata = stored_cel(data).appdata
            if "seq=" in appdata:
                out[int(appdata.rsplit("seq=", 1)[1])] += 1
        return out
    finally:
        con.close()


@pytest.fixture
async def store(tmp_path):
    s = await StateStore.open(tmp_path / "state" / "state.db")
    yield CountingStore(s)
    await s.close()


def source(tmp_path: Path, store: Any, **kw: Any) -> CelCsvSource:
    kw.setdefault("start_from", "beginning")
    kw.setdefault("quarantine_dir", str(tmp_path / "state" / "quarantine"))
    return CelCsvSource(
        CsvSettings(path=str(tmp_path / "Master.csv"), poll_interval=0.005),
        store,
        Metrics(),
        "UTC",
        **kw,
    )


async def test_reads_whole_records_and_stores_the_position(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    assert await src.poll_once() == 0 and src.state == "waiting_for_file"
    lines = [cel_line(i) for i in range(5)]
    for line in lines[:4]:
        w.write(line)
    w.write(lines[4], split_at=30)
    assert await src.poll_once() == 4
    pos = await store.get_position("cel_csv")
    assert pos["offset"] == sum(map(len, lines[:4]))
    st = os.stat(w.path)
    assert (pos["dev"], pos["ino"]) == (st.st_dev, st.st_ino)
    w.finish_partial()
    assert await src.poll_once() == 1
    assert stored_seqs(store.store.path) == Counter(range(5))
    assert src.metrics.cels_processed.labels(source="csv")._value.get() == 5


async def test_start_from_latest_skips_history(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    for i in range(3):
        w.write(cel_line(i))
    w.write(cel_line(3), split_at=10)
    src = source(tmp_path, store, start_from="latest")
    assert await src.poll_once() == 0
    w.finish_partial()  # a record being written at start-up is read once complete
    w.write(cel_line(4))
    await src.poll_once()
    got = stored_seqs(store.store.path)
    assert 4 in got and not {0, 1, 2} & set(got)


async def test_restart_resumes_at_the_exact_offset(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    n = 6000  # ~ 1.5 MB: several chunks
    w.append(b"".join(cel_line(i) for i in range(n)))
    stop = asyncio.Event()
    store.after_ingest = stop.set  # stop after the first chunk is committed
    src = source(tmp_path, store)
    await src.poll_once(stop)
    first = await store.get_position("cel_csv")
    assert 0 < first["offset"] < os.path.getsize(w.path)
    src.close()
    store.after_ingest = None
    seqs = stored_seqs(store.store.path)
    assert seqs and max(seqs.values()) == 1
    # the offset is exactly the end of the last stored record
    assert first["offset"] == sum(len(cel_line(i)) for i in range(len(seqs)))
    src2 = source(tmp_path, store)
    await src2.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(n))
    assert store.duplicates == 0
    assert (await store.get_position("cel_csv"))["offset"] == os.path.getsize(w.path)


async def test_rename_rotation_drains_the_old_file_first(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    w.write(cel_line(0))
    await src.poll_once()
    w.write(cel_line(1))
    w.write(cel_line(2), split_at=40)  # a record still being written at rotation time
    w.finish_partial()
    w.rotate_rename()
    w.write(cel_line(3))
    await src.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(4))
    assert src.rotations["rename"] == 1
    pos = await store.get_position("cel_csv")
    assert pos["ino"] == os.stat(w.path).st_ino and pos["offset"] == len(cel_line(3))


async def test_rotation_while_stopped_finds_the_old_file_by_inode(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    w.write(cel_line(0))
    await src.poll_once()
    src.close()
    w.write(cel_line(1))  # written before the rotation, never read
    w.rotate_rename()
    w.write(cel_line(2))
    src2 = source(tmp_path, store)
    await src2.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(3))


async def test_copytruncate_is_detected_and_the_copy_drained(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    for i in range(3):
        w.write(cel_line(i))
    await src.poll_once()
    w.write(cel_line(3))  # not read yet when logrotate copies and truncates
    w.rotate_copytruncate()
    await src.poll_once()
    assert src.rotations["truncate"] == 1
    # the file grows again past the old offset before the next poll: still detected (head)
    for i in range(4, 12):
        w.write(cel_line(i))
    await src.poll_once()
    w.rotate_copytruncate()
    for i in range(12, 30):
        w.write(cel_line(i))
    await src.poll_once()
    assert src.rotations["truncate"] == 2
    assert stored_seqs(store.store.path) == Counter(range(30))
    assert store.duplicates == 0


async def test_malformed_lines_are_quarantined_and_the_stream_goes_on(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    w.write(cel_line(0))
    bad1 = b'"CHAN_START","not-a-time","x"\n'
    w.append(bad1)
    w.write(cel_line(1))
    w.append(b'"BROKEN","2026-11-24 04:39:20","unterminated\n')
    w.write(cel_line(2))
    await src.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(3))
    qfile = tmp_path / "state" / "quarantine" / "cel_csv.jsonl"
    entries = [json.loads(x) for x in qfile.read_text().splitlines()]
    assert [e["offset"] for e in entries] == [
        len(cel_line(0)),
        len(cel_line(0)) + len(bad1) + len(cel_line(1)),
    ]
    assert all(e["reason"] for e in entries)
    assert src.metrics.csv_quarantined._value.get() == 2
    assert stat.S_IMODE(qfile.stat().st_mode) == 0o600  # raw CEL: personal data


async def test_stale_unfinished_tail_is_finally_taken(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store, stale_after=0.0)
    w.write(cel_line(0))
    w.append(cel_line(1)[:-1])  # the writer died before the newline
    await src.poll_once()  # first sight of the unfinished tail
    await src.poll_once()  # unchanged since: taken as final
    assert stored_seqs(store.store.path) == Counter(range(2))


async def test_every_row_once_with_rotations_partials_restarts(tmp_path, store):
    """Random but reproducible interleaving of an Asterisk-like writer and the source."""
    rnd = random.Random(20261124)
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    n = 0
    garbage = 0
    polled_since_rotation = True
    for _step in range(700):
        r = rnd.random()
        if r < 0.55:
            line = cel_line(n, latin1=rnd.random() < 0.1, multiline=rnd.random() < 0.05)
            n += 1
            if rnd.random() < 0.15:
                w.write(line, split_at=rnd.randrange(1, len(line)))
                await src.poll_once()
                w.finish_partial()
            else:
                w.write(line)
        elif r < 0.57:
            w.append(b'"GARBAGE","???"\n')
            garbage += 1
        elif r < 0.80:
            await src.poll_once()
            polled_since_rotation = True
        elif r < 0.85 and polled_since_rotation and w.path.exists():
            w.rotate_rename()
            polled_since_rotation = False
        elif r < 0.90 and polled_since_rotation and w.path.exists():
            # logrotate copytruncate; the source may be a few records behind. (It must have
            # seen the file's first bytes once: a file filled and truncated entirely between
            # two polls is only in the copy, which nothing can tell apart from an old file.)
            w.write(cel_line(n))
            n += 1
            await src.poll_once()
            for _ in range(rnd.randrange(0, 3)):
                w.write(cel_line(n))
                n += 1
            w.rotate_copytruncate()
            polled_since_rotation = False
        elif r < 0.95:
            src.close()  # agent restart (kill -9 between two polls)
            src = source(tmp_path, store)
    await src.poll_once()
    await src.poll_once()
    assert w.rotations > 10
    assert stored_seqs(store.store.path) == Counter(range(n))
    assert store.duplicates == 0
    qfile = tmp_path / "state" / "quarantine" / "cel_csv.jsonl"
    # a quarantined line may be seen again after a restart (it is logged, never stored twice)
    assert garbage == 0 or len(qfile.read_text().splitlines()) >= garbage


async def test_run_with_a_concurrent_writer(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    src = source(tmp_path, store)
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))

    async def caught_up() -> None:
        while True:
            pos = src.position()
            if pos and w.path.exists() and pos["offset"] == os.path.getsize(w.path):
                st = os.stat(w.path)
                if (pos["dev"], pos["ino"]) == (st.st_dev, st.st_ino):
                    return
            await asyncio.sleep(0.002)

    rnd = random.Random(7)
    n = 0
    for round_ in range(6):
        for _ in range(200):
            line = cel_line(n, multiline=rnd.random() < 0.02)
            n += 1
            if rnd.random() < 0.1:
                w.write(line, split_at=rnd.randrange(1, len(line)))
                await asyncio.sleep(0)
                w.finish_partial()
            else:
                w.write(line)
            if rnd.random() < 0.05:
                await asyncio.sleep(0.003)
        await asyncio.wait_for(caught_up(), 20)
        if round_ % 2:
            w.rotate_rename()
        else:
            w.write(cel_line(n))
            n += 1
            w.rotate_copytruncate()
    w.write(cel_line(n))
    n += 1
    await asyncio.wait_for(caught_up(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert src.state == "stopped"
    assert stored_seqs(store.store.path) == Counter(range(n))
    assert store.duplicates == 0


async def test_run_survives_store_failures(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    fails = {"left": 2}
    real_ingest = store.ingest

    async def flaky(cels=(), cdrs=(), positions=None):
        if fails["left"]:
            fails["left"] -= 1
            raise OSError("disk full")
        return await real_ingest(cels, cdrs, positions)

    store.ingest = flaky  # type: ignore[method-assign]
    src = CelCsvSource(
        CsvSettings(path=str(w.path), poll_interval=0.001),
        store,
        Metrics(),
        start_from="beginning",
    )
    w.write(cel_line(0))
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))

    async def done() -> None:
        while stored_seqs(store.store.path) != Counter([0]):
            await asyncio.sleep(0.005)

    await asyncio.wait_for(done(), 20)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert fails["left"] == 0


async def test_start_from_a_time_reads_from_the_start_and_drops_older_rows(tmp_path, store):
    w = AsteriskWriter(tmp_path / "Master.csv")
    for i in range(10):
        w.write(cel_line(i))  # seq i is at T0 + 37 ms * i
    src = source(tmp_path, store, start_from=(T0 + timedelta(milliseconds=37 * 6)).isoformat())
    await src.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(6, 10))
    assert src.metrics.rows_discarded.labels(reason="before_start_from")._value.get() == 6
    # a stored position wins over START_FROM after a restart
    w.write(cel_line(10))
    src.close()
    src2 = source(tmp_path, store, start_from="latest")
    await src2.poll_once()
    assert stored_seqs(store.store.path) == Counter(range(6, 11))


class FifoUnblocker:
    """Hang guard: a reader blocked in open() of the FIFO (the whole event loop with it)
    is released by opening the write end; `released` says whether that was needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.released = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self.done.wait(2.0):
            return
        while not self.done.is_set():
            try:  # succeeds only while somebody holds the read end open
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
                self.released = True
                return
            except OSError:
                self.done.wait(0.05)

    def __enter__(self) -> FifoUnblocker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


@pytest.mark.parametrize("start_from", ["beginning", "latest"])
async def test_a_fifo_at_cel_csv_path_is_refused_without_blocking(tmp_path, store, start_from):
    os.mkfifo(tmp_path / "Master.csv")
    src = source(tmp_path, store, start_from=start_from)
    with (
        FifoUnblocker(tmp_path / "Master.csv") as guard,
        pytest.raises(OSError, match=r"CEL_CSV_PATH .* is not a regular file"),
    ):
        await src.poll_once()
    assert not guard.released  # the open did not block
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    while src.state != "error":
        await asyncio.sleep(0.01)
    assert "CEL_CSV_PATH" in (src.last_error or "")
    stop.set()
    await asyncio.wait_for(task, 10)
    [line] = await asyncio.wait_for(check_csv(CsvSettings(path=str(tmp_path / "Master.csv"))), 10)
    assert (line.name, line.failed) == ("cel_csv file", True) and "CEL_CSV_PATH" in line.hint
    assert "not a regular file" in line.detail
