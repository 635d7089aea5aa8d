"""The revision floor of a store rebuilt after its file was quarantined.

A quarantined file cannot be read, so the fresh store cannot know which revisions
(Idempotency-Keys) the old one issued. At the rebuild the store takes a floor above
all of them (`calls.document.rebuild_floor`, the rule) and issues every revision
above it (`calls.document.next_revision`, `resend_revision`). The floor is kept in two
places: the new file's `meta` table (schema 6), and `<state file>.floor` beside it,
which is what survives the next quarantine (the next floor is above this one) and is
written, durably, before the old file is moved aside. An open adopts the larger of the
two, so a kill between writing `.floor` and the new file's meta loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

META_FLOOR = "revision_floor"


def floor_file(path: str) -> str:
    """Beside the state file: the floor of the last rebuild (survives quarantines)."""
    return f"{path}.floor"


def read_floor_file(path: str) -> int | None:
    """The floor recorded beside the state file; None when there is none (or it is not a
    number: the clock part of the rule still holds then)."""
    try:
        with open(floor_file(path), encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_floor_file(path: str, floor: int) -> None:
    """Write `.floor` atomically and durably (fsync of the file and its directory): the
    old file is moved aside only after this returns."""
    target = floor_file(path)
    tmp = f"{target}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{floor}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    with contextlib.suppress(OSError):  # not every filesystem can fsync a directory
        dfd = os.open(os.path.dirname(os.path.abspath(target)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def meta_floor(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (META_FLOOR,)).fetchone()
    return int(row[0]) if row is not None else 0


def apply_floor(conn: sqlite3.Connection, path: str) -> int:
    """The store's floor: the larger of its meta and `.floor` (stored when larger)."""
    floor = meta_floor(conn)
    beside = read_floor_file(path) if path != ":memory:" else None
    if beside is not None and beside > floor:
        conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (META_FLOOR, str(beside))
        )
        floor = beside
    return floor
