"""The state store's errors: the file itself cannot be used (full disk, corrupt, newer)."""

from __future__ import annotations

import sqlite3


class StoreError(Exception):
    """The state file cannot be used (written by a newer agent, corrupt...)."""


class StateDiskFull(StoreError):
    """SQLite could not write the state store: its filesystem is full (SQLITE_FULL).

    The transaction was rolled back: nothing it carried (rows, positions, delivered
    marks) was stored, so a source that retries the same batch later loses nothing.
    """


class StateDiskLow(StateDiskFull):
    """A write that grows the store was refused before the disk is full: the room left
    is below the reserve kept for delivering (state/room.py, STATE_MIN_FREE_MB)."""


class StateCorrupt(StoreError):
    """The state file fails `PRAGMA quick_check` or is not a database at all."""


EXIT_STATE_CORRUPT = 1  # the runtime-failure exit code of cli.py


class StateCorruptExit(SystemExit):
    """The state file broke while it was in use (SQLite found a malformed page after open).

    Not an Exception: it stops the process (exit EXIT_STATE_CORRUPT) instead of letting a
    supervised stage restart against the broken file in a loop. The file was marked
    (`corrupt_marker`), so the next start quarantines it and rebuilds from the PBX
    tables like a file that fails quick_check at open (docs/operations.md).
    """

    def __init__(self, cause: StateCorrupt) -> None:
        super().__init__(EXIT_STATE_CORRUPT)
        self.cause = cause

    def __str__(self) -> str:
        return str(self.cause)


def corrupt_marker(path: str) -> str:
    """Beside the state file: written when it broke at runtime, read at the next open."""
    return f"{path}.corrupt"


_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def _errcode(e: sqlite3.Error) -> int:
    return int(getattr(e, "sqlite_errorcode", -1)) & 0xFF  # the primary code


def classify(e: BaseException) -> BaseException:
    """SQLite's errors that are about the state file itself, as StoreError subclasses."""
    if isinstance(e, sqlite3.Error) and not isinstance(e, StoreError):
        code = _errcode(e)
        if code == _SQLITE_FULL:
            return StateDiskFull(f"state disk full: {e}")
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return StateCorrupt(f"state file corrupt: {e}")
    return e
