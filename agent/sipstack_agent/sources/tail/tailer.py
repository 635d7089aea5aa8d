"""Follow one path across rotations: identity + reading + checkpoint, for any record format.

`Tailer(path, checkpoints, consumer, ...)` reads the file at `path` through a
`TailConsumer` that parses chunks and commits what it parsed together with the
checkpoint. It follows
- rename-and-create: the path names another inode (or none): the old file is
  drained through the descriptor still held, then the new file is read from 0;
- copytruncate: the file shrank below the offset, or its first bytes changed:
  the copy beside it (same first bytes, long enough) is drained past the
  offset without moving the checkpoint, then the file is read from 0;
- a restart: the stored (device, inode) is found again in the directory if the
  file was renamed while the agent was down, and drained first; gone: said once.
With no checkpoint, `start` decides: "latest" (from the end of the last whole
line) or "beginning".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Generic, Literal, Protocol, TypeVar

from .checkpoint import Checkpoint, Checkpoints, Position
from .identity import HEAD_BYTES, FileId, Head, find_by_inode, find_copy, grown_head, rewritten
from .identity import stat_path as _stat
from .reader import Chunk, OpenFile, Reader, end_of_last_line, open_file, open_ro

__all__ = ["Parsed", "RotationKind", "StartAt", "TailConsumer", "Tailer"]

log = logging.getLogger(__name__)

RotationKind = Literal["rename", "truncate", "lost"]
# Without a checkpoint: from the end of the last whole line, or from 0 ("time": from 0,
# the consumer drops what is older).
StartAt = Literal["latest", "beginning", "time"]


class Parsed(Protocol):
    consumed: int  # bytes of whole records taken from the start of the chunk


P = TypeVar("P", bound=Parsed)


class TailConsumer(Protocol[P]):
    """What the tailer hands chunks to (the CSV source: parser, quarantine, store)."""

    def parse(self, chunk: Chunk, f: OpenFile) -> P:
        """Whole records at the start of `chunk` (runs in a thread)."""
        ...

    async def commit(
        self, parsed: P, f: OpenFile, positions: dict[str, Position], *, more: bool
    ) -> int:
        """Store `parsed` with `positions` (empty: a copy, the checkpoint stays) in one
        transaction; the number of rows. `more`: bytes past this chunk are waiting in
        `f` and are read next, at once (a backlog); False when the chunk reached the end
        of the file as it was when read (or the poll is stopping)."""
        ...

    def waiting(self) -> None:
        """The path does not exist (yet)."""

    def tailing(self) -> None:
        """The file is open; it is about to be read."""

    def rotated(self, kind: RotationKind) -> None:
        """A rotation was followed (or, "lost", a file read before a restart is gone)."""

    def resumed(self) -> None:
        """A checkpoint was found at the start: `start` does not apply."""


class Tailer(Generic[P]):
    """One path followed across rotations (see the module docstring).

    `poll(stop)` reads what there is now, chunk by chunk, through `consumer`;
    `current` is the open file (None while the path is missing), `position()`
    its checkpoint. `not_regular`: the OSError text when the path is a FIFO, a
    device or a directory (name the setting that points there).
    """

    def __init__(
        self,
        path: str,
        checkpoints: Checkpoints,
        consumer: TailConsumer[P],
        *,
        start: StartAt = "latest",
        chunk_size: int = 1024 * 1024,
        stale_after: float = 30.0,
        not_regular: str | None = None,
    ) -> None:
        self.path = path
        self.checkpoints = checkpoints
        self.consumer = consumer
        self.start = start
        self.reader = Reader(chunk_size, stale_after)
        self.not_regular = not_regular or f"{path} is not a regular file"  # the OSError
        self.current: OpenFile | None = None
        self._started = False

    def position(self) -> Position | None:
        """The checkpoint of the open file (None before one was opened)."""
        return None if self.current is None else Checkpoint.of(self.current).to_position()

    def close(self) -> None:
        if self.current is not None:
            with contextlib.suppress(OSError):
                os.close(self.current.fd)
            self.current = None

    # -- one poll -------------------------------------------------------------

    async def poll(self, stop: asyncio.Event | None = None) -> int:
        """Read everything there is now; the number of rows committed."""
        if not self._started:
            await self._startup()
        if self.current is None:
            if _stat(self.path) is None or not self._open(0):
                self.consumer.waiting()
                return 0
            await self._save()
        cur = self.current
        assert cur is not None
        total = 0
        st = _stat(self.path)
        if st is None or FileId.of(st) != cur.id:
            # Rename-and-create (or the file was removed): drain the old file through the
            # descriptor we still hold, then continue with the new file from its start.
            total += await self._drain(cur, final=True, stop=stop)
            self.consumer.rotated("rename")
            log.info(
                "%s was rotated (inode %d drained to offset %d); following the new file",
                self.path,
                cur.id.ino,
                cur.offset,
            )
            self.close()
            if st is None or not self._open(0):
                self.consumer.waiting()
                return total
            await self._save()
            cur = self.current
            assert cur is not None
        elif await asyncio.to_thread(rewritten, cur.fd, cur.offset, cur.head):
            total += await self._truncation(cur, stop)
        self.consumer.tailing()
        total += await self._drain(cur, final=False, stop=stop)
        return total

    def _open(self, offset: int, checkpoint: Checkpoint | None = None) -> bool:
        """Open the path at `offset` (False: it does not exist)."""
        head = checkpoint.head if checkpoint else Head()
        f = open_file(self.path, offset, head, self.not_regular)
        self.current = f
        return f is not None

    async def _truncation(self, cur: OpenFile, stop: asyncio.Event | None = None) -> int:
        """copytruncate (or any shrink/rewrite): drain the copy past our offset, restart at 0."""
        self.consumer.rotated("truncate")
        total = 0
        copy = None
        if cur.head.length and cur.offset:
            copy = await asyncio.to_thread(find_copy, cur.path, cur.head, cur.offset, cur.id)
        fd = open_ro(copy) if copy is not None else None
        if copy is not None and fd is not None:
            tmp = OpenFile(fd, FileId.of(os.fstat(fd)), copy, cur.offset, cur.head)
            try:
                total = await self._drain(tmp, final=True, stop=None, persist=False)
            finally:
                os.close(fd)
            log.info(
                "%s was copied and truncated; read %d rows past offset %d from the copy %s",
                cur.path,
                total,
                cur.offset,
                copy,
            )
        elif copy is None:
            log.warning(
                "%s shrank or was rewritten below offset %d (copytruncate?); reading it from "
                "the start",
                cur.path,
                cur.offset,
            )
        cur.offset = 0
        cur.head = Head()
        cur.forget_tail()
        await self.checkpoints.save(cur)
        return total

    # -- start: the checkpoint, or `start` ------------------------------------

    async def _startup(self) -> None:
        self._started = True
        cp = await self.checkpoints.load()
        st = _stat(self.path)
        if cp is None:
            if st is None:
                return  # the file will appear later: read it from its start then
            offset = 0
            if self.start == "latest":
                offset = await asyncio.to_thread(end_of_last_line, self.path)
            if self._open(offset):
                log.info("reading %s from offset %d (START_FROM=%s)", self.path, offset, self.start)
                await self._save()
            return
        self.consumer.resumed()
        if st is not None and FileId.of(st) == cp.id:
            cur = self.current if self._open(cp.offset, cp) else None
            if cur is not None and await asyncio.to_thread(rewritten, cur.fd, cp.offset, cp.head):
                await self._truncation(cur)
            return
        # Rotated while we were down: find the old file by inode and drain it first.
        directory = os.path.dirname(self.path) or "."
        old = await asyncio.to_thread(find_by_inode, directory, cp.id)
        if old is not None:
            await self._drain_old(old, cp)
        else:
            self.consumer.rotated("lost")
            log.warning(
                "the file read before the restart (%s, inode %d, offset %d) is gone; records "
                "written to it after that offset are lost",
                cp.path,
                cp.id.ino,
                cp.offset,
            )
        if st is not None and self._open(0):
            await self._save()

    async def _drain_old(self, old: str, cp: Checkpoint) -> None:
        """The file of the checkpoint under its new name: read it to its end."""
        fd = open_ro(old)
        if fd is None:
            return
        if FileId.of(os.fstat(fd)) != cp.id:
            os.close(fd)
            return
        cur = OpenFile(fd, cp.id, old, cp.offset, cp.head)
        self.current = cur  # kept if the drain fails: the next poll drains it as a rename
        if await asyncio.to_thread(rewritten, fd, cur.offset, cur.head):
            cur.offset = 0
        log.info("draining the rotated file %s from offset %d", old, cur.offset)
        await self._drain(cur, final=True)
        self.consumer.rotated("rename")
        self.close()

    async def _save(self) -> None:
        assert self.current is not None
        await self.checkpoints.save(self.current)

    # -- reading to the end ---------------------------------------------------

    def _read_parse(self, f: OpenFile, final: bool) -> tuple[Chunk, P | None]:
        """Blocking part (run in a thread): read one chunk at the offset and parse it."""
        chunk = self.reader.read(f, final)
        if not chunk.data:
            return chunk, None
        parsed = self.consumer.parse(chunk, f)
        self.reader.settle(f, chunk, parsed.consumed, final)
        return chunk, parsed

    async def _drain(
        self,
        f: OpenFile,
        *,
        final: bool,
        stop: asyncio.Event | None = None,
        persist: bool = True,
    ) -> int:
        """Chunks to the end of `f` (or until `stop`); `persist`: move the checkpoint."""
        total = 0
        while True:
            chunk, parsed = await asyncio.to_thread(self._read_parse, f, final)
            if parsed is None or parsed.consumed == 0:
                break
            old_offset = f.offset
            f.offset += parsed.consumed
            try:
                if persist and f.head.length < HEAD_BYTES:
                    head = await asyncio.to_thread(grown_head, f.fd, f.offset, f.head)
                    if head is not None:
                        f.head = head
                positions = self.checkpoints.with_rows(f) if persist else {}
                more = chunk.more and not (stop is not None and stop.is_set())
                total += await self.consumer.commit(parsed, f, positions, more=more)
            except BaseException:
                f.offset = old_offset
                raise
            if chunk.at_eof or (stop is not None and stop.is_set()):
                break
        return total
