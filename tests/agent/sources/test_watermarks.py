"""Sources say how far they have read: SqlSource on PostgreSQL, MariaDB and SQLite
(as a SELECT-only user, the real sample rows), the cel_custom CSV reader, and the
AMI feed against a real AMI protocol server."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.app import Agent
from sipstack_agent.calls.derive import cdr_end
from sipstack_agent.calls.settle import NOTHING_READ
from sipstack_agent.config import CsvSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.sim.ami import AmiServer
from sipstack_agent.sources.cel_ami import CelAmiSource
from sipstack_agent.sources.cel_csv import CelCsvSource
from sipstack_agent.sources.cel_csv.fileformat import MAX_RECORD_BYTES
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.state import StateStore
from sipstack_agent.watermarks import PAGE_WAIT_MAX, READ_THROUGH_SLACK, Watermarks

from .test_cel_ami import call_events, fast, until
from .test_cel_csv_tail import T0, CountingStore, cel_line
from .test_sql import FLAVOR, agent_settings


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


async def test_sql_sources_publish_read_through_then_caught_up(
    pbx_db: Any, store: StateStore, asterisk_sample: Any
) -> None:
    settings, writer = pbx_db
    await writer.load_sample()
    flavor = FLAVOR[writer.dialect]
    cels, cdrs = asterisk_sample.cel_rows(flavor), asterisk_sample.cdr_rows(flavor)
    board = Watermarks()
    s = agent_settings(settings, batch_size=10, max_records_per_poll=30)
    cel_src = SqlSource(s, "cel", store, Metrics(), watermarks=board)
    cdr_src = SqlSource(s, "cdr", store, Metrics(), watermarks=board)
    cel_name, cdr_name = cel_src.position_name, cdr_src.position_name
    try:
        assert set(board.marks()) == {cel_name, cdr_name}
        assert board.low() is not None and board.low() < cels[0].eventtime  # silent: hold all
        # a backlog page: the CEL source has read rows 1..30 (id order), no more
        assert await cel_src.poll_once() == 30 and cel_src.backlog
        mark = board.marks()[cel_name]
        assert mark.caught_up_at is None
        assert mark.read_through == max(c.eventtime for c in cels[:30]) - READ_THROUGH_SLACK
        # the CDR table is short: read whole in one poll, caught up as of the poll's start
        started = datetime.now(UTC)
        assert await cdr_src.poll_once() == len(cdrs) and not cdr_src.backlog
        mark = board.marks()[cdr_name]
        assert mark.caught_up_at is not None and mark.caught_up_at >= started
        assert mark.read_through == max(cdr_end(c) for c in cdrs) - READ_THROUGH_SLACK
        # the low watermark is the CEL source's: calls past row 30 are held
        assert board.low() == board.marks()[cel_name].read_through
        while cel_src.backlog or board.marks()[cel_name].caught_up_at is None:
            await cel_src.poll_once()
        assert board.low() is not None and board.low() >= started
        assert not board.behind()
    finally:
        await cel_src.close()
        await cdr_src.close()


async def test_a_backlog_is_published_page_by_page_as_behind(
    pbx_db: Any, store: StateStore, asterisk_sample: Any
) -> None:
    """Within one poll of a backlog each stored page moves the watermark (the evaluator
    then releases the calls those pages end) and says `behind`; the poll's end says
    whether more is waiting."""
    settings, writer = pbx_db
    await writer.load_sample()
    cels = asterisk_sample.cel_rows(FLAVOR[writer.dialect])
    seen: list[tuple[datetime | None, bool]] = []

    def on_change() -> None:
        seen.extend((m.read_through, m.behind) for m in board.marks().values())

    board = Watermarks(on_change=on_change)
    src = SqlSource(
        agent_settings(settings, batch_size=10, max_records_per_poll=40),
        "cel",
        store,
        Metrics(),
        watermarks=board,
    )
    name = src.position_name
    try:
        assert await src.poll_once() == 40 and src.backlog
        # pages 1-3 published on their own (behind), the poll's end once more (behind)
        marks = [t for t, _ in seen if t is not None]
        assert marks == sorted(marks) and len(set(marks)) >= 3
        assert marks[0] == max(c.eventtime for c in cels[:10]) - READ_THROUGH_SLACK
        assert all(behind for _, behind in seen) and board.behind()
        while src.backlog:
            await src.poll_once()
        await src.poll_once()
        assert not board.marks()[name].behind and not board.behind()
        assert board.marks()[name].caught_up_at is not None
    finally:
        await src.close()


async def test_csv_source_publishes_while_reading_and_when_at_the_end(
    tmp_path: Path, store: StateStore, asterisk_sample: Any
) -> None:
    path = tmp_path / "Master.csv"
    shutil.copy(asterisk_sample.dir / "csv" / "cel_custom_Master.csv", path)
    board = Watermarks()
    src = CelCsvSource(
        CsvSettings(path=str(path), poll_interval=0.01),
        store,
        Metrics(),
        start_from="beginning",
        watermarks=board,
    )
    assert board.low() is not None and board.low() < datetime(2000, 1, 1, tzinfo=UTC)
    started = datetime.now(UTC)
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        for _ in range(500):
            if board.marks()["cel_csv"].caught_up_at is not None:
                break
            await asyncio.sleep(0.01)
        mark = board.marks()["cel_csv"]
        assert mark.caught_up_at is not None and mark.caught_up_at >= started
        newest = max(c.eventtime for c in asterisk_sample.cel_rows("postgres"))
        assert mark.read_through == newest - READ_THROUGH_SLACK
        assert board.low() == mark.caught_up_at
    finally:
        stop.set()
        await task


CSV_CHUNK = 2 * MAX_RECORD_BYTES  # the smallest chunk the CSV source reads


def csv_source(path: Path, store: Any, board: Watermarks) -> CelCsvSource:
    return CelCsvSource(
        CsvSettings(path=str(path), poll_interval=0.01),
        store,
        Metrics(),
        start_from="beginning",
        chunk_size=CSV_CHUNK,
        watermarks=board,
    )


def cel_time(n: int) -> datetime:
    return T0 + timedelta(milliseconds=37 * n)  # cel_line(n)'s eventtime


async def test_csv_backlog_is_published_chunk_by_chunk_as_behind_then_live_not(
    tmp_path: Path, store: StateStore
) -> None:
    """A file of several chunks read from its start: every chunk moves the watermark and
    says `behind` while more of the file waits; the chunk that reaches the end and every
    read after it (a live append) are not behind."""
    path = tmp_path / "Master.csv"
    n = 1500
    path.write_bytes(b"".join(cel_line(i) for i in range(n)))
    assert path.stat().st_size > 3 * CSV_CHUNK
    seen: list[tuple[datetime | None, bool]] = []

    def on_change() -> None:
        m = board.marks()["cel_csv"]
        seen.append((m.read_through, m.behind))

    board = Watermarks(on_change=on_change)
    counting = CountingStore(store)
    src = csv_source(path, counting, board)
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        await until(lambda: board.marks()["cel_csv"].caught_up_at is not None)
        chunks = counting.ingests
        assert chunks >= 4
        # chunk by chunk: behind before the last chunk, not behind from it on
        marks = [t for t, _ in seen[:chunks]]
        assert all(t is not None for t in marks) and len(set(marks)) == chunks
        assert marks == sorted(marks)
        assert [b for _, b in seen[:chunks]] == [True] * (chunks - 1) + [False]
        assert marks[-1] == cel_time(n - 1) - READ_THROUGH_SLACK
        assert not any(b for _, b in seen[chunks:]) and not board.behind()
        # live: an append after catching up is read and published, not behind
        caught_up = len(seen)
        with path.open("ab") as fh:
            fh.write(cel_line(n))
        await until(
            lambda: board.marks()["cel_csv"].read_through == cel_time(n) - READ_THROUGH_SLACK
        )
        assert counting.ingests == chunks + 1
        assert len(seen) > caught_up and not any(b for _, b in seen[caught_up:])
        assert not board.behind()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_csv_read_failure_clears_behind(tmp_path: Path, store: StateStore) -> None:
    """A chunk that cannot be stored mid-backlog: the source is not reading on at once any
    more (it backs off), so it is not behind until it reads again."""
    path = tmp_path / "Master.csv"
    n = 1000
    path.write_bytes(b"".join(cel_line(i) for i in range(n)))
    assert path.stat().st_size > 2 * CSV_CHUNK
    seen: list[tuple[datetime | None, bool]] = []
    board = Watermarks(
        on_change=lambda: seen.append(
            (board.marks()["cel_csv"].read_through, board.marks()["cel_csv"].behind)
        )
    )
    real_ingest = store.ingest
    failed: list[tuple[int, bool]] = []  # (publishes seen, behind) when the failure hit

    async def flaky(cels: Any = (), cdrs: Any = (), positions: Any = None) -> Any:
        if len(seen) == 1 and not failed:  # the second chunk, the first one said behind
            failed.append((len(seen), board.behind()))
            raise OSError("disk full")
        return await real_ingest(cels, cdrs, positions)

    store.ingest = flaky  # type: ignore[method-assign]
    src = csv_source(path, store, board)
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        await until(lambda: board.marks()["cel_csv"].caught_up_at is not None)
        assert failed == [(1, True)]
        first = seen[0]
        assert first[1] is True
        assert seen[1] == (first[0], False)  # the error path: same watermark, not behind
        assert board.marks()["cel_csv"].read_through == cel_time(n - 1) - READ_THROUGH_SLACK
        assert not board.behind()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_ami_holds_while_connected_and_releases_while_down(store: StateStore) -> None:
    holds: list[bool] = []  # every change of the AMI's mark, in order
    board = Watermarks(on_change=lambda: holds.append(board.marks()["ami"].holds))
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics(), "UTC", watermarks=board)
        assert board.low() == NOTHING_READ  # registered, has not read yet: holds every call
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        try:
            await until(lambda: board.marks()["ami"].caught_up_at is not None)
            for h in call_events("1795495160.0", datetime.now(UTC), 3):
                srv.send_cel(h)
            sent = datetime.now(UTC)
            await until(lambda: (board.low() or NOTHING_READ) >= sent)  # stored, caught up
            assert False not in holds
            srv.drop_all()
            await srv.wait_logins(2)
            await until(lambda: False in holds and holds[-1])  # released while down, then back
            assert board.low() is not None and board.low() >= sent
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert holds[-1] is False  # stopped: holds nothing


async def test_a_wanted_read_happens_now_not_at_the_next_poll(
    make_pbx_db: Any, store: StateStore, asterisk_sample: Any
) -> None:
    """The evaluator holds a live call until each source has read after its end and asks
    for that read: a source polling once an hour reads at once."""
    settings, writer = await make_pbx_db("sqlite")
    board = Watermarks()
    src = SqlSource(
        agent_settings(settings, poll_interval=3600), "cdr", store, Metrics(), watermarks=board
    )
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        await until(lambda: board.marks()[src.position_name].caught_up_at is not None)
        first = board.marks()[src.position_name].caught_up_at
        await writer.insert_cdr(asterisk_sample.cdr_rows("postgres")[:1])
        asked = datetime.now(UTC)
        board.want_read()
        await until(lambda: (board.marks()[src.position_name].caught_up_at or asked) > first)
        assert board.marks()[src.position_name].caught_up_at >= asked
        assert src.rows_read == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_backlog_page_waits_for_the_evaluator_before_the_next_is_stored(
    pbx_db: Any, tmp_path: Path
) -> None:
    """Reading a backlog, each stored page waits until the running evaluator has
    evaluated what became due (the dirty calls and their rows stay a page wide); with
    no evaluator running nothing waits."""
    settings, writer = pbx_db
    await writer.load_sample()
    events: list[str] = []

    class Board(Watermarks):
        def page_stored(self) -> None:
            events.append("page")
            super().page_stored()

        def evaluated(self, pages: int) -> None:
            if pages >= self.pages:
                events.append("evaluated")
            super().evaluated(pages)

    s = agent_settings(settings, batch_size=10, max_records_per_poll=10_000)
    agent = Agent(replace(s, state_dir=str(tmp_path), identity=Identity(connector_id="t")))
    agent.watermarks = board = Board(on_change=agent._wake.set)
    agent.store = store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    src = SqlSource(s, "cel", store, Metrics(), watermarks=board)
    stop = asyncio.Event()
    evaluator = asyncio.ensure_future(agent.evaluator.run(stop))
    try:
        await asyncio.sleep(0.05)
        await src.poll_once()  # the whole sample, 10 rows a page
        pages = [i for i, e in enumerate(events) if e == "page"]
        assert len(pages) >= 5
        # between two stored pages the evaluator caught up each time
        for a, b in itertools.pairwise(pages):
            assert "evaluated" in events[a + 1 : b], events
        assert agent.evaluator.evaluated_total > 0
    finally:
        stop.set()
        await evaluator
    # no evaluator: a page does not wait (PAGE_WAIT_MAX would show)
    t0 = time.monotonic()
    board.page_stored()
    await board.wait_evaluated(PAGE_WAIT_MAX)
    assert time.monotonic() - t0 < PAGE_WAIT_MAX / 2
    await src.close()
    await store.close()
