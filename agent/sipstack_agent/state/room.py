"""The room the state store keeps on its disk so that it can always deliver.

During an API outage the outbox grows until the state disk is full. On a disk that
is really full nothing can be delivered any more: a delivery deletes outbox rows,
which SQLite writes to the WAL first, and folding the WAL back into the file
(checkpoint) may need the file to grow for pages committed before. The agent would
wait for an operator to free space although the API is back.

So the writes that grow the store are refused while the room left is below their
share of the reserve `min_free`: new rows (`ingest`, `Need.ROWS`) below all of it,
new documents (`save_evaluations`, `Need.DOCUMENTS`) below half of it, so that the
rows already stored still become documents, are delivered, and their calls pruned
(housekeeping prunes sooner while rows are refused). Every other write
(deliveries, retries, dead letters, positions, prune) may use the whole reserve.
Room is the filesystem's space available to the agent plus the file's free pages
(a delivered document's pages are reused before the file grows again, and SQLite
never gives them back to the filesystem). The refusal is a `StateDiskLow` (a
`StateDiskFull`): the sources wait with their batch, the evaluator waits, nothing
is lost, and both resume by themselves once deliveries and pruning made room.

`min_free` is STATE_MIN_FREE_MB; `auto` (the default) keeps 10 % of the
filesystem's size, at least 32 MB (a checkpoint of the largest page of rows and a
pass of deliveries need about that) and at most 256 MB (a PBX host's own disk), and
never more than half of a filesystem smaller than 64 MB.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from dataclasses import dataclass

from .errors import StateDiskLow

MB = 1024 * 1024
AUTO_SHARE = 0.10
AUTO_FLOOR = 32 * MB
AUTO_CAP = 256 * MB
RESUME = 1.5  # a refused kind of write resumes with this times its share left


class Need(enum.Enum):
    """What a write that grows the store adds, with its share of the reserve."""

    ROWS = 1.0
    DOCUMENTS = 0.5


def auto_min_free(fs_size: int) -> int:
    """The reserve STATE_MIN_FREE_MB=auto keeps on a filesystem of `fs_size` bytes."""
    return int(min(AUTO_CAP, max(AUTO_FLOOR, fs_size * AUTO_SHARE), fs_size / 2))


@dataclass(frozen=True, slots=True)
class Space:
    available: int  # bytes of the filesystem the agent may still use
    size: int  # the filesystem's size
    free_pages: int  # bytes of the store file's free pages


class Room:
    """The reserve of the store at `directory`: `min_free_mb` None = auto, 0 = off.

    Once a kind of write was refused, it is accepted again only with RESUME times its
    share of the reserve left, so that reading does not flap at the line (a page in,
    refused, a page in) but resumes once deliveries and pruning made real room.
    Checked in the store's thread only."""

    def __init__(self, directory: str, min_free_mb: int | None = None) -> None:
        self.directory = directory
        self.min_free_mb = min_free_mb
        self._refused: set[Need] = set()

    def min_free(self, fs_size: int) -> int:
        if self.min_free_mb is None:
            return auto_min_free(fs_size)
        return self.min_free_mb * MB

    def space(self, conn: sqlite3.Connection) -> Space:
        st = os.statvfs(self.directory)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return Space(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, free * page_size)

    def check(self, conn: sqlite3.Connection, what: Need) -> None:
        """Raise StateDiskLow when a write adding `what` would eat its share of the reserve."""
        if self.min_free_mb == 0:
            return
        try:
            s = self.space(conn)
        except OSError:
            return  # cannot tell: SQLite's own SQLITE_FULL still guards the disk
        need = int(self.min_free(s.size) * what.value)
        if what in self._refused:
            need = int(need * RESUME)
        room = s.available + s.free_pages
        if room >= need:
            self._refused.discard(what)
            return
        self._refused.add(what)
        raise StateDiskLow(
            f"state disk low: {room / MB:.0f} MB left in {self.directory} (free space and "
            f"the state file's free pages), below the {need / MB:.0f} MB kept for "
            f"delivering (STATE_MIN_FREE_MB): no new {what.name.lower()} until "
            "deliveries make room"
        )
