"""The CEL-agnostic tailer on its own: real files, the real state store, a line consumer.

Rotation by rename (live and while the agent was down), copytruncate (also when
the file regrew past the old offset), a partial last line (waits, then stale),
identity across a restart, bounded chunks, FIFOs refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.sources.tail import (
    Checkpoint,
    Checkpoints,
    Chunk,
    FileId,
    OpenFile,
    Position,
    RotationKind,
    StartAt,
    Tailer,
)
from sipstack_agent.state import StateStore

NAME = "lines"


@dataclass
class Lines:
    consumed: int
    lines: list[bytes] = field(default_factory=list)


class LineConsumer:
    """The smallest consumer: one record per line, the checkpoint committed via `ingest`."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.got: list[bytes] = []
        self.events: list[str] = []
        self.largest_chunk = 0
        self.more: list[bool] = []  # `more` of every commit, in order

    def parse(self, chunk: Chunk, f: OpenFile) -> Lines:
        self.largest_chunk = max(self.largest_chunk, len(chunk.data))
        end = len(chunk.data) if chunk.final else chunk.data.rfind(b"\n") + 1
        body = chunk.data[:end]
        lines = body.split(b"\n")
        if body.endswith(b"\n") or not body:
            lines.pop()
        return Lines(end, lines)

    async def commit(
        self, parsed: Lines, f: OpenFile, positions: dict[str, Position], *, more: bool
    ) -> int:
        await self.store.ingest([], [], positions)
        self.more.append(more)
        self.got.extend(parsed.lines)
        return len(parsed.lines)

    def waiting(self) -> None:
        self.events.append("waiting")

    def tailing(self) -> None:
        if self.events[-1:] != ["tailing"]:
            self.events.append("tailing")

    def rotated(self, kind: RotationKind) -> None:
        self.events.append(kind)

    def resumed(self) -> None:
        self.events.append("resumed")


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state" / "state.db")
    yield s
    await s.close()


def tailer(
    path: Path, store: StateStore, *, start: StartAt = "beginning", **kw: Any
) -> tuple[Tailer[Lines], LineConsumer]:
    consumer = LineConsumer(store)
    t = Tailer(str(path), Checkpoints(store, NAME), consumer, start=start, **kw)
    return t, consumer


def lines(*n: int, tag: str = "l") -> bytes:
    return b"".join(f"{tag}{i}\n".encode() for i in n)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


async def stored(store: StateStore) -> Checkpoint:
    pos = await store.get_position(NAME)
    assert pos is not None
    return Checkpoint.from_position(pos)


def ident(path: Path) -> FileId:
    return FileId.of(os.stat(path))


async def test_a_partial_last_line_waits_then_is_taken_when_stale(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(b"one\ntw")
    t, c = tailer(path, store, stale_after=3600)
    assert await t.poll() == 1
    assert c.got == [b"one"] and (await stored(store)).offset == 4
    assert await t.poll() == 0  # the writer is still busy with "tw"
    append(path, b"o\n")
    assert await t.poll() == 1 and c.got == [b"one", b"two"]
    # a writer that died mid-line: the same tail twice, stale_after 0 -> taken whole
    t.reader.stale_after = 0.0
    append(path, b"thr")
    assert await t.poll() == 0
    assert await t.poll() == 1 and c.got[-1] == b"thr"
    assert (await stored(store)).offset == path.stat().st_size
    t.close()


async def test_rename_rotation_drains_the_old_file_through_its_descriptor(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(lines(0, 1))
    t, c = tailer(path, store)
    await t.poll()
    old = ident(path)
    append(path, lines(2))  # written just before the rotation, not read yet
    os.rename(path, tmp_path / "f.log.1")
    path.write_bytes(lines(3, 4))
    assert await t.poll() == 3
    assert c.got == [b"l0", b"l1", b"l2", b"l3", b"l4"]
    assert "rename" in c.events
    cp = await stored(store)
    assert cp.id == ident(path) != old and cp.offset == path.stat().st_size
    t.close()


async def test_the_path_gone_means_waiting_then_the_new_file_from_its_start(tmp_path, store):
    path = tmp_path / "f.log"
    t, c = tailer(path, store, start="latest")
    assert await t.poll() == 0 and c.events == ["waiting"] and t.position() is None
    path.write_bytes(lines(0))  # appeared after the start: read from 0, not from its end
    assert await t.poll() == 1 and c.got == [b"l0"]
    os.remove(path)
    assert await t.poll() == 0 and c.events[-2:] == ["rename", "waiting"]
    path.write_bytes(lines(1))
    assert await t.poll() == 1 and c.got == [b"l0", b"l1"]
    t.close()


@pytest.mark.parametrize("regrow", [False, True])
async def test_copytruncate_reads_the_copy_past_the_offset_then_the_file_from_0(
    tmp_path, store, regrow
):
    path = tmp_path / "f.log"
    path.write_bytes(lines(*range(200)))  # more than the 128 fingerprinted bytes
    t, c = tailer(path, store)
    await t.poll()
    inode = ident(path)
    append(path, lines(200, 201))
    shutil.copyfile(path, tmp_path / "f.log.1")
    with open(path, "r+b") as fh:
        fh.truncate(0)
    # regrown past the old offset with other bytes: only the fingerprint tells
    new = lines(*range(300), tag="n") if regrow else lines(0, tag="n")
    assert (len(new) > len(lines(*range(200)))) is regrow
    path.write_bytes(new)
    await t.poll()
    assert c.got[200:202] == [b"l200", b"l201"]  # from the copy, before the new lines
    assert c.got[202:] == new.splitlines()
    assert c.events.count("truncate") == 1
    cp = await stored(store)
    assert cp.id == inode and cp.offset == len(new)  # same inode, read from 0
    t.close()


async def test_the_checkpoint_is_the_identity_across_a_restart(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(lines(0, 1))
    t, _ = tailer(path, store)
    await t.poll()
    t.close()
    cp = await stored(store)
    assert (cp.path, cp.id, cp.offset) == (str(path), ident(path), path.stat().st_size)
    assert cp.head.length == path.stat().st_size  # fingerprint of what was read
    append(path, lines(2))
    t2, c2 = tailer(path, store, start="latest")  # the checkpoint wins over `start`
    await t2.poll()
    assert c2.events[0] == "resumed" and c2.got == [b"l2"]  # nothing twice
    t2.close()


async def test_a_rename_while_down_is_drained_by_inode_and_a_gone_file_is_lost(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(lines(0))
    t, _ = tailer(path, store)
    await t.poll()
    t.close()
    append(path, lines(1))
    os.rename(path, tmp_path / "f.log.1")
    path.write_bytes(lines(2))
    t2, c2 = tailer(path, store)
    await t2.poll()
    assert c2.got == [b"l1", b"l2"] and c2.events[:2] == ["resumed", "rename"]
    t2.close()
    # down again; the file it read is deleted: said once, the new file read from 0
    (tmp_path / "new").write_bytes(lines(3))  # created first: its inode cannot be the old one
    os.remove(path)
    os.rename(tmp_path / "new", path)
    t3, c3 = tailer(path, store)
    await t3.poll()
    assert c3.got == [b"l3"] and c3.events[:2] == ["resumed", "lost"]
    assert (await stored(store)).id == ident(path)
    t3.close()


async def test_start_latest_skips_history_to_the_last_whole_line(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(lines(0, 1) + b"half")
    t, c = tailer(path, store, start="latest")
    await t.poll()
    assert (await stored(store)).offset == len(lines(0, 1))
    append(path, b"-done\n")
    await t.poll()
    assert c.got == [b"half-done"]
    t.close()


async def test_chunks_are_bounded(tmp_path, store):
    path = tmp_path / "f.log"
    path.write_bytes(lines(*range(5000)))
    t, c = tailer(path, store, chunk_size=4096)
    assert await t.poll() == 5000
    assert 0 < c.largest_chunk <= 4096 and len(c.got) == 5000
    t.close()


async def test_a_commit_says_whether_more_of_the_file_waits(tmp_path, store):
    """`more` is true for every chunk after which the file holds unread bytes and false
    for the chunk that reaches the end (here exactly at a chunk boundary), for a live
    append, and for a chunk read while the poll is stopping."""
    path = tmp_path / "f.log"
    path.write_bytes(b"".join(f"{i:07d}\n".encode() for i in range(3 * 512)))  # 3 x 4096 B
    t, c = tailer(path, store, chunk_size=4096)
    assert await t.poll() == 3 * 512
    assert c.more == [True, True, False]
    append(path, lines(1, 2))  # live: a short append
    assert await t.poll() == 2 and c.more[3:] == [False]
    append(path, b"".join(f"{i:07d}\n".encode() for i in range(2 * 512)))
    stop = asyncio.Event()
    stop.set()  # stopping: one chunk is read, nothing more is promised
    assert await t.poll(stop) == 512 and c.more[4:] == [False]
    assert await t.poll() == 512 and c.more[5:] == [False]
    t.close()


async def test_a_fifo_is_refused_without_blocking(tmp_path, store):
    path = tmp_path / "f.log"
    os.mkfifo(path)
    consumer = LineConsumer(store)
    t = Tailer(str(path), Checkpoints(store, NAME), consumer, not_regular="F_PATH: not a FIFO")
    with pytest.raises(OSError, match="F_PATH: not a FIFO"):
        await t.poll()
    assert t.current is None
