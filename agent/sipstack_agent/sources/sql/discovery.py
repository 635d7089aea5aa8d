"""Column discovery: which columns a CEL or CDR table has, its id and time column."""

from __future__ import annotations

from ...model import CDR_COLUMNS, CDR_OPTIONAL_COLUMNS, CEL_COLUMNS
from ..dialects import valid_identifier
from .convert import decode_text
from .drivers import Db
from .table import Kind, SchemaError, TableInfo

__all__ = ["CDR_REQUIRED", "CEL_REQUIRED", "discover"]

CEL_REQUIRED: tuple[str, ...] = ("eventtype", "eventtime", "uniqueid", "linkedid", "channame")
CDR_REQUIRED: tuple[str, ...] = (
    "calldate",
    "uniqueid",
    "linkedid",
    "src",
    "dst",
    "channel",
    "disposition",
    "duration",
    "billsec",
)
ID_CANDIDATES: tuple[str, ...] = ("id", "acctid", "cel_id", "cdr_id")


async def discover(db: Db, table: str, kind: Kind) -> TableInfo:
    """Column discovery; SchemaError naming the table and missing columns."""
    d = db.dialect
    if not valid_identifier(table):
        raise SchemaError(f"table name {table!r} is not a plain SQL identifier")
    sql, args = d.columns_sql(table)
    rows = await db.fetch(sql, args)
    if not rows:
        raise SchemaError(f"table {table!r} not found (or not visible to this database user)")
    actual = {decode_text(r[0]).lower(): decode_text(r[0]) for r in rows}
    types = {decode_text(r[0]).lower(): decode_text(r[1]).lower() for r in rows}
    required = CEL_REQUIRED if kind == "cel" else CDR_REQUIRED
    missing = [c for c in required if c not in actual]
    if missing:
        raise SchemaError(
            f"table {table!r} lacks required {kind.upper()} column(s): {', '.join(missing)}"
        )
    base = CEL_COLUMNS if kind == "cel" else CDR_COLUMNS
    time_col = "eventtime" if kind == "cel" else "calldate"
    wanted: list[str] = []
    id_col = next((actual[c] for c in ID_CANDIDATES if c in actual and _is_int(types[c])), None)
    if id_col is not None:
        wanted.append("id")
    wanted.extend(c for c in base if c in actual)
    optional: tuple[str, ...] = ()
    if kind == "cdr":
        optional = tuple(c for c in CDR_OPTIONAL_COLUMNS if c in actual)
        wanted.extend(optional)
    select = tuple(id_col if c == "id" and id_col else actual[c] for c in wanted)
    ttype = types[time_col]
    # MySQL TIMESTAMP comes back in the session time zone (the server's, normally the
    # PBX's): treated like DATETIME, i.e. local time in DB_TIMEZONE.
    aware = ttype == "timestamp with time zone"
    epoch = False
    if d.name == "sqlite":
        probe = await db.fetch(d.select_time_type_probe(table, actual[time_col]))
        epoch = bool(probe) and decode_text(probe[0][0]) in ("integer", "real")
    elif any(k in ttype for k in ("int", "numeric", "decimal", "double", "real", "float")):
        epoch = True
    raw: list[str] = []
    if getattr(db, "raw_text", False):
        raw = [a for a in select if _is_text(types[a.lower()])]
    return TableInfo(
        cols_sql=d.column_list(select, raw),
        table=table,
        kind=kind,
        columns=tuple(actual.values()),
        types=types,
        id_col=id_col,
        time_col=actual[time_col],
        select=select,
        wanted=tuple(wanted),
        time_is_aware=aware,
        time_is_epoch=epoch,
        optional=optional,
    )


def _is_text(t: str) -> bool:
    return "char" in t or t == "text"


def _is_int(t: str) -> bool:
    return "int" in t or t in ("serial", "bigserial", "numeric", "")
