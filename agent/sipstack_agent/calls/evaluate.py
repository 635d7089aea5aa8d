"""Ship phases: what to send for one call now, and when to look at it again.

`evaluate()` is the only entry point the state store needs. It is pure: the
caller loads the call's rows and `ShipState`, calls it, and persists the
returned documents, ship state and `next_check_at` in one transaction.

- complete mode (default): one `complete` document when the call ends; while
  it runs longer than LONG_CALL_UPDATE_INTERVAL an `update` document per
  interval (when its content changed since the last one; 0 = never).
- progressive mode: `initial` when first seen, `update` when the content
  changed (at most once per SHIP_UPDATE_MIN_INTERVAL), `complete` once at the end.
- a late row after the complete document: one more `complete` document with
  the next revision. Unchanged content never produces a document.
- a call complete by its rows but held for the sources' watermarks or
  SHIP_COMPLETE_AFTER (settle.py) sends no `complete` and no long-call
  `update`; `wait_mark` tells the caller when to look again.
- after a merge, the documents of the surviving call name the documents of
  the merged-away linkedids that were already sent (`supersedes`, kept in
  ShipState.extra["superseded"] by the state store).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sipstack_agent.calls import settle as _settle
from sipstack_agent.calls.assemble import assemble
from sipstack_agent.calls.derive import utc
from sipstack_agent.calls.document import EncodedDocument, encode_document, next_revision
from sipstack_agent.calls.types import Call
from sipstack_agent.config import CallSettings, Identity
from sipstack_agent.model import SHIP_SUPERSEDED, CdrRow, CelRow, RecordingFile, ShipState

# Keys this module keeps in ShipState.extra (JSON-safe values only).
EXTRA_ROWS_SIG = "rows_sig"
EXTRA_ROWS_CHANGED_AT = "rows_changed_at"
EXTRA_COMPLETION_REASON = "completion_reason"


@dataclass(slots=True)
class Evaluation:
    call: Call  # the assembled call (is_complete, completion_reason, ...)
    documents: list[dict[str, Any]]  # 0..n documents to enqueue now, in order
    ship: ShipState  # the new ship state to persist
    next_check_at: datetime | None  # re-evaluate then even if no row arrives
    closed: bool  # complete and its complete document emitted (now or before)
    wait_mark: datetime | None = None  # evaluate again when the sources' low watermark reaches it
    # The outbox row of each document (document.encode_document: encoded once, with it)
    outbox_texts: list[str] = field(default_factory=list)


def rows_signature(
    cels: Sequence[CelRow], cdrs: Sequence[CdrRow], recordings: Sequence[RecordingFile]
) -> str:
    """Changes whenever a row or a recording is added or changed."""
    h = hashlib.blake2b(digest_size=12)
    # each key followed by \x1e, hashed as one text (the same bytes as key by key)
    for rows in (cels, cdrs):
        keys = sorted([r.dedup_key for r in rows])
        if keys:
            keys.append("")
            h.update("\x1e".join(keys).encode("utf-8", "surrogatepass"))
        h.update(b"\x1d")
    for rec in recordings:
        h.update(repr(rec).encode("utf-8", "surrogatepass") + b"\x1e")
    return h.hexdigest()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _force_complete(call: Call, reason: str) -> Call:
    d = call.derived
    if d.end is None:
        d = replace(d, end=d.last_event)
    return replace(
        call,
        is_complete=True,
        completion_reason=reason,
        idle_deadline=None,
        derived=d,
        held=False,
        wait_mark=None,
    )


def _superseded(extra: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    got = extra.get(SHIP_SUPERSEDED)
    if not isinstance(got, dict):
        return ()
    out = [(str(k), v) for k, v in got.items() if isinstance(v, int) and v > 0]
    return tuple(sorted(out))


def evaluate(
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    recordings: Sequence[RecordingFile],
    ship: ShipState,
    *,
    call_key: str,
    now: datetime,
    settings: CallSettings,
    identity: Identity,
    gaps: Sequence[tuple[datetime, datetime | None]] = (),
    watermark: datetime | None = None,
    revision_floor: int = 0,
) -> Evaluation:
    """Assemble the call and decide which documents to emit now (see module doc).

    `watermark`: the lowest watermark of the sources (settle.low_watermark), or
    None when the caller does not track sources (no hold for them).
    `revision_floor`: the state store's (`CallRecord.revision_floor`); a call's first
    document is revision `revision_floor + 1` (document.next_revision).
    """
    now = utc(now)
    extra: dict[str, Any] = dict(ship.extra)
    sig = rows_signature(cels, cdrs, recordings)
    changed_at = _parse_time(extra.get(EXTRA_ROWS_CHANGED_AT))
    if extra.get(EXTRA_ROWS_SIG) != sig or changed_at is None:
        extra[EXTRA_ROWS_SIG] = sig
        extra[EXTRA_ROWS_CHANGED_AT] = now.isoformat()
        changed_at = now

    call = assemble(
        cels,
        cdrs,
        recordings,
        call_key=call_key,
        now=now,
        settings=settings,
        rows_changed_at=changed_at,
        identity_tenant=identity.tenant,
        gaps=gaps,
        watermark=watermark,
    )
    superseded = _superseded(extra)
    if superseded:
        call = replace(call, supersedes=superseded)
    was_complete = ship.last_phase == "complete"
    if was_complete and not call.is_complete:
        # Once complete, always complete: late rows give a new complete revision.
        call = _force_complete(call, str(extra.get(EXTRA_COMPLETION_REASON) or "late_row"))

    revision = ship.revision
    last_phase = ship.last_phase
    last_at = ship.last_enqueued_at
    last_fp = ship.last_fingerprint
    documents: list[dict[str, Any]] = []
    texts: list[str] = []

    def make(phase: str) -> tuple[EncodedDocument, str]:
        enc = encode_document(
            call,
            phase=phase,
            revision=next_revision(revision, revision_floor),
            identity=identity,
            shipped_at=now,
        )
        return enc, enc.fingerprint

    def emit(enc: EncodedDocument, fp: str) -> None:
        nonlocal revision, last_phase, last_at, last_fp
        doc = enc.doc
        documents.append(doc)
        texts.append(enc.text)
        revision = int(doc["revision"])
        last_phase = str(doc["ship_phase"])
        last_at = now
        last_fp = fp

    candidates: list[datetime] = []
    wait_mark = call.wait_mark
    if call.is_complete:
        enc, fp = make("complete")
        if not was_complete or fp != ship.last_fingerprint:
            emit(enc, fp)
        extra[EXTRA_COMPLETION_REASON] = call.completion_reason
        next_check: datetime | None = None
    else:
        if call.idle_deadline is not None:
            candidates.append(call.idle_deadline)
        candidates.append(call.max_age_deadline)
        if settings.shipping_mode == "progressive":
            if revision == 0:
                emit(*make("initial"))
            else:
                enc, fp = make("update")
                if fp != ship.last_fingerprint:
                    wait = timedelta(seconds=max(0.0, settings.ship_update_min_interval))
                    due = last_at + wait if last_at is not None else now
                    if now >= due:
                        emit(enc, fp)
                    else:
                        candidates.append(due)
        elif settings.long_call_update_interval > 0 and not call.held:
            every = timedelta(seconds=settings.long_call_update_interval)
            due = (last_at or call.derived.start) + every
            if _settle.present(now, watermark) >= due:
                enc, fp = make("update")
                if revision == 0 or fp != ship.last_fingerprint:
                    emit(enc, fp)
                candidates.append(now + every)
            elif due > now:
                candidates.append(due)
            else:
                wait_mark = due  # the sources have not read that far yet
        next_check = min((c for c in candidates if c > now), default=None)

    new_ship = ShipState(
        revision=revision,
        last_phase=last_phase,
        last_enqueued_at=last_at,
        last_fingerprint=last_fp,
        extra=extra,
    )
    return Evaluation(
        call=call,
        documents=documents,
        ship=new_ship,
        next_check_at=next_check,
        closed=call.is_complete,
        wait_mark=wait_mark,
        outbox_texts=texts,
    )
