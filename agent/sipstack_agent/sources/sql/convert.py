"""DB values -> CelRow / CdrRow, and UTC instants -> DB parameters.

Naive DB times are PBX-local in the zone given (`tz`) and converted to aware UTC;
text that is not valid UTF-8 is decoded as latin-1; NULL is "". Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from ...calls.derive import cdr_end
from ...model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow, row_layout
from .table import TableInfo

__all__ = ["db_param", "decode_text", "iso", "parse_iso", "row_builder", "to_utc", "written_at"]

_CDR_INT = frozenset({"duration", "billsec"})


# --------------------------------------------------------------------------- values


def decode_text(v: Any) -> str:
    """Column value -> str: NULL -> "", bytes as UTF-8 else latin-1 (never raises)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray | memoryview):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b.decode("latin-1")
    return str(v)


def _to_int(v: Any) -> int:
    if v is None or v == "" or v == b"":
        return 0
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return int(float(decode_text(v)))
        except ValueError:
            return 0


def _to_opt_int(v: Any) -> int | None:
    if v is None or v == "" or v == b"":
        return None
    return _to_int(v)


def to_utc(v: Any, tz: tzinfo) -> datetime | None:
    """A DB time value -> aware UTC. Naive values are PBX-local time in `tz`.

    Accepts datetime (naive or aware), ISO-like text ("2026-11-24 04:39:20.51011"),
    and numbers / numeric text as Unix epoch seconds. None when unusable.
    """
    if v is None:
        return None
    if isinstance(v, datetime):
        vz = v.tzinfo
        if vz is None:
            if tz is UTC:  # (astimezone(UTC) of a UTC time is the time itself)
                return v.replace(tzinfo=UTC)
            return v.replace(tzinfo=tz).astimezone(UTC)
        return v if vz is UTC else v.astimezone(UTC)
    if isinstance(v, int | float):
        return datetime.fromtimestamp(float(v), UTC)
    s = decode_text(v).strip()
    if not s:
        return None
    try:
        return datetime.fromtimestamp(float(s), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def written_at(row: CelRow | CdrRow) -> datetime:
    """When the PBX wrote the row: a CEL row at its event, a CDR row at its call's end."""
    return row.eventtime if isinstance(row, CelRow) else cdr_end(row)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def parse_iso(s: Any) -> datetime | None:
    if not s:
        return None
    dt = datetime.fromisoformat(str(s))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- row builders


# Rows are built positionally (a dataclass's keyword call costs twice as much): a copy
# of the model's defaults with the selected columns written over it (model.row_layout).
_CEL_POS, _CEL_DEFAULTS = row_layout(CelRow)
_CDR_POS, _CDR_DEFAULTS = row_layout(CdrRow)


def _cel_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CelRow | None]:
    idx = {name: i for i, name in enumerate(info.wanted)}
    i_id = idx.get("id")
    i_time = idx["eventtime"]
    text_fields = [(_CEL_POS[c], idx[c]) for c in CEL_COLUMNS if c != "eventtime" and c in idx]
    template = _CEL_DEFAULTS
    p_time, p_id, p_source = _CEL_POS["eventtime"], _CEL_POS["row_id"], _CEL_POS["source"]

    def build(r: tuple[Any, ...]) -> CelRow | None:
        t = to_utc(r[i_time], tz)
        if t is None:
            return None
        a = template.copy()
        for p, i in text_fields:
            v = r[i]
            a[p] = v if v.__class__ is str else "" if v is None else decode_text(v)
        a[p_time] = t
        if i_id is not None:
            a[p_id] = int(r[i_id])
        a[p_source] = source()
        return CelRow(*a)

    return build


def _cdr_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CdrRow | None]:
    idx = {name: i for i, name in enumerate(info.wanted)}
    i_id = idx.get("id")
    i_time = idx["calldate"]
    i_seq = idx.get("sequence")
    text_fields = [
        (_CDR_POS[c], idx[c])
        for c in CDR_COLUMNS
        if c not in ("calldate", "sequence") and c not in _CDR_INT and c in idx
    ]
    int_fields = [(_CDR_POS[c], idx[c]) for c in CDR_COLUMNS if c in _CDR_INT and c in idx]
    opt = [(c, idx[c]) for c in info.optional]
    template = _CDR_DEFAULTS
    p_time, p_seq, p_extras = _CDR_POS["calldate"], _CDR_POS["sequence"], _CDR_POS["extras"]
    p_id, p_source = _CDR_POS["row_id"], _CDR_POS["source"]

    def build(r: tuple[Any, ...]) -> CdrRow | None:
        t = to_utc(r[i_time], tz)
        if t is None:
            return None
        a = template.copy()
        for p, i in text_fields:
            v = r[i]
            a[p] = v if v.__class__ is str else "" if v is None else decode_text(v)
        for p, i in int_fields:
            v = r[i]
            a[p] = v if v.__class__ is int else _to_int(v)
        a[p_time] = t
        if i_seq is not None:
            a[p_seq] = _to_opt_int(r[i_seq])
        if opt:
            a[p_extras] = tuple((c, decode_text(r[i])) for c, i in opt)
        if i_id is not None:
            a[p_id] = int(r[i_id])
        a[p_source] = source()
        return CdrRow(*a)

    return build


def db_param(t: datetime, info: TableInfo, tz: tzinfo, dialect: str) -> Any:
    """A UTC instant as a parameter compared with the table's time column (`tz`: the PBX zone)."""
    if info.time_is_epoch:
        return t.timestamp()
    if info.time_is_aware:
        aware = t.astimezone(UTC)
        return aware if dialect == "postgresql" else aware.replace(tzinfo=None)
    local = t.astimezone(tz).replace(tzinfo=None)
    if dialect == "sqlite":
        return local.isoformat(sep=" ")
    return local


def row_builder(
    info: TableInfo, tz: tzinfo, source: Callable[[], str]
) -> Callable[[tuple[Any, ...]], CelRow | CdrRow | None]:
    """The row builder of a discovered table (CEL or CDR), `tz` the zone of its times."""
    if info.kind == "cel":
        return _cel_builder(info, tz, source)
    return _cdr_builder(info, tz, source)
