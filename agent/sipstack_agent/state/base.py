"""The store's connection: open (quick_check, WAL, migrations), close, one thread hop
per method (`_run`) and one transaction per write (`_tx`). The concerns of the store
(positions.py, ingest.py, ...) add their methods on top of `StoreBase`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, cast

import aiosqlite

from ..calls.document import rebuild_floor
from .errors import (
    StateCorrupt,
    StateCorruptExit,
    StateDiskFull,
    StateDiskLow,
    StoreError,
    classify,
    corrupt_marker,
)
from .floor import apply_floor, read_floor_file, write_floor_file
from .room import Need, Room
from .schema import SCHEMA_VERSION, migrate
from .values import Loaded

log = logging.getLogger("sipstack_agent.state")

WAL_SIZE_LIMIT = 8 * 1024 * 1024  # bytes the WAL file keeps after a checkpoint

_T = TypeVar("_T")
_P = ParamSpec("_P")

SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")


def _private_files(path: str) -> None:
    """The store holds raw CDR/CEL rows (personal data): owner-only, WAL and SHM too.

    SQLite creates -wal/-shm with the database file's mode, so creating that
    file 0600 first is enough; files an older agent left 0644 are tightened.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


def quarantine(path: str) -> Path:
    """Move a corrupt store (and its -wal/-shm) aside: `<name>.corrupt-<UTC time>`, 0600.

    The runtime marker, when there is one, goes with it as `<name>.corrupt-<time>.reason`.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (path, f"{path}-wal", f"{path}-shm"):
        target = f"{name}.corrupt-{stamp}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(name, target)
            os.chmod(target, 0o600)
    with contextlib.suppress(FileNotFoundError):
        os.replace(corrupt_marker(path), f"{path}.corrupt-{stamp}.reason")
    return Path(f"{path}.corrupt-{stamp}")


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


def _mark_corrupt(path: str, err: StateCorrupt) -> None:
    """Leave the reason beside the file so the next open quarantines it even when
    quick_check passes (a malformed index, a page it does not read)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with contextlib.suppress(OSError):  # a full or read-only disk: quick_check decides
        fd = os.open(corrupt_marker(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{stamp} {err}\n")


def _readonly_uri(path: str | Path) -> str:
    p = Path(path).resolve()
    if not p.is_file():
        raise StoreError(f"{p}: no state store here (is STATE_DIR right?)")
    return f"{p.as_uri()}?mode=ro"


class StoreBase:
    """The connection and its lifecycle; see the package docstring."""

    def __init__(self, db: aiosqlite.Connection, path: str, connector_id: str = "") -> None:
        self._db = db
        self.path = path
        # Used for the outbox Idempotency-Key of call documents:
        # f"{connector_id}:{doc['linkedid']}:{doc['revision']}".
        self.connector_id = connector_id
        self._loaded: Loaded = {}  # call_key -> (gen, epoch) seen by load
        self._readonly = False
        # The last write transaction failed with SQLITE_FULL (cleared by the next commit).
        self.disk_full = False
        # Where open() moved a corrupt file before starting a fresh store (else None).
        self.quarantined: Path | None = None
        # Set once open() has checked and set up the file: a corrupt page found after
        # that stops the process (StateCorruptExit), one found by open is StateCorrupt.
        self._opened = False
        self.corrupt: StateCorrupt | None = None
        # Every revision this store issues lies above it: 0, or the floor taken when it was
        # rebuilt after a quarantine (state/floor.py, calls.document.rebuild_floor).
        self.revision_floor = 0
        # The reserve kept for deliveries (room.py); None: writes that grow are not held.
        self.room: Room | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        connector_id: str = "",
        synchronous: str = "NORMAL",
        quarantine_corrupt: bool = False,
        min_free_mb: int | None = 0,
    ) -> Self:
        """Open (creating and migrating) the store at `path` (":memory:" works too).

        An existing file is checked with `PRAGMA quick_check` first; a corrupt one
        raises StateCorrupt, or with `quarantine_corrupt` is renamed beside itself
        (`state.db.corrupt-<UTC time>`, 0600) and a fresh store is created in its
        place (`store.quarantined` is then the moved file) whose revisions lie above
        any the old file may have issued (`store.revision_floor`, state/floor.py).
        `min_free_mb`: the reserve the writes that grow the store leave on its disk
        (state/room.py; None = auto, 0 = none, the default for all but the agent).
        """
        sync = synchronous.upper()
        if sync not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be NORMAL, FULL or EXTRA, not {synchronous!r}")
        p = str(path)
        try:
            store = await cls._open_rw(p, connector_id, sync)
        except StateCorrupt:
            if not quarantine_corrupt or p == ":memory:":
                raise
        else:
            return store._with_room(min_free_mb)
        # Before the old file goes: the floor of the next rebuild is above this one.
        try:
            write_floor_file(p, rebuild_floor(time.time(), read_floor_file(p)))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StateDiskFull(f"state disk full: {e}") from e
            raise StoreError(f"{p}: cannot write the revision floor beside it: {e}") from e
        moved = quarantine(p)
        store = await cls._open_rw(p, connector_id, sync)
        store.quarantined = moved
        return store._with_room(min_free_mb)

    def _with_room(self, min_free_mb: int | None) -> Self:
        if self.path != ":memory:" and min_free_mb != 0:
            self.room = Room(os.path.dirname(os.path.abspath(self.path)), min_free_mb)
        return self

    @classmethod
    async def _open_rw(cls, p: str, connector_id: str, synchronous: str) -> Self:
        if p != ":memory:":
            Path(p).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _private_files(p)
        db = await aiosqlite.connect(p, isolation_level=None, check_same_thread=False)
        store = cls(db, p, connector_id)
        try:
            await store._run(store._setup, synchronous)
        except BaseException as e:
            await db.close()
            err = classify(e)
            if err is e:
                raise
            raise err from e
        store._opened = True
        return store

    @classmethod
    async def open_readonly(cls, path: str | Path) -> Self:
        """Open an existing store read-only (a stopped agent's, or beside a running one):
        no file is created, no schema migrated; the query methods work, writes fail."""
        p = _readonly_uri(path)
        db = await aiosqlite.connect(p, uri=True, isolation_level=None, check_same_thread=False)
        store = cls(db, str(path))
        try:
            await store._run(lambda c: c.execute("PRAGMA busy_timeout = 10000"))
            if await store.schema_version() > SCHEMA_VERSION:
                raise StoreError(f"{path}: state schema newer than this agent; upgrade the agent")
        except BaseException:
            await db.close()
            raise
        store._readonly = True
        store._opened = True
        return store

    async def close(self) -> None:
        if self._readonly or self.corrupt is not None:
            await self._db.close()
            return
        try:
            await self._run(self._close_sync)
        finally:
            await self._db.close()

    @staticmethod
    def _close_sync(conn: sqlite3.Connection) -> None:
        # Fold the WAL back into the main file so a stopped agent leaves one file.
        try:
            conn.execute("PRAGMA optimize")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass

    def _setup(self, conn: sqlite3.Connection, synchronous: str) -> None:
        conn.execute("PRAGMA busy_timeout = 10000")
        marker = corrupt_marker(self.path)
        if self.path != ":memory:" and os.path.exists(marker):
            with open(marker, encoding="utf-8", errors="replace") as f:
                why = f.read(500).strip()
            raise StateCorrupt(f"{self.path}: broke while in use ({why})")
        if self.path != ":memory:" and os.path.getsize(self.path) > 0:
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise StateCorrupt(f"{self.path}: quick_check: " + "; ".join(problems)[:500])
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and self.path != ":memory:":
            raise StoreError(f"{self.path}: cannot switch the state store to WAL (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -16000")  # 16 MB page cache
        conn.execute("PRAGMA foreign_keys = OFF")
        # A WAL that one large transaction grew (a prune, a page of rows) is cut back to
        # this once checkpointed, so the room it took returns to the filesystem (room.py).
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: state schema version {version} is newer than this agent "
                f"understands ({SCHEMA_VERSION}); upgrade the agent or use a new STATE_DIR"
            )
        if version < SCHEMA_VERSION:
            migrate(conn, version)
        self.revision_floor = apply_floor(conn, self.path)

    async def schema_version(self) -> int:
        rows = await self._run(lambda c: c.execute("PRAGMA user_version").fetchone())
        return int(rows[0])

    # ----------------------------------------------------------------- plumbing

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run fn(conn, *args) in the connection's thread (one hop for the whole body)."""
        db = self._db

        def call() -> _T:
            return fn(db._conn, *args, **kwargs)

        # aiosqlite's own queue (its public methods are one statement per hop)
        try:
            result: _T = await cast(Any, db)._execute(call)
        except (sqlite3.Error, StateCorrupt) as e:
            err = classify(e)
            if isinstance(err, StateCorrupt) and self._opened:
                raise self._broke(err) from e
            raise
        return result

    def _broke(self, err: StateCorrupt) -> StateCorruptExit:
        """A page went bad while the store was open: say so once, mark the file for the
        next start's quarantine, and stop the process (see StateCorruptExit). A read-only
        store (a command beside the agent) only stops: the agent's own store decides."""
        if self.corrupt is None:
            self.corrupt = err
            if self._readonly:
                log.critical("%s. Stopping (exit code 1).", err)
            else:
                if self.path != ":memory:":
                    _mark_corrupt(self.path, err)
                log.critical(
                    "%s. The agent stops (exit code 1): the next start quarantines %s and "
                    "re-reads the PBX tables from STATE_RECOVERY_LOOKBACK before now. "
                    "See docs/operations.md, 'The state file is corrupt'.",
                    err,
                    self.path,
                )
        task = asyncio.current_task()
        if task is not None:  # the exit is the report: no "exception never retrieved" dump
            task.add_done_callback(_retrieve)
        return StateCorruptExit(self.corrupt)

    async def has_room(self, what: Need) -> bool:
        """Whether a write adding `what` would be accepted now (room.py); sets
        `disk_full` when it would not, as a refused write does."""
        room = self.room
        if room is None:
            return True
        try:
            await self._run(room.check, what)
        except StateDiskLow:
            self.disk_full = True
            return False
        return True

    async def _tx_growing(
        self,
        what: Need,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """`_tx` for a write that grows the store (rows, documents): refused with
        StateDiskLow, before it begins, while the room left is below the reserve."""
        room = self.room
        if room is None:
            return await self._tx(fn, *args, **kwargs)

        def checked(conn: sqlite3.Connection, /, *a: _P.args, **k: _P.kwargs) -> _T:
            room.check(conn, what)
            return fn(conn, *a, **k)

        return await self._tx(checked, *args, **kwargs)

    async def _tx(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run fn(conn, *args) inside BEGIN IMMEDIATE ... COMMIT (rollback on error)."""

        def body(conn: sqlite3.Connection) -> _T:
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn, *args, **kwargs)
                conn.execute("COMMIT")
            except BaseException as e:
                # SQLite may already have rolled back (SQLITE_FULL does): a second
                # ROLLBACK would raise "no transaction is active" and hide the cause.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                err = classify(e)
                self.disk_full = isinstance(err, StateDiskFull)
                if err is e:
                    raise
                raise err from e
            self.disk_full = False
            return result

        return await self._run(body)
