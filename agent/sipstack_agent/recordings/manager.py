"""The recordings coordinator: detectors -> stability -> state store (+ upload queue).

The app tells it about calls (`on_call`, after each evaluation); `run(stop)`
then, every RECORDING_POLL_INTERVAL seconds:

1. scans the file system incrementally (`FsIndex`);
2. asks DB_TABLE_RECORDINGS (when set) about known calls;
3. probes the CEL MixMonitor / cdr.recordingfile / table candidates not found
   yet, then matches indexed file names against the uniqueids/linkedids of
   known calls (a file named by several sources keeps the first source);
4. checks every found file for stability; when it is stable and its call is
   complete, stores it on the call (`store.add_recordings` -> the call is
   re-evaluated and its next document carries `recording_files`) and, with
   RECORDING_UPLOAD=true, queues the upload (outbox kind "recording", sent by
   the outbox's recording worker, shipping.RecordingShipper);
5. persists the files still being watched in the store's `recording_watch`
   table (a restart resumes them).

Files are de-duplicated by real path; every path is checked against
RECORDING_PATHS (`paths.resolve_under_roots`), refusals are counted.

Which call a file belongs to is `known.KnownCalls` (the calls it was told
about, their ids and hints, bounded by RECORDING_KNOWN_CALL_WINDOW and
RECORDING_KNOWN_CALL_MAX); a file found is watched under that call's key
(`Watched.call_key`, persisted) until it is stored on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sipstack_agent.config import DatabaseSettings, Identity, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CdrRow, CelRow, RecordingFile
from sipstack_agent.recording_queue import KIND, recording_key, upload_payload
from sipstack_agent.recordings.detect import (
    SOURCE_FS,
    FsIndex,
    Hint,
    RecordingsTable,
    cdr_hints,
    cel_hints,
    table_row_hint,
)
from sipstack_agent.recordings.known import KnownCall, KnownCalls
from sipstack_agent.recordings.paths import (
    REFUSED_TRAVERSAL,
    Resolved,
    first_existing,
    freepbx_day_dirs,
    local_dates,
    real_roots,
    resolve_under_roots,
)
from sipstack_agent.recordings.stability import StabilityTracker
from sipstack_agent.state import StoreStats

log = logging.getLogger("sipstack_agent.recordings")

MAX_WATCHED = 20_000


class RecordingStore(Protocol):
    """The part of `state.StateStore` the recordings use."""

    async def add_recordings(self, linkedid: str, recordings: Sequence[RecordingFile]) -> int: ...

    async def enqueue(
        self, kind: str, idempotency_key: str, payload: Mapping[str, Any], call_key: str = ""
    ) -> bool: ...

    async def recording_watch(self) -> list[dict[str, Any]]: ...

    async def set_recording_watch(self, items: Sequence[Mapping[str, Any]]) -> None: ...

    async def stats(self, now: datetime) -> StoreStats: ...


@dataclass(slots=True)
class Watched:
    """A recording file found for a call, waiting to be stable (JSON-persisted)."""

    real_path: str
    call_key: str
    source: str
    uniqueid: str = ""
    original: str = ""
    started_at: str = ""  # ISO
    complete: bool = False  # the call's completion as last known
    found_at: float = 0.0


class RecordingManager:
    """Finds recordings of known calls, waits for them to be stable, hands them on.

    Constructor (the app builds one per agent):
        RecordingManager(settings.recordings, store, metrics,
                         identity=settings.identity,
                         database=settings.database,        # recordings table, DB_TIMEZONE
                         on_queued=recording_shipper.notify)  # with RECORDING_UPLOAD=true
    Then `await manager.on_call(...)` after each call evaluation and
    `await manager.run(stop)` as one of the agent's stages; the uploads it
    queues are sent by the outbox's recording worker, a stage of its own.
    """

    def __init__(
        self,
        settings: RecordingSettings,
        store: RecordingStore,
        metrics: Metrics,
        *,
        identity: Identity | None = None,
        database: DatabaseSettings | None = None,
        on_queued: Callable[[], None] | None = None,
        poll_interval: float | None = None,
        clock: Callable[[], float] = time.time,
        table: RecordingsTable | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.identity = identity or Identity()
        self.clock = clock
        self.poll_interval = poll_interval if poll_interval is not None else settings.poll_interval
        self.timezone = database.timezone if database else "UTC"
        self.paths = tuple(p for p in settings.paths if p)
        self.extensions = tuple(settings.extensions)
        self.roots = real_roots(self.paths)
        self.stability = StabilityTracker(
            settings.stability_check_count, settings.stability_check_interval
        )
        self.fs = FsIndex(
            self.paths,
            self.extensions,
            budget=settings.scan_budget,
            index_window=settings.fs_index_window,
            clock=clock,
        )
        self.table = table
        if self.table is None and database is not None and database.table_recordings:
            self.table = RecordingsTable(database, settings.columns)
        self.upload = settings.upload  # queue an upload for every stored recording
        self.on_queued = on_queued
        self.known = KnownCalls(settings.known_call_max, settings.known_call_window, clock)
        self.watched: dict[str, Watched] = {}  # real path -> watched file
        self._refused_seen: set[str] = set()
        self._full_warned = False
        self._dirty = False
        self._loaded = False
        self.table_errors = 0
        self.last_table_error: str | None = None

    # ------------------------------------------------------------------ input

    async def on_call(
        self,
        call_key: str,
        cels: Sequence[CelRow],
        cdrs: Sequence[CdrRow],
        recordings: Sequence[RecordingFile] = (),
        *,
        complete: bool,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        """Tell the manager about a call (after each evaluation of it).

        `recordings`: those the store already has for it (not detected again);
        `complete`: Evaluation.call.is_complete; `document`: the newest document
        dict if one was produced (fields for the upload form).
        """
        kc = self.known.see(call_key, cels, cdrs, recordings, complete=complete, document=document)
        kc.add_hints(
            cel_hints(cels, self.paths, self.extensions)
            + cdr_hints(cdrs, self.paths, self.extensions, self.timezone)
        )
        watching = False
        for w in self.watched.values():
            if w.call_key != call_key and w.call_key in kc.linkedids:
                w.call_key = call_key  # found for a call merged into this one since
                self._dirty = True
            if w.call_key == call_key:
                watching = True
                if w.complete != complete:
                    w.complete = complete
                    self._dirty = True
        if complete and recordings and not watching:
            # resolved: ended, its recordings stored, no file of it still being watched
            # (its rows' hints were probed when they first came, before it ended)
            self.known.forget([call_key])
            return
        if kc.started_at is not None:
            self.fs.prioritize(
                d for root in self.paths for d in freepbx_day_dirs(root, local_dates(kc.started_at))
            )
        self.known.evict()

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """Detect until `stop`. Never raises on I/O trouble."""
        await self.load()
        log.info(
            "recordings: paths %s, upload %s, table %s",
            ",".join(self.paths) or "-",
            "on" if self.upload else "off",
            self.table.table if self.table else "-",
        )
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("recordings pass failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
        finally:
            with contextlib.suppress(Exception):
                await self.save()
            if self.table is not None:
                await self.table.close()

    async def poll_once(self) -> int:
        """One detection pass; returns the number of recordings handed on."""
        if not self._loaded:
            await self.load()
        self.known.expire()
        await asyncio.to_thread(self.fs.scan)
        if self.table is not None:
            await self._poll_table()
        # named files first (CEL, cdr.recordingfile, table), then name matching
        batch = [(kc, list(kc.hints)) for kc in self.known if kc.hints]
        if batch:
            flat = [h for _, hints in batch for h in hints]
            results = await asyncio.to_thread(self._probe, flat)  # one thread hop per pass
            i = 0
            for kc, hints in batch:
                self._apply_probe(kc, hints, results[i : i + len(hints)])
                i += len(hints)
        self._match_fs()
        handed = await self._check_stability()
        if self._dirty:
            await self.save()
        await self._update_pending()
        return handed

    async def _update_pending(self) -> None:
        """sipstack_recordings_pending = files waiting to be stable + uploads queued."""
        queued = 0
        if self.upload:
            with contextlib.suppress(Exception):
                stats = await self.store.stats(datetime.now(UTC))
                queued = int(stats.outbox_by_kind.get(KIND, 0))
        self.metrics.recordings_pending.set(len(self.watched) + queued)

    # ------------------------------------------------------------------ detection

    def _track(
        self,
        real: str,
        call_key: str,
        source: str,
        *,
        uniqueid: str = "",
        original: str = "",
        started_at: datetime | None = None,
    ) -> bool:
        if real in self.watched or real in self.known.stored:
            return False
        if len(self.watched) >= MAX_WATCHED:
            if not self._full_warned:
                log.warning("recordings: %d files watched already; not watching more", MAX_WATCHED)
                self._full_warned = True
            return False
        kc = self.known.get(call_key)
        self.watched[real] = Watched(
            real_path=real,
            call_key=call_key,
            source=source,
            uniqueid=uniqueid,
            original=original or real,
            started_at=(started_at or (kc.started_at if kc else None) or datetime.now(UTC))
            .astimezone(UTC)
            .isoformat(),
            complete=bool(kc and kc.complete),
            found_at=self.clock(),
        )
        self.metrics.recordings_detected.labels(source).inc()
        self._dirty = True
        log.info("recording found (%s) for call %s: %s", source, call_key, os.path.basename(real))
        return True

    def _refuse(self, path: str, reason: str) -> None:
        if path in self._refused_seen:
            return
        if len(self._refused_seen) > 10_000:
            self._refused_seen.clear()
        self._refused_seen.add(path)
        self.metrics.recording_paths_refused.inc()
        log.warning(
            "recording path refused (%s): %s (outside RECORDING_PATHS; add its directory "
            "there if it is a legitimate recording location)",
            reason,
            path,
        )

    def _probe(self, hints: Sequence[Hint]) -> list[tuple[str | None, list[Resolved]]]:
        """Probe hint candidates (blocking: runs in a thread, mutates nothing).

        Per hint: (real path found or None, refused candidates).
        """
        out: list[tuple[str | None, list[Resolved]]] = []
        for h in hints:
            found, refused = first_existing(h.candidates, self.roots)
            if found is not None and found.real_path is not None:
                out.append((found.real_path, []))
                continue
            if refused:
                out.append((None, refused))
                continue
            # FreePBX recordingfile / table name: maybe in another dated folder
            name = os.path.basename(h.candidates[0]) if h.candidates else ""
            real: str | None = None
            for p in self.fs.find_name(name) if name else []:
                res = resolve_under_roots(p, self.roots)
                if res.ok and res.real_path:
                    real = res.real_path
                    break
            out.append((real, []))
        return out

    def _apply_probe(
        self,
        kc: KnownCall,
        hints: Sequence[Hint],
        results: Sequence[tuple[str | None, list[Resolved]]],
    ) -> None:
        settled: set[int] = set()
        for h, (real, refused) in zip(hints, results, strict=True):
            if real is not None:
                self._track(
                    real,
                    kc.call_key,
                    h.source,
                    uniqueid=h.uniqueid,
                    original=h.original if os.path.isabs(h.original) else h.candidates[0],
                    started_at=h.started_at,
                )
                settled.add(id(h))
            elif refused:
                for r in refused:
                    self._refuse(r.path, r.refused or REFUSED_TRAVERSAL)
                settled.add(id(h))  # never retried: it will not become safe
        kc.hints = [h for h in kc.hints if id(h) not in settled]

    def _match_fs(self) -> None:
        ids = self.known.owners()
        if not ids:
            return
        for cid, paths in self.fs.find(ids).items():
            for p in sorted(paths):
                res = resolve_under_roots(p, self.roots)
                if res.refused is not None:
                    self._refuse(p, res.refused)
                    continue
                if res.ok and res.real_path:
                    kc = self.known.get(ids[cid])
                    assert kc is not None  # owners() names known calls only
                    self._track(
                        res.real_path,
                        kc.call_key,
                        SOURCE_FS,
                        uniqueid=cid if cid in kc.uniqueids else "",
                        original=p,
                    )

    async def _poll_table(self) -> None:
        assert self.table is not None
        lids, uids = self.known.ids()
        if not lids and not uids:
            return
        try:
            rows = await self.table.fetch(lids, uids)
        except Exception as exc:
            self.table_errors += 1
            self.last_table_error = f"{type(exc).__name__}: {exc}"[:300]
            self.metrics.db_reconnects.labels("recordings").inc()
            log.warning("recordings table: %s", self.last_table_error)
            return
        owner = self.known.owners()
        for row in rows:
            h = table_row_hint(row, self.paths, self.extensions, self.timezone)
            if h is None:
                continue
            key = owner.get(h.linkedid) or owner.get(h.uniqueid)
            if key is None:
                continue
            kc = self.known.get(key)
            if kc is not None:
                kc.add_hints([h])

    # ------------------------------------------------------------------ stability

    def _complete(self, w: Watched) -> bool:
        """The call's completion; a call no longer known (restart, expiry) counts as
        complete once the file has been watched for RECORDING_KNOWN_CALL_WINDOW."""
        kc = self.known.get(w.call_key)
        if kc is not None:
            return kc.complete
        return w.complete or self.clock() - w.found_at > self.settings.known_call_window

    async def _check_stability(self) -> int:
        now = self.clock()
        due = [p for p in self.watched if self.stability.due(p, now)]
        stats = await asyncio.to_thread(_stat_many, due)
        handed = 0
        for p in due:
            st = stats.get(p)
            w = self.watched[p]
            if st is None:  # gone (deleted, rotated): forget it
                self.stability.forget(p)
                del self.watched[p]
                self._dirty = True
                continue
            stable = self.stability.observe(p, st[0], st[1], now)
            if stable and self._complete(w):
                try:
                    await self._hand_on(w, st[0], st[1])
                except Exception:
                    log.exception("could not store recording %s", p)
                    continue
                self.stability.forget(p)
                del self.watched[p]
                self.known.stored[p] = w.call_key
                self._dirty = True
                handed += 1
        return handed

    async def _hand_on(self, w: Watched, size: int, mtime_ns: int) -> None:
        rec = RecordingFile(
            filename=os.path.basename(w.real_path),
            file_path=w.real_path,
            source=w.source,
            file_size=size,
            started_at=datetime.fromisoformat(w.started_at) if w.started_at else None,
            uploaded=False,
            uniqueid=w.uniqueid,
        )
        kc = self.known.get(w.call_key)
        info = dict(kc.info) if kc else {}  # before the await: the call may be resolved then
        await self.store.add_recordings(w.call_key, [rec])
        if self.upload:
            key = recording_key(self.identity.connector_id, w.call_key, rec.filename)
            payload = upload_payload(
                rec, linkedid=w.call_key, original_path=w.original, mtime_ns=mtime_ns, call=info
            )
            await self.store.enqueue(KIND, key, payload, w.call_key)
            if self.on_queued is not None:
                self.on_queued()
        log.info("recording ready for call %s: %s (%d bytes)", w.call_key, rec.filename, size)

    # ------------------------------------------------------------------ housekeeping

    async def load(self) -> None:
        """Resume the files watched before a restart."""
        self._loaded = True
        try:
            items = await self.store.recording_watch()
        except Exception:
            log.exception("could not load watched recordings")
            return
        for item in items:
            try:
                w = Watched(**item)
            except TypeError:
                continue
            self.watched.setdefault(w.real_path, w)

    async def save(self) -> None:
        self._dirty = False
        await self.store.set_recording_watch([asdict(w) for w in self.watched.values()])

    def status(self) -> dict[str, Any]:
        return {
            "known_calls": len(self.known),
            "watched": len(self.watched),
            "indexed_files": self.fs.indexed_files,
            "scan_passes": self.fs.passes,
            "table_errors": self.table_errors,
            "last_table_error": self.last_table_error,
            "upload": self.upload,
        }


def _stat_many(paths: Iterable[str]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out[p] = (st.st_size, st.st_mtime_ns)
    return out
