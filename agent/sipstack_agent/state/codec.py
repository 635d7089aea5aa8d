"""How the state store writes values into SQLite columns and reads them back.

Stored CEL/CDR rows (schema v4): a JSON array of every field in the model's field
order, times as ISO text. Changing CelRow's or CdrRow's fields (or their order) needs
a new schema version that re-encodes the stored rows (see `schema._schema_v4`).

Rows are encoded and parsed by orjson (a third of the standard library's cost): the
same compact array, the time written by orjson's own RFC 3339 text, which equals
`isoformat()` for an aware UTC datetime. Text orjson writes as UTF-8 the standard
library escaped (as `\\u` escapes): the same string either way, and both texts parse to the
same row, so files written before read back identically (no schema change). Where
orjson cannot vouch for the value the standard library's codec is used, as before:
encoding a lone surrogate (bytes of a non-UTF-8 PBX column, kept as escapes), an
integer over 64 bits, a time not in `UTC`; parsing a lone surrogate escape, or an
integer field orjson turned into a float (over 64 bits).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any

import orjson

from ..model import CdrRow, CelRow, RecordingFile, ShipState


def ts(dt: datetime) -> float:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def dt_or_none(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def now_ts() -> float:
    return time.time()


def row_digest(dedup_key: str) -> str:
    """8 bytes of a row's dedup key: what a tombstone keeps of a delivered row."""
    return hashlib.blake2b(dedup_key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def dumps(obj: object) -> str:
    # ensure_ascii (the default) keeps lone surrogates (surrogateescape'd bytes
    # from non-UTF-8 PBX columns) as \udcxx escapes: storable and restored exactly.
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _json_default(o: object) -> object:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def loads_object(s: str) -> dict[str, Any]:
    """A JSON object stored by `dumps` (payloads, positions)."""
    d = json.loads(s)
    if not isinstance(d, dict):
        raise ValueError(f"stored value is not a JSON object: {s[:80]!r}")
    return d


_CEL_FIELDS = tuple(f.name for f in dataclasses.fields(CelRow))
_CDR_FIELDS = tuple(f.name for f in dataclasses.fields(CdrRow))
_CEL_FIELD_SET = frozenset(_CEL_FIELDS)
_CDR_FIELD_SET = frozenset(_CDR_FIELDS)
_REC_FIELD_SET = frozenset(f.name for f in dataclasses.fields(RecordingFile))

# One reusable C encoder (what `JSONEncoder.encode` builds again for every call, a third
# of the cost of a row): compact, ensure_ascii (see dumps), no circular check (rows hold
# no containers but CdrRow.extras' pairs). Output is the same text as json.dumps'.
_ROW_JSON: Callable[[list[object]], str]
if c_make_encoder is not None:
    _row_c = c_make_encoder(None, None, encode_basestring_ascii, None, ":", ",", False, False, True)

    def _row_json(a: list[object]) -> str:
        return "".join(_row_c(a, 0))

    _ROW_JSON = _row_json
else:  # pragma: no cover - CPython always has the C encoder
    _ROW_JSON = json.JSONEncoder(separators=(",", ":")).encode
# The C scanner alone (JSONDecoder.decode adds a whitespace regex on both ends): stored
# rows are compact arrays written by _ROW_JSON.
_ROW_PARSE: Callable[[str], list[Any]]
if c_make_scanner is not None:
    _row_scan = c_make_scanner(json.JSONDecoder())

    def _row_parse(s: str) -> list[Any]:
        a: list[Any] = _row_scan(s, 0)[0]
        return a

    _ROW_PARSE = _row_parse
else:  # pragma: no cover - CPython always has the C scanner
    _ROW_PARSE = json.JSONDecoder().decode
_CEL_GET = operator.attrgetter(*_CEL_FIELDS)
_CDR_GET = operator.attrgetter(*_CDR_FIELDS)
_CEL_TIME = _CEL_FIELDS.index("eventtime")
_CDR_TIME = _CDR_FIELDS.index("calldate")
_CDR_EXTRAS = _CDR_FIELDS.index("extras")
# The integer fields: orjson parses an integer over 64 bits as a float.
_CEL_ID = _CEL_FIELDS.index("row_id")
_CDR_INTS = tuple(_CDR_FIELDS.index(f) for f in ("duration", "billsec", "sequence", "row_id"))
_dumps = orjson.dumps
_loads = orjson.loads
_fromiso = datetime.fromisoformat


def cel_encode(r: CelRow) -> str:
    if r.eventtime.tzinfo is UTC:
        try:
            return _dumps(_CEL_GET(r)).decode()
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int over 64 bits
            pass
    a = list(_CEL_GET(r))
    a[_CEL_TIME] = r.eventtime.isoformat()
    return _ROW_JSON(a)


def cel_decode(s: str) -> CelRow:
    try:
        a = _loads(s)
    except ValueError:  # orjson.JSONDecodeError: a lone surrogate escape
        a = _ROW_PARSE(s)
    else:
        if type(a[_CEL_ID]) is float:
            a = _ROW_PARSE(s)
    a[_CEL_TIME] = _fromiso(a[_CEL_TIME])
    return CelRow(*a)


def stored_cel(data: str) -> CelRow:
    """The CelRow of a `cel.data` value read straight from a state file (tests, tools)."""
    return cel_decode(data)


def cdr_encode(r: CdrRow) -> str:
    if r.calldate.tzinfo is UTC:
        try:
            return _dumps(_CDR_GET(r)).decode()
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int over 64 bits
            pass
    a = list(_CDR_GET(r))
    a[_CDR_TIME] = r.calldate.isoformat()
    return _ROW_JSON(a)


def cdr_decode(s: str) -> CdrRow:
    try:
        a = _loads(s)
    except ValueError:  # orjson.JSONDecodeError: a lone surrogate escape
        a = _ROW_PARSE(s)
    else:
        for i in _CDR_INTS:
            if type(a[i]) is float:
                a = _ROW_PARSE(s)
                break
    a[_CDR_TIME] = _fromiso(a[_CDR_TIME])
    a[_CDR_EXTRAS] = tuple((str(k), str(v)) for k, v in a[_CDR_EXTRAS])
    return CdrRow(*a)


def cel_from_object(s: str) -> CelRow:
    """A row stored by schema v1/v2 (a JSON object without its empty fields)."""
    d = json.loads(s)
    d["eventtime"] = datetime.fromisoformat(d["eventtime"])
    return CelRow(**{k: v for k, v in d.items() if k in _CEL_FIELD_SET})


def cdr_from_object(s: str) -> CdrRow:
    """A row stored by schema v1/v2 (a JSON object without its empty fields)."""
    d = json.loads(s)
    d["calldate"] = datetime.fromisoformat(d["calldate"])
    if "extras" in d:
        d["extras"] = tuple((str(k), str(v)) for k, v in d["extras"])
    return CdrRow(**{k: v for k, v in d.items() if k in _CDR_FIELD_SET})


def rec_to_json(r: RecordingFile) -> str:
    d = {f: getattr(r, f) for f in _REC_FIELD_SET}
    if r.started_at is not None:
        d["started_at"] = r.started_at.isoformat()
    return dumps(d)


def rec_from_json(s: str) -> RecordingFile:
    d = json.loads(s)
    if d.get("started_at"):
        d["started_at"] = datetime.fromisoformat(d["started_at"])
    return RecordingFile(**{k: v for k, v in d.items() if k in _REC_FIELD_SET})


def ship_to_json(s: ShipState) -> str:
    return dumps(
        {
            "revision": s.revision,
            "last_phase": s.last_phase,
            "last_enqueued_at": s.last_enqueued_at.isoformat() if s.last_enqueued_at else None,
            "last_fingerprint": s.last_fingerprint,
            "extra": s.extra,
        }
    )


def ship_from_json(s: str | None) -> ShipState:
    if not s:
        return ShipState()
    d = json.loads(s)
    if not d:
        return ShipState()
    at = d.get("last_enqueued_at")
    return ShipState(
        revision=int(d.get("revision", 0)),
        last_phase=d.get("last_phase", ""),
        last_enqueued_at=datetime.fromisoformat(at) if at else None,
        last_fingerprint=d.get("last_fingerprint", ""),
        extra=d.get("extra") or {},
    )
