"""`sipstack-agent resend --since T [--until T] [--linkedid X ...]`.

Reads a window again from the PBX tables (and the CEL CSV file with CEL_MODE=csv)
and ships every call that started in it as a new revision (for when the service
lost data, or after a mapping fix):

- time pages (`PAGE`): each table's rows of the page (sources/window.py) go into a
  scratch state store (`STATE_DIR/resend.db`, the same grouping as the live agent);
  calls are evaluated with the page's end as "now", so a call closes when its rows
  say so (LINKEDID_END, idle timeout in PBX time); closed calls are pruned from the
  scratch store at once: memory and disk hold the open calls only.
- a closed call that started in [since, until) (and is one of `--linkedid`, when
  given) goes into the running agent's outbox as its next revision with its own
  Idempotency-Key (StateStore.enqueue_resend), in one short transaction with the
  resend cursor (positions["resend"]); the running agent ships it.
- resumable: the same window started again continues after the last saved page
  (a page cut by a kill is read again; its calls may get one more revision).
Reading starts `LEAD` before `since` so calls that began earlier are seen whole
(and left out); it goes past `until` until the calls begun in the window closed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from ..calls import evaluate
from ..config import CallSettings, Identity, Settings
from ..metrics import Metrics
from ..model import CdrRow, CelRow
from ..sources.sql.discovery import discover
from ..sources.sql.drivers import Db, connect
from ..sources.sql.table import TableInfo
from ..sources.timezone import ZoneResolver
from ..sources.window import CsvWindow, read_between
from ..state import StateStore, StoreError
from .deadletters import state_path

CURSOR = "resend"
SCRATCH_FILE = "resend.db"
PAGE = timedelta(minutes=15)
LEAD = timedelta(hours=1)
_BATCH = 500  # calls evaluated (and documents queued) per transaction


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    linkedids: tuple[str, ...] = ()
    open_end: bool = False  # no --until given: `until` is now, or an unfinished resend's

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError("--until must be after --since")

    def key(self) -> str:
        return json.dumps([self.since.isoformat(), self.until.isoformat(), sorted(self.linkedids)])

    def wants(self, start: datetime, linkedids: Sequence[str]) -> bool:
        if not self.since <= start < self.until:
            return False
        return not self.linkedids or bool(set(self.linkedids) & set(linkedids))


@dataclass
class Progress:
    window: Window  # as resumed: `--since T` again goes on with the unfinished window
    run: int
    read_through: datetime
    sent: int = 0
    done: bool = False

    def line(self) -> str:
        w = self.window
        state = "done" if self.done else "reading"
        return (
            f"resend {w.since.isoformat()} .. {w.until.isoformat()}: {state}, read through "
            f"{self.read_through.isoformat(timespec='seconds')}, {self.sent} call(s) queued"
        )


def parse_time(text: str) -> datetime:
    """ISO-8601 with an offset (`Z`, `+00:00`, `-05:00`): the instant is never guessed."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no offset: add Z, +00:00 or the PBX's offset")
    return t


async def _cursor(store: StateStore, w: Window, scratch: str) -> Progress:
    """The unfinished resend of this window to go on with, else a new run (and scratch)."""
    cur = await store.get_position(CURSOR) or {}
    if not cur.get("done") and isinstance(cur.get("window"), str):
        since, until, lids = json.loads(cur["window"])
        if w.open_end and since == w.since.isoformat() and lids == sorted(w.linkedids):
            w = dataclasses.replace(w, until=parse_time(until))  # `--since T` again: resume
        if cur["window"] == w.key():
            p = Progress(w, int(cur["run"]), parse_time(cur["read_through"]), int(cur["sent"]))
            return p
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(scratch + suffix)
    return Progress(w, int(cur.get("run", 0)) + 1, w.since - LEAD)


def _saved(w: Window, p: Progress) -> dict[str, dict[str, Any]]:
    return {
        CURSOR: {
            "window": w.key(),
            "run": p.run,
            "read_through": p.read_through.isoformat(),
            "sent": p.sent,
            "done": p.done,
        }
    }


async def _tables(settings: Settings, db: Db) -> list[TableInfo]:
    dbs = settings.database
    out = [await discover(db, dbs.table_cel, "cel")] if settings.cel_mode == "db" else []
    return [*out, await discover(db, dbs.table_cdr, "cdr")]


async def resend(
    settings: Settings, w: Window, *, on_page: Callable[[Progress], None] | None = None
) -> Progress:
    """Run (or resume) the resend of window `w`; the running agent's store gets the
    documents. `on_page` sees the progress after each saved page."""
    path = await asyncio.to_thread(state_path, settings.state_dir)
    scratch_path = os.path.join(settings.state_dir, SCRATCH_FILE)
    cid = settings.identity.connector_id
    store = await StateStore.open(path, connector_id=cid)
    try:
        progress = await _cursor(store, w, scratch_path)
        w = progress.window
        scratch = await StateStore.open(scratch_path, connector_id=cid)
        db = await connect(settings.database, 1) if settings.database_enabled else None
        try:
            resolver = ZoneResolver(
                settings.database, database_enabled=settings.database_enabled, metrics=Metrics()
            )
            zone = await resolver.resolve(db, db.dialect.name if db else None)
            calls = dataclasses.replace(
                settings.calls,
                timezone=zone.name,
                timezone_source=zone.found,
                shipping_mode="complete",
                long_call_update_interval=0.0,
            )
            tables = await _tables(settings, db) if db is not None else []
            csv = CsvWindow(settings.csv, zone.name) if settings.cel_mode == "csv" else None
            batch = max(1, settings.batch_size)
            while not progress.done:
                a = progress.read_through
                b = a + PAGE
                if csv is not None:
                    await scratch.ingest([r for r in await csv.page(b) if r.eventtime >= a], [])
                for info in tables:
                    assert db is not None
                    async for rows in read_between(db, info, zone.tz, a, b, page_rows=batch):
                        cels = [r for r in rows if isinstance(r, CelRow)]
                        cdrs = [r for r in rows if isinstance(r, CdrRow)]
                        await scratch.ingest(cels, cdrs, {})
                await _ship_closed(scratch, store, w, progress, b, calls, settings.identity)
                progress.read_through = b
                opened = (await scratch.stats(b)).open_calls
                progress.done = b >= w.until and (opened == 0 or b >= w.until + timedelta(
                    seconds=calls.max_age))  # fmt: skip
                await store.set_position(CURSOR, _saved(w, progress)[CURSOR])
                await scratch.prune(b, keep_closed_for=0.0, max_calls=1_000_000)
                if on_page is not None:
                    on_page(progress)
        finally:
            if db is not None:
                await db.close()
            await scratch.close()
    finally:
        await store.close()
    return progress


async def _ship_closed(
    scratch: StateStore,
    store: StateStore,
    w: Window,
    progress: Progress,
    now: datetime,
    calls: CallSettings,
    identity: Identity,
) -> None:
    """Evaluate the scratch store's due calls at `now` (PBX time read through); the
    complete documents of the calls that closed and belong to the window go into the
    agent's outbox, a batch at a time, BEFORE the scratch store marks them closed: a
    kill between the two evaluates them again on resume (one more revision), never
    loses one."""
    for _ in range(100_000):
        keys = await scratch.due_calls(now, _BATCH, watermark=now)
        if not keys:
            return
        results = []
        docs: list[dict[str, Any]] = []
        for rec in await scratch.load_calls(keys):
            ev = evaluate(
                rec.cels, rec.cdrs, rec.recordings, rec.ship,
                call_key=rec.call_key, now=now, settings=calls,
                identity=identity, watermark=now,
            )  # fmt: skip
            complete = [d for d in ev.documents if d.get("ship_phase") == "complete"]
            if ev.closed and complete and w.wants(ev.call.derived.start, ev.call.linkedids):
                docs.append(complete[-1])
            results.append((rec.call_key, dataclasses.replace(ev, documents=[])))
        if docs:
            progress.sent += len(docs)
            await store.enqueue_resend(docs, _saved(w, progress), run=progress.run)
        await scratch.save_evaluations(results, now=now)


def run(settings: Settings, w: Window, *, out: TextIO, err: TextIO) -> int:
    try:
        p = asyncio.run(
            resend(settings, w, on_page=lambda p: print(p.line(), file=out, flush=True))
        )
    except StoreError as e:
        print(f"resend: {e}", file=err)
        return 2
    print(f"{p.sent} call(s) queued as new revisions; the running agent ships them", file=out)
    return 0
