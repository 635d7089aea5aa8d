"""How each PBX database takes a row: the dialect table, values and INSERT text (pure).

One `Dialect` per database Asterisk writes to (PostgreSQL via cel_pgsql, MySQL /
MariaDB via cel_odbc, SQLite via cel_sqlite3_custom): its placeholders, its
identifier quotes, how it stores a time and raw (non-UTF-8) bytes. The writers
(sim.writers) only ever ask this table; there is no copy of a rule per driver.

Values: aware datetimes become naive PBX-local time (what Asterisk writes
without usegmtime), naive ones stay as given, ISO text is parsed (except for
SQLite, which stores the text); MySQL DATETIME keeps whole seconds; SQLite
stores `YYYY-MM-DD HH:MM:SS[.ffffff]`. Integer columns take ints ("" is NULL).
"" stays "" (Asterisk writes empty strings), None is NULL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from ..model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow

Value = object
INT_COLUMNS = frozenset({"amaflags", "duration", "billsec", "sequence", "id"})
TIME_COLUMN = {"cel": "eventtime", "cdr": "calldate"}


@dataclass(frozen=True)
class Dialect:
    name: str
    paramstyle: str  # qmark (?), format (%s), numeric ($1)
    quote_char: str
    whole_seconds: bool  # DATETIME without fractional seconds
    text_times: bool  # times stored as text
    raw_bytes: str  # placeholder for a raw bytes value, "{}" = the plain placeholder
    hex_bytes: bool  # raw bytes passed as hex text (aiomysql cannot escape bytes parameters)
    truncate: tuple[str, ...]  # empty a table, ids from 1 again ({q}: quoted name, {t}: name)
    reset_serial: str | None  # the id sequence after rows were inserted with their own ids
    sessions_of: str | None  # one row per server session of a user (parameter: the user)
    kill_session: str | None  # ends the session {id} of `sessions_of` (None: the select did)


DIALECTS: dict[str, Dialect] = {
    "postgresql": Dialect(
        name="postgresql",
        paramstyle="numeric",
        quote_char='"',
        whole_seconds=False,
        text_times=False,
        raw_bytes="{}",
        hex_bytes=False,
        truncate=("TRUNCATE {q} RESTART IDENTITY",),
        reset_serial=(
            "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {q}))"
        ),
        sessions_of="SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
        kill_session=None,
    ),
    "mysql": Dialect(
        name="mysql",
        paramstyle="format",
        quote_char="`",
        whole_seconds=True,
        text_times=False,
        raw_bytes="UNHEX({})",
        hex_bytes=True,
        truncate=("TRUNCATE TABLE {q}",),
        reset_serial=None,
        sessions_of="SELECT id FROM information_schema.processlist WHERE user = %s",
        kill_session="KILL CONNECTION {id}",
    ),
    "sqlite": Dialect(
        name="sqlite",
        paramstyle="qmark",
        quote_char='"',
        whole_seconds=False,
        text_times=True,
        raw_bytes="CAST({} AS TEXT)",
        hex_bytes=False,
        truncate=("DELETE FROM {q}", "DELETE FROM sqlite_sequence WHERE name = '{t}'"),
        reset_serial=None,
        sessions_of=None,
        kill_session=None,
    ),
}


def dialect_of(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}") from None


def columns(kind: str) -> tuple[str, ...]:
    """The columns of table `kind` ("cel" or "cdr") as the model names them."""
    return CEL_COLUMNS if kind == "cel" else CDR_COLUMNS


def quote(dialect: str, ident: str) -> str:
    q = dialect_of(dialect).quote_char
    return f"{q}{ident}{q}"


def time_value(v: Value, dialect: str, zone: tzinfo) -> Value:
    d = dialect_of(dialect)
    if isinstance(v, str) and not d.text_times:
        v = datetime.fromisoformat(v)
    if not isinstance(v, datetime):
        return v
    if v.tzinfo is not None:
        v = v.astimezone(zone).replace(tzinfo=None)
    if d.whole_seconds:
        v = v.replace(microsecond=0)
    return v.isoformat(sep=" ") if d.text_times else v


def column_value(col: str, v: Value, dialect: str, zone: tzinfo) -> Value:
    if col in TIME_COLUMN.values():
        return time_value(v, dialect, zone)
    if col in INT_COLUMNS:
        if v in ("", None):
            return None
        return int(v) if isinstance(v, int | str | float) else v
    return v


def db_values(
    kind: str, row: Mapping[str, Value], dialect: str, tz: str = "UTC"
) -> tuple[Value, ...]:
    """A row dict -> the tuple of its table's column values (model order) for `dialect`."""
    zone = ZoneInfo(tz)
    return tuple(column_value(c, row.get(c), dialect, zone) for c in columns(kind))


def row_values(
    kind: str, row: CelRow | CdrRow | Mapping[str, Value], dialect: str, zone: tzinfo
) -> dict[str, Value]:
    """The columns a row names -> their values: a CelRow / CdrRow gives its table's
    columns (a CdrRow its extras too), a mapping its own keys; a `row_id` (or "id")
    that is not None goes into the id column."""
    if isinstance(row, CelRow | CdrRow):
        d: dict[str, Value] = {c: getattr(row, c) for c in columns(kind)}
        if isinstance(row, CdrRow):
            d.update(dict(row.extras))
        if row.row_id is not None:
            d["id"] = row.row_id
    else:
        d = dict(row)
        if "row_id" in d:
            rid = d.pop("row_id")
            if rid is not None:
                d["id"] = rid
    return {k: column_value(k, v, dialect, zone) for k, v in d.items()}


def placeholder(dialect: str, i: int, value: Value = None, paramstyle: str | None = None) -> str:
    """The placeholder of parameter `i` (1-based); raw bytes get the dialect's wrapper."""
    d = dialect_of(dialect)
    style = paramstyle or d.paramstyle
    ph = {"qmark": "?", "format": "%s"}.get(style, f"${i}")
    return d.raw_bytes.format(ph) if isinstance(value, bytes) else ph


def insert_sql(
    dialect: str,
    kind: str,
    table: str,
    paramstyle: str | None = None,
    cols: Sequence[str] | None = None,
    values: Sequence[Value] | None = None,
) -> str:
    """INSERT of one row into `table`: the model's columns of `kind` (or `cols`).
    paramstyle: qmark (sqlite3), format (%s: aiomysql, psycopg), numeric ($1: asyncpg);
    default per dialect. `values` (when given) pick the raw-bytes placeholders."""
    names = tuple(cols) if cols is not None else columns(kind)
    vals = values if values is not None else [None] * len(names)
    phs = ", ".join(placeholder(dialect, i + 1, v, paramstyle) for i, v in enumerate(vals))
    cols_sql = ", ".join(quote(dialect, c) for c in names)
    return f"INSERT INTO {quote(dialect, table)} ({cols_sql}) VALUES ({phs})"


def driver_args(dialect: str, values: Sequence[Value]) -> list[Value]:
    """The parameters as the driver takes them (MySQL: raw bytes as hex for UNHEX)."""
    if dialect_of(dialect).hex_bytes:
        return [v.hex() if isinstance(v, bytes) else v for v in values]
    return list(values)
