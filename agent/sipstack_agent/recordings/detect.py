"""The three recording detectors: CEL MixMonitor, a database table, the file system.

- `cel_hints` / `cdr_hints` (pure): APP_START rows of MixMonitor and FreePBX's
  `cdr.recordingfile` values -> `Hint`s (candidate paths tied to a call).
- `RecordingsTable`: a read-only poller of DB_TABLE_RECORDINGS over
  asyncpg / aiomysql / aiosqlite, asking only about calls the agent knows.
- `FsIndex`: an incremental, budgeted scan of RECORDING_PATHS that keeps an
  index of recent recording file names by the uniqueid they carry.

`RecordingManager` (manager.py) merges what they find per call and
de-duplicates by real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sipstack_agent.config import DatabaseSettings
from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.recordings.paths import (
    has_known_extension,
    id_tail,
    ids_in_name,
    local_dates,
    mixmonitor_candidates,
    name_matches_id,
    recordingfile_candidates,
)
from sipstack_agent.sources.sql.drivers import Db, connect
from sipstack_agent.zones import tzinfo_of

log = logging.getLogger(__name__)

SOURCE_CEL = "cel_mixmonitor"
SOURCE_DB = "database"
SOURCE_FS = "filesystem"


@dataclass(frozen=True, slots=True)
class Hint:
    """A place a recording of a call may be, from one detector."""

    source: str
    candidates: tuple[str, ...]  # probed in order; the first existing one inside the tree wins
    linkedid: str
    uniqueid: str = ""
    started_at: datetime | None = None
    original: str = ""  # the value as the PBX wrote it (appdata token, column value)


# ---------------------------------------------------------------------------
# CEL and CDR (pure)


def cel_hints(
    cels: Iterable[CelRow], recording_paths: Sequence[str], extensions: Sequence[str]
) -> list[Hint]:
    """One hint per APP_START of MixMonitor (the file is the first appdata token)."""
    out: list[Hint] = []
    for row in cels:
        if row.eventtype != "APP_START" or row.appname.lower() != "mixmonitor":
            continue
        cands = mixmonitor_candidates(row.appdata, recording_paths, extensions)
        if not cands:
            continue
        out.append(
            Hint(
                SOURCE_CEL,
                tuple(cands),
                row.call_linkedid,
                row.uniqueid,
                row.eventtime,
                row.appdata.split(",", 1)[0].strip(),
            )
        )
    return out


def cdr_hints(
    cdrs: Iterable[CdrRow],
    recording_paths: Sequence[str],
    extensions: Sequence[str],
    timezone: str = "UTC",
) -> list[Hint]:
    """FreePBX's `cdr.recordingfile` (base name under monitor/YYYY/MM/DD, or a full path)."""
    out: list[Hint] = []
    for row in cdrs:
        value = row.extra("recordingfile").strip()  # noqa: S610 - CdrRow.extra, not Django
        if not value:
            continue
        cands = recordingfile_candidates(
            value, recording_paths, extensions, local_dates(row.calldate, timezone)
        )
        if cands:
            out.append(
                Hint(SOURCE_DB, tuple(cands), row.call_linkedid, row.uniqueid, row.calldate, value)
            )
    return out


def table_row_hint(
    row: dict[str, Any],
    recording_paths: Sequence[str],
    extensions: Sequence[str],
    timezone: str = "UTC",
) -> Hint | None:
    """A recordings-table row (keys: linkedid, uniqueid, filename, file_path, created_at)."""
    linkedid = str(row.get("linkedid") or "").strip()
    uniqueid = str(row.get("uniqueid") or "").strip()
    filename = str(row.get("filename") or "").strip()
    file_path = str(row.get("file_path") or "").strip()
    created = _as_utc(row.get("created_at"), timezone)
    if not (linkedid or uniqueid) or not (filename or file_path):
        return None
    dates = local_dates(created, timezone) if created else []
    cands: list[str] = []
    if file_path and filename and os.path.basename(file_path) != filename:
        # file_path names the directory
        cands += recordingfile_candidates(
            os.path.join(file_path, filename), recording_paths, extensions, dates
        )
    if file_path:
        cands += recordingfile_candidates(file_path, recording_paths, extensions, dates)
    if filename:
        cands += recordingfile_candidates(filename, recording_paths, extensions, dates)
    if not cands:
        return None
    return Hint(
        SOURCE_DB,
        tuple(dict.fromkeys(cands)),
        linkedid or uniqueid,
        uniqueid,
        created,
        file_path or filename,
    )


def _as_utc(value: Any, timezone: str) -> datetime | None:
    if value is None or value == "":
        return None
    dt: datetime | None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if dt.tzinfo is None:
        try:
            dt = dt.replace(tzinfo=tzinfo_of(timezone))
        except ValueError:
            dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ---------------------------------------------------------------------------
# Database table (read-only)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
ROLES = ("linkedid", "uniqueid", "filename", "file_path", "created_at")


def parse_columns(columns: Sequence[str]) -> dict[str, str]:
    """RECORDINGS_COLUMNS -> {role: column}.

    Either positional (the column names of linkedid, uniqueid, filename,
    file_path, created_at, in that order; an empty entry = no such column) or
    `role=column` pairs. Needs linkedid or uniqueid, and filename or file_path.
    """
    mapping: dict[str, str] = {}
    if any("=" in c for c in columns):
        for c in columns:
            if not c.strip():
                continue
            role, _, col = c.partition("=")
            role, col = role.strip(), col.strip()
            if role not in ROLES:
                raise ValueError(f"RECORDINGS_COLUMNS: unknown role {role!r}")
            if col:
                mapping[role] = col
    else:
        for role, col in zip(ROLES, columns, strict=False):
            if col.strip():
                mapping[role] = col.strip()
    for col in mapping.values():
        if not _IDENT.match(col):
            raise ValueError(f"RECORDINGS_COLUMNS: invalid column name {col!r}")
    if "linkedid" not in mapping and "uniqueid" not in mapping:
        raise ValueError("RECORDINGS_COLUMNS: needs a linkedid or uniqueid column")
    if "filename" not in mapping and "file_path" not in mapping:
        raise ValueError("RECORDINGS_COLUMNS: needs a filename or file_path column")
    return mapping


def _quote(ident: str, dialect: str) -> str:
    q = "`" if dialect == "mysql" else '"'
    return ".".join(f"{q}{p}{q}" for p in ident.split("."))


def build_query(
    table: str, mapping: dict[str, str], dialect: str, n_linked: int, n_unique: int
) -> str:
    """SELECT of the recordings of some linkedids/uniqueids (placeholders per dialect)."""
    if not _IDENT.match(table):
        raise ValueError(f"DB_TABLE_RECORDINGS: invalid table name {table!r}")
    cols = ", ".join(f"{_quote(c, dialect)} AS {role}" for role, c in mapping.items())
    counter = iter(range(1, n_linked + n_unique + 1))

    def ph() -> str:
        i = next(counter)
        return f"${i}" if dialect == "postgresql" else ("%s" if dialect == "mysql" else "?")

    conds: list[str] = []
    for role, n in (("linkedid", n_linked), ("uniqueid", n_unique)):
        if n and role in mapping:
            marks = ", ".join(ph() for _ in range(n))
            conds.append(f"{_quote(mapping[role], dialect)} IN ({marks})")
    where = " OR ".join(conds) if conds else "1=0"
    return f"SELECT {cols} FROM {_quote(table, dialect)} WHERE {where}"


class RecordingsTable:
    """Polls DB_TABLE_RECORDINGS for the recordings of known calls. SELECT only.

    `fetch(linkedids, uniqueids)` returns row dicts keyed by role. Connection
    failures raise; the manager logs, counts and retries next pass.
    """

    CHUNK = 200

    def __init__(self, db: DatabaseSettings, columns: Sequence[str]) -> None:
        self.db = db
        self.table = db.table_recordings
        self.mapping = parse_columns(columns)
        self.dialect = {"postgres": "postgresql", "mariadb": "mysql"}.get(db.type, db.type)
        if self.dialect not in ("postgresql", "mysql", "sqlite"):
            raise ValueError(f"DB_TYPE: unsupported {db.type!r}")
        self._conn: Db | None = None

    async def _connect(self) -> Db:
        """One read-only connection, opened as every PBX database reader opens it."""
        return await connect(self.db, 1)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.close()

    async def fetch(
        self, linkedids: Sequence[str], uniqueids: Sequence[str]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        lids = list(dict.fromkeys(linkedids)) if "linkedid" in self.mapping else []
        uids = list(dict.fromkeys(uniqueids)) if "uniqueid" in self.mapping else []
        try:
            if self._conn is None:
                self._conn = await asyncio.wait_for(self._connect(), self.db.connect_timeout + 5.0)
            for i in range(0, max(len(lids), len(uids)), self.CHUNK):
                a, b = lids[i : i + self.CHUNK], uids[i : i + self.CHUNK]
                if a or b:
                    timeout = max(30.0, self.db.connect_timeout)
                    out.extend(await asyncio.wait_for(self._query(a, b), timeout))
        except Exception:
            await self.close()
            raise
        return out

    async def _query(self, lids: list[str], uids: list[str]) -> list[dict[str, Any]]:
        sql = build_query(self.table, self.mapping, self.dialect, len(lids), len(uids))
        args = [*lids, *uids]
        roles = list(self.mapping)
        assert self._conn is not None
        rows = await self._conn.fetch(sql, args)
        return [dict(zip(roles, _decode_row(row), strict=False)) for row in rows]


def _decode(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(v).decode("latin-1")  # MySQL latin1 columns: lossless
    return v


def _decode_row(row: Sequence[Any]) -> list[Any]:
    return [_decode(v) for v in row]


# ---------------------------------------------------------------------------
# File system


@dataclass(slots=True)
class _Dir:
    mtime_ns: int = -1  # -1: never listed
    files: list[str] = field(default_factory=list)  # indexed recording names (recent dirs)
    subdirs: list[str] = field(default_factory=list)


class FsIndex:
    """Incremental, budgeted scan of RECORDING_PATHS.

    Each `scan()` pass looks at no more than `budget` directory entries
    (stats + names listed). Directories are revisited round-robin, the roots
    and recently changed directories (FreePBX's today/yesterday) first; a
    directory is listed again only when its mtime changed. Names of recording
    files in directories modified within `index_window` seconds are kept in an
    index by the uniqueid tokens they carry, so a call that becomes known
    after its file was created still finds it (`find(ids)`), without a walk.
    Symlinked directories are not followed.
    """

    def __init__(
        self,
        roots: Sequence[str],
        extensions: Sequence[str],
        *,
        budget: int = 2000,
        index_window: float = 2 * 86400.0,
        max_indexed: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # real paths: a root that is a symlink (monitor -> /data/monitor) is scanned
        # through its target, whose mtime is the one that changes
        self.roots = [os.path.realpath(r) for r in roots if r]
        self.extensions = tuple(extensions)
        self.budget = max(10, int(budget))
        self.index_window = index_window
        self.max_indexed = max_indexed
        self.clock = clock
        self._dirs: dict[str, _Dir] = {}
        self._queue: deque[str] = deque()
        self._priority: list[str] = []
        self._real_dirs: dict[str, str | None] = {}  # prioritize(): dir -> real path, or None
        self._hot_cursor = 0
        self._by_token: dict[str, set[str]] = {}
        self._indexed = 0
        self.passes = 0
        self.entries_seen = 0  # total directory entries looked at (tests, status)
        self.full_cycles = 0

    # -- index

    def _unindex(self, d: str, info: _Dir) -> None:
        for name in info.files:
            for tok in ids_in_name(name):
                paths = self._by_token.get(tok)
                if paths is not None:
                    paths.discard(os.path.join(d, name))
                    if not paths:
                        del self._by_token[tok]
        self._indexed -= len(info.files)
        info.files = []

    def _index(self, d: str, info: _Dir, names: list[str]) -> None:
        info.files = names
        self._indexed += len(names)
        for name in names:
            for tok in ids_in_name(name):
                self._by_token.setdefault(tok, set()).add(os.path.join(d, name))

    def find(self, call_ids: Iterable[str]) -> dict[str, set[str]]:
        """{call_id: paths} of indexed files whose name carries that id as a whole token."""
        out: dict[str, set[str]] = {}
        for cid in call_ids:
            tail = id_tail(cid)
            if not tail:
                continue
            for p in self._by_token.get(tail, ()):
                if name_matches_id(os.path.basename(p), cid):
                    out.setdefault(cid, set()).add(p)
        return out

    def find_name(self, name: str) -> list[str]:
        """Indexed paths whose base name is `name` (for a bare cdr.recordingfile)."""
        out: list[str] = []
        for tok in ids_in_name(name):
            out.extend(p for p in self._by_token.get(tok, ()) if os.path.basename(p) == name)
        return sorted(set(out))

    @property
    def indexed_files(self) -> int:
        return self._indexed

    # -- scanning

    def prioritize(self, dirs: Iterable[str]) -> None:
        """Look at these directories first in the next pass (e.g. today's FreePBX folder)."""
        for d in dirs:
            if len(self._priority) >= 1000:
                break
            real = self._real_dir(d)
            if real is not None and real not in self._priority:
                self._priority.append(real)

    def _real_dir(self, d: str) -> str | None:
        """`d`'s real path when it is under a root (resolved once per directory: every
        call of a day names the same few FreePBX day folders)."""
        if d in self._real_dirs:
            return self._real_dirs[d]
        if len(self._real_dirs) >= 4096:
            self._real_dirs.clear()
        real = os.path.realpath(d)
        inside = any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.roots)
        self._real_dirs[d] = real if inside else None
        return self._real_dirs[d]

    def scan(self) -> int:
        """One bounded pass; returns the number of entries looked at.

        First the roots, directories never listed and directories modified
        within the index window (FreePBX's current YYYY/MM/DD chain), then the
        round-robin over every other known directory until the budget is spent.
        A single directory larger than the budget is still listed whole.
        """
        self.passes += 1
        now = self.clock()
        spent = 0
        seen: set[str] = set()

        def visit(d: str) -> None:
            nonlocal spent
            if d in seen:
                return
            seen.add(d)
            spent += 1 + self._visit(d, now)

        first = [*self.roots, *self._priority]
        self._priority.clear()
        for d in first:
            visit(d)
        while spent < self.budget:  # never listed (new, or discovered during this pass)
            fresh = [d for d, i in self._dirs.items() if i.mtime_ns < 0 and d not in seen]
            if not fresh:
                break
            for d in fresh:
                if spent >= self.budget:
                    break
                visit(d)
        # recently modified directories, round-robin so a large hot set is not starved
        hot = [
            d
            for d, i in self._dirs.items()
            if d not in seen and now - i.mtime_ns / 1e9 <= self.index_window
        ]
        if hot:
            start = self._hot_cursor % len(hot)
            for n, d in enumerate(hot[start:] + hot[:start]):
                if spent >= self.budget:
                    self._hot_cursor = start + n
                    break
                visit(d)
            else:
                self._hot_cursor = 0
        while spent < self.budget:
            if not self._queue:
                self.full_cycles += 1
                self._queue.extend(d for d in self._dirs if d not in seen)
                if not self._queue:
                    break
            d = self._queue.popleft()
            if d not in self._dirs and d not in self.roots:
                continue
            visit(d)
        self.entries_seen += spent
        return spent

    def _visit(self, d: str, now: float) -> int:
        info = self._dirs.get(d)
        try:
            st = os.stat(d, follow_symlinks=False)
        except OSError:
            if info is not None:
                self._unindex(d, info)
                for sub in info.subdirs:
                    self._forget_tree(sub)
                del self._dirs[d]
            return 0
        if info is None:
            info = self._dirs[d] = _Dir()
        recent = now - st.st_mtime_ns / 1e9 <= self.index_window
        if st.st_mtime_ns == info.mtime_ns:
            if info.files and not recent:
                self._unindex(d, info)  # aged out of the window
            return 0
        names: list[str] = []
        subdirs: list[str] = []
        count = 0
        try:
            with os.scandir(d) as it:
                for entry in it:
                    count += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.path)
                        elif recent and has_known_extension(entry.name, self.extensions):
                            names.append(entry.name)
                    except OSError:
                        continue
        except OSError:
            return count
        self._unindex(d, info)
        if names and self._indexed + len(names) <= self.max_indexed:
            self._index(d, info, names)
        gone = set(info.subdirs) - set(subdirs)
        for sub in gone:
            self._forget_tree(sub)
        for sub in subdirs:
            if sub not in self._dirs:
                self._dirs[sub] = _Dir()  # never listed: visited first in the next pass
        info.subdirs = subdirs
        info.mtime_ns = st.st_mtime_ns
        return count

    def _forget_tree(self, d: str) -> None:
        info = self._dirs.pop(d, None)
        if info is None:
            return
        self._unindex(d, info)
        for sub in info.subdirs:
            self._forget_tree(sub)
