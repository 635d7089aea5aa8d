"""`Call` -> the JSON document of the ingest contract (ingest-api.md "The call document").

Required keys are always present; optional keys are omitted rather than sent
as null or "". Times are ISO-8601 UTC with offset. `call_threads` holds one
item per CDR row and per selected CEL event, sorted by real time, then by the
source row id.

A document is encoded once (`encode_document`, orjson): the one pass over its
content (sorted keys, the volatile keys left out) is the strict-JSON check, the
input of its fingerprint and, behind the volatile keys, its outbox row. Where
orjson's bytes could differ from what the standard library wrote before (a
non-finite float, which orjson writes as null; non-ASCII text, DEL or a float
in exponent form for the fingerprint; a type orjson refuses) the standard
library's encoding decides, so the strict check fails where it always failed
and a fingerprint stays `json.dumps(sort_keys=True, ensure_ascii=True)` byte for
byte (stored ship states compare it).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from sipstack_agent.calls.derive import event_name, event_names, parse_extra, utc
from sipstack_agent.calls.types import Call
from sipstack_agent.config import Identity
from sipstack_agent.model import CdrRow, CelRow

CONNECTOR = "asterisk"
PHASES = ("initial", "update", "complete")
DIRECTIONS = ("i", "o", "x")

THREAD_CEL_EVENTS = frozenset(
    {
        "CHAN_START",
        "ANSWER",
        "BRIDGE_ENTER",
        "BRIDGE_EXIT",
        "BLINDTRANSFER",
        "ATTENDEDTRANSFER",
        "PICKUP",
        "FORWARD",
        "PARK_START",
        "PARK_END",
        "HANGUP",
        "LINKEDID_END",
    }
)
THREAD_APPS = frozenset({"queue", "dial", "mixmonitor", "voicemail"})
BRIDGE_EVENTS = frozenset({"BRIDGE_ENTER", "BRIDGE_EXIT"})

_SURROGATES = re.compile("[\ud800-\udfff]")

# Keys that change on every document without the call changing.
VOLATILE_KEYS = frozenset({"revision", "ship_phase", "shipped_at"})

# orjson: datetimes, dataclasses and subclasses of str/int/dict/list go to `default`
# (which refuses them) instead of orjson's own encoding, as json.dumps would refuse them.
_ORJSON_PLAIN = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_ORJSON_SORTED = _ORJSON_PLAIN | orjson.OPT_SORT_KEYS
_ISO_SECONDS = orjson.OPT_OMIT_MICROSECONDS
_MANTISSA = frozenset(b"0123456789.")
_BEFORE_VALUE = frozenset(b":,[")


def iso(dt: datetime, *, seconds: bool = False) -> str:
    """ISO-8601 in UTC with offset (`+00:00`)."""
    d = utc(dt)
    if type(d) is not datetime:
        return d.isoformat(timespec="seconds") if seconds else d.isoformat()
    # orjson writes isoformat()'s text for an aware UTC datetime, about three times faster
    return orjson.dumps(d, option=_ISO_SECONDS if seconds else 0)[1:-1].decode()


def cel_thread_selected(row: CelRow, et: str | None = None) -> bool:
    """Whether a CEL row goes into call_threads (`et`: its event_name, when known)."""
    if et is None:
        et = event_name(row.eventtype)
    if et in THREAD_CEL_EVENTS:
        return True
    return et in ("APP_START", "APP_END") and row.appname.strip().lower() in THREAD_APPS


def _cel_item(row: CelRow, et: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "time": iso(row.eventtime),
        "event": et,
        "channel": row.channame,
        "exten": row.exten,
        "context": row.context,
        "uniqueid": row.uniqueid,
    }
    if et in ("APP_START", "APP_END"):
        item["app"] = row.appname
    if et in BRIDGE_EVENTS and row.peer:
        item["peer"] = row.peer
    extra = parse_extra(row.extra)
    if extra is not None:
        item["extra"] = extra
    return item


def _cdr_item(cdr: CdrRow) -> dict[str, Any]:
    return {
        "time": iso(cdr.calldate),
        "event": "CDR",
        "src": cdr.src,
        "dst": cdr.dst,
        "duration": cdr.duration,
        "billsec": cdr.billsec,
        "disposition": cdr.disposition,
        "channel": cdr.channel,
        "dstchannel": cdr.dstchannel,
        "uniqueid": cdr.uniqueid,
    }


def call_threads(call: Call) -> list[dict[str, Any]]:
    """Selected CEL events and CDR rows in real-time order, then by row id."""
    keyed: list[tuple[tuple[datetime, int, int, int], dict[str, Any]]] = []
    n = 0
    names = call.cel_events
    if len(names) != len(call.cels):  # a Call built without assemble
        names = event_names(call.cels)
    for row, et in zip(call.cels, names, strict=True):
        if cel_thread_selected(row, et):
            rid = row.row_id if row.row_id is not None else -1
            keyed.append(((utc(row.eventtime), 0 if rid >= 0 else 1, rid, n), _cel_item(row, et)))
        n += 1
    for cdr in call.cdrs:
        rid = cdr.row_id if cdr.row_id is not None else -1
        keyed.append(((utc(cdr.calldate), 0 if rid >= 0 else 1, rid, n), _cdr_item(cdr)))
        n += 1
    keyed.sort(key=lambda p: p[0])
    return [item for _, item in keyed]


def _put(doc: dict[str, Any], key: str, value: object) -> None:
    """Set an optional key only when it is known."""
    if value is None or value == "" or value == () or value == []:
        return
    doc[key] = value


def _document(
    call: Call,
    *,
    phase: str,
    revision: int,
    identity: Identity,
    shipped_at: datetime,
) -> dict[str, Any]:
    if phase not in PHASES:
        raise ValueError(f"unknown ship phase {phase!r}")
    d = call.derived
    threads = call_threads(call)
    doc: dict[str, Any] = {
        "connector": CONNECTOR,
        "connector_version": identity.version,
        "customer_id": int(identity.customer_id),
        "tenant": call.tenant or identity.tenant or "",
        "hostname": identity.hostname,
        "linkedid": call.call_key,
        "is_complete": call.is_complete,
        "call_time": iso(d.start, seconds=True),
        "duration_seconds": d.duration_seconds,
        "disposition": d.disposition,
        "direction": call.direction,
        "call_threads": threads,
        "call_threads_count": len(threads),
        "ship_phase": phase,
        "shipped_at": iso(shipped_at, seconds=True),
        "revision": revision,
        "answered": d.answered,
        "linkedids": list(call.linkedids),
        "timezone": call.timezone,
        "timezone_source": call.timezone_source,
    }
    for key in (
        "src_number",
        "src_extension",
        "src_name",
        "src_extension_name",
        "dst_number",
        "dst_extension",
        "dst_name",
        "dst_extension_name",
        "dnid",
        "dtmf",
    ):
        _put(doc, key, getattr(d, key))
    _put(doc, "billsec", d.billsec)
    _put(doc, "answer_time", iso(d.answer_time) if d.answer_time else None)
    _put(doc, "end_time", iso(d.end) if d.end else None)
    _put(doc, "ring_seconds", d.ring_seconds)
    _put(doc, "talk_seconds", d.talk_seconds)
    _put(doc, "hangup_cause", d.hangup_cause)
    if d.queue is not None:
        q: dict[str, Any] = {"name": d.queue.name, "wait_seconds": d.queue.wait_seconds}
        _put(q, "answered_by", d.queue.answered_by)
        doc["queue"] = q
    _put(
        doc,
        "transfers",
        [{"type": t.type, "at": iso(t.at), "from": t.from_, "to": t.to} for t in d.transfers],
    )
    _put(doc, "recording_files", [r.as_document() for r in call.recordings])
    _put(doc, "direction_reason", call.direction_reason)
    if call.gap:
        doc["gap"] = True
    if call.supersedes:
        doc["supersedes"] = [{"linkedid": lid, "revision": rev} for lid, rev in call.supersedes]
    if call.is_complete:
        _put(doc, "completion_reason", call.completion_reason)
        if call.forced:
            doc["force_completed"] = True
    return doc


def build_document(
    call: Call,
    *,
    phase: str,
    revision: int,
    identity: Identity,
    shipped_at: datetime,
) -> dict[str, Any]:
    """The ingest document of `call` for one phase and revision."""
    return encode_document(
        call, phase=phase, revision=revision, identity=identity, shipped_at=shipped_at
    ).doc


@dataclass(frozen=True, slots=True)
class EncodedDocument:
    """A document, its fingerprint and its outbox row (UTF-8 JSON text), from one encoding."""

    doc: dict[str, Any]
    fingerprint: str
    text: str


def encode_document(
    call: Call,
    *,
    phase: str,
    revision: int,
    identity: Identity,
    shipped_at: datetime,
) -> EncodedDocument:
    """`build_document`, encoded once (see the module doc)."""
    doc = _document(call, phase=phase, revision=revision, identity=identity, shipped_at=shipped_at)
    content = _content(doc)
    if content is None:  # orjson cannot vouch for it: the standard library's strict check
        try:
            json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            result = _sanitize(doc)
            assert isinstance(result, dict)
            doc = result
            content = _content(doc)
    return _encoded(doc, content)


def encode(doc: dict[str, Any]) -> EncodedDocument:
    """The fingerprint and outbox row of a document that is already strict JSON."""
    return _encoded(doc, _content(doc))


def _encoded(doc: dict[str, Any], content: bytes | None) -> EncodedDocument:
    if content is None:
        return EncodedDocument(doc, fingerprint(doc), _stdlib_text(doc))
    fp = _content_fingerprint(content)
    return EncodedDocument(doc, fp or fingerprint(doc), _outbox_text(doc, content))


def outbox_text(doc: dict[str, Any]) -> str:
    """The outbox row of a call document: its volatile keys first, then the content, UTF-8."""
    content = _content(doc)
    return _stdlib_text(doc) if content is None else _outbox_text(doc, content)


def outbox_rows(documents: Sequence[Mapping[str, Any]], texts: Sequence[str] | None) -> list[str]:
    """The outbox rows of an evaluation's documents: the texts encoded with them
    (`Evaluation.outbox_texts`), else each document encoded now (stand-ins)."""
    if texts is not None and len(texts) == len(documents):
        return list(texts)
    return [outbox_text(dict(d)) for d in documents]


def _no_default(value: object) -> Any:
    raise TypeError(f"not a JSON type: {type(value).__name__}")


def json_bytes(value: object, *, sort_keys: bool = False) -> bytes | None:
    """orjson's compact UTF-8 encoding of `value`, or None where it may differ from
    json.dumps(ensure_ascii=False)'s: a type orjson refuses (lone surrogates, ints over
    64 bits, non-str keys, datetimes, ...) or any `null`, which is also how orjson writes
    NaN and infinities (json.dumps writes NaN, or refuses them with allow_nan=False)."""
    try:
        raw = orjson.dumps(
            value, default=_no_default, option=_ORJSON_SORTED if sort_keys else _ORJSON_PLAIN
        )
    except TypeError:  # orjson.JSONEncodeError
        return None
    return None if b"null" in raw else raw


def _content(doc: dict[str, Any]) -> bytes | None:
    """The document without its volatile keys, sorted keys (`json_bytes`)."""
    return json_bytes({k: v for k, v in doc.items() if k not in VOLATILE_KEYS}, sort_keys=True)


def _content_fingerprint(content: bytes) -> str | None:
    """`fingerprint` from orjson's bytes when they equal json.dumps(sort_keys, ensure_ascii)'s:
    ASCII without DEL (escaped by ensure_ascii) and no float orjson may spell differently."""
    if not content.isascii() or b"\x7f" in content:
        return None
    if _float_spelling(content):
        return None
    return hashlib.blake2b(content, digest_size=16).hexdigest()


def _float_spelling(content: bytes) -> bool:
    """A number in exponent form (orjson always signs the exponent) or 0.0000...: where
    orjson and json.dumps may spell a float differently. Text inside strings that looks
    like one (a UUID's `8e-`) answers True too, which only costs the slow path."""
    if b"e-" not in content and b"e+" not in content and b"0.0000" not in content:
        return False
    for needle in (b"e-", b"e+", b"0.0000"):
        i = content.find(needle)
        while i >= 0:
            j = i - 1
            if needle[0] == 0x65:  # e: back over the mantissa
                while j >= 0 and content[j] in _MANTISSA:
                    j -= 1
                if j == i - 1:
                    i = content.find(needle, i + 1)
                    continue
            if j >= 0 and content[j] == 0x2D:  # -
                j -= 1
            if j >= 0 and content[j] in _BEFORE_VALUE:
                return True
            i = content.find(needle, i + 1)
    return False


def _outbox_text(doc: dict[str, Any], content: bytes) -> str:
    h = json_bytes({k: doc[k] for k in sorted(VOLATILE_KEYS) if k in doc})
    if h is None:
        return _stdlib_text(doc)
    if h == b"{}":
        return content.decode("utf-8")
    if content == b"{}":
        return h.decode("utf-8")
    return (h[:-1] + b"," + content[1:]).decode("utf-8")


def _stdlib_text(doc: dict[str, Any]) -> str:
    # ensure_ascii: lone surrogates stay \udcxx escapes, storable and restored exactly
    return json.dumps(doc, separators=(",", ":"))


def _sanitize(value: Any) -> Any:
    """Strict-JSON-safe values: no lone surrogates (non-UTF-8 PBX text), no NaN/inf."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATES.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {_sanitize(str(k)): _sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def fingerprint(doc: dict[str, Any]) -> str:
    """Content hash of a document without its volatile keys (revision, phase, shipped_at)."""
    body = {k: v for k, v in doc.items() if k not in VOLATILE_KEYS}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def revision_key(connector_id: str, linkedid: str, revision: int) -> str:
    """The Idempotency-Key of one revision of a call document: the only place it is spelled."""
    return f"{connector_id}:{linkedid}:{revision}"


RESEND_STRIDE = 1000  # revisions per resend run for a call the state store no longer holds


def resend_revision(known: int | None, run: int, floor: int = 0) -> int:
    """The revision a resend (run `run`, 1-based) gives a call: the next one after the
    last the store knows; a call pruned from the store (`known` None) gets
    `floor + run * RESEND_STRIDE + 1`, above any revision the live agent sends (`floor`:
    the store's `rebuild_floor`, 0 for a store that was never rebuilt)."""
    if known is not None and known > 0:
        return next_revision(known, floor)
    return floor + run * RESEND_STRIDE + 1


def next_revision(last: int, floor: int = 0) -> int:
    """The revision after `last` (0: none sent yet) in a store whose revisions lie above
    `floor`: a call's first revision in a rebuilt store is `floor + 1`, later ones +1."""
    return max(last, floor) + 1


# A store rebuilt after its file was quarantined (state/base.py) cannot read the revisions
# the old file issued, so it issues revisions above a floor that is above all of them:
REBUILD_SPAN = 1_000_000 * RESEND_STRIDE  # counted part: room for 10^6 resend runs
MAX_REVISION = 2**53 - 1  # JSON-safe: an IEEE double holds every integer up to it


def rebuild_floor(now: float, previous: int | None) -> int:
    """The revision floor of a store rebuilt at Unix time `now` (seconds) when the floor
    recorded at the rebuild before (beside the state file) was `previous` (None: none).

    Why it is above every revision the old file issued: a store issues revisions below
    its own floor F (0 when never rebuilt) + (R + 1) * RESEND_STRIDE, R its resend runs
    (the stride rule of `resend_revision`: the live agent and dead-letter retries stay
    below one stride per call). F itself is at least the clock part at the old store's
    birth, or its counted part. The clock part, `RESEND_STRIDE * ms since 1970`, is then
    above the old store's revisions when it lived longer than R + 1 ms (every resend run
    is a command of its own that reads the PBX); the counted part, `previous +
    REBUILD_SPAN`, is above them for fewer than 10^6 runs even when the clock went back.
    The larger is taken, so floors only grow rebuild after rebuild; the value is a
    JSON-safe integer (below 2^53) until the year 2255, and ValueError past that."""
    clock = max(0, int(now * 1000)) * RESEND_STRIDE
    counted = previous + REBUILD_SPAN if previous is not None and previous >= 0 else 0
    floor = max(clock, counted)
    if floor > MAX_REVISION - REBUILD_SPAN:
        raise ValueError(f"revision floor {floor} leaves no JSON-safe revisions above it")
    return floor


def idempotency_key(identity: Identity, doc: dict[str, Any]) -> str:
    return revision_key(
        identity.connector_id or identity.hostname, doc["linkedid"], doc["revision"]
    )


def as_revision(doc: dict[str, Any], revision: int, shipped_at: datetime) -> dict[str, Any]:
    """The same document as a new revision (sent again: a dead letter retried)."""
    return {**doc, "revision": revision, "shipped_at": iso(shipped_at, seconds=True)}
