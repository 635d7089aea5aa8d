"""Reading: bounded chunks of an open file from an offset, the unfinished tail kept back.

The reader knows bytes, not records: it hands at most `chunk_size` bytes from
the offset to a consumer, which takes the whole records at their start and
says how many bytes that was (a CSV record may span lines inside quotes, so
only the consumer knows where one ends). What is left at the end of the file
waits for the writer, unless it has not changed for `stale_after` seconds (a
writer that died mid-record): then the next chunk is marked `final` and the
consumer takes it whole. Memory stays bounded by `chunk_size`.

Files are opened O_NONBLOCK (a FIFO cannot block the event loop) and only
regular files are read.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field

from .identity import FileId, Head

__all__ = ["Chunk", "OpenFile", "Reader", "end_of_last_line", "open_file", "open_ro"]


@dataclass(slots=True)
class OpenFile:
    """A file being read: its descriptor, identity and read offset."""

    fd: int
    id: FileId
    path: str
    offset: int = 0
    head: Head = field(default_factory=Head)
    pending_since: float | None = None  # monotonic time an unfinished tail was first seen
    pending_size: int = -1  # file size when it was

    def forget_tail(self) -> None:
        self.pending_since = None
        self.pending_size = -1


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes
    offset: int  # file offset of data[0]
    final: bool  # take an unfinished record at the end as whole
    at_eof: bool
    more: bool  # the file held bytes past this chunk when it was read (a backlog)


def open_ro(path: str) -> int | None:
    """Open for reading; O_NONBLOCK so that a FIFO cannot block the event loop."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None


def open_file(path: str, offset: int, head: Head, not_regular: str) -> OpenFile | None:
    """`path` opened at `offset` (None: it does not exist); OSError(`not_regular`) for a
    FIFO, a device or a directory."""
    fd = open_ro(path)
    if fd is None:
        return None
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise OSError(not_regular)
    return OpenFile(fd, FileId.of(fst), path, offset, head)


class Reader:
    """Chunks of at most `chunk_size` bytes; an unfinished tail is final after `stale_after` s."""

    def __init__(self, chunk_size: int, stale_after: float) -> None:
        self.chunk_size = chunk_size
        self.stale_after = stale_after

    def read(self, f: OpenFile, final: bool) -> Chunk:
        """The bytes at `f.offset` (blocking: run it in a thread). `final`: the file is
        done (rotated away, a copy): its last record is whole even without a newline."""
        data = os.pread(f.fd, self.chunk_size, f.offset)
        at_eof = len(data) < self.chunk_size
        more = not at_eof and os.fstat(f.fd).st_size > f.offset + len(data)
        stale = False
        since = f.pending_since  # the same unfinished tail as last time?
        same_tail = since is not None and f.pending_size == f.offset + len(data)
        if data and not final and at_eof and same_tail and since is not None:
            stale = time.monotonic() - since >= self.stale_after
        return Chunk(data, f.offset, (final or stale) and at_eof, at_eof, more)

    @staticmethod
    def settle(f: OpenFile, chunk: Chunk, consumed: int, final: bool) -> None:
        """After the consumer took `consumed` bytes of `chunk`: note when a tail was left."""
        if not chunk.at_eof or final:
            return
        if consumed < len(chunk.data):
            size = chunk.offset + len(chunk.data)
            if f.pending_size != size:
                f.pending_since = time.monotonic()
                f.pending_size = size
        else:
            f.forget_tail()


def end_of_last_line(path: str) -> int:
    """Offset just after the last newline of the file (start at the end, no history)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return 0  # refused with a clear error when it is opened
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            k = block.rfind(b"\n")
            if k >= 0:
                return pos + k + 1
        return 0
