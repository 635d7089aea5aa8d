"""SQL text of the three PBX database dialects the SQL poller reads.

The dialects differ only in SQL text, placeholders, identifier quoting and how
times come back; everything else (paging, checkpoints, de-duplication) lives
in `sources/sql/`. Every statement here is a SELECT: the agent never writes
to the PBX database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DIALECTS", "Dialect", "dialect_for", "valid_identifier"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def valid_identifier(name: str) -> bool:
    """Table/column names are configuration: only plain (optionally schema.) names pass."""
    return bool(_IDENT.match(name))


@dataclass(frozen=True)
class Dialect:
    name: str  # postgresql | mysql | sqlite
    quote_char: str
    placeholder: str  # "$" numbered, "%s" or "?"

    # ------------------------------------------------------------ basics

    def q(self, ident: str) -> str:
        """Quote a (schema-qualified) identifier."""
        if not valid_identifier(ident):
            raise ValueError(f"invalid SQL identifier {ident!r}")
        c = self.quote_char
        return ".".join(f"{c}{part}{c}" for part in ident.split("."))

    def ph(self, n: int) -> str:
        """The n-th (1-based) parameter placeholder."""
        if self.placeholder == "$":
            return f"${n}"
        return self.placeholder

    def column_list(self, columns: Sequence[str], raw_bytes: Sequence[str] = ()) -> str:
        """The SELECT list. Columns in `raw_bytes` come back as their stored bytes
        (PostgreSQL SQL_ASCII databases hold text that is not valid UTF-8, which
        the server refuses to convert; the reader decodes the bytes itself)."""
        raw = set(raw_bytes)
        return ", ".join(
            f"convert_to({self.q(c)}, 'SQL_ASCII')" if c in raw else self.q(c) for c in columns
        )

    def split_table(self, table: str) -> tuple[str | None, str]:
        schema, _, name = table.rpartition(".")
        return (schema or None), name

    # ------------------------------------------------------------ discovery

    def columns_sql(self, table: str) -> tuple[str, tuple[object, ...]]:
        """(column_name, data_type) rows of a table, in table order."""
        schema, name = self.split_table(table)
        if self.name == "postgresql":
            return (
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = $1 AND table_schema = coalesce($2, current_schema()) "
                "ORDER BY ordinal_position",
                (name, schema),
            )
        if self.name == "mysql":
            return (
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = coalesce(%s, DATABASE()) "
                "ORDER BY ordinal_position",
                (name, schema),
            )
        return ("SELECT name, type FROM pragma_table_info(?)", (name,))

    def index_columns_sql(self, table: str) -> tuple[str, tuple[object, ...]]:
        """Leading column of every index of a table (one row each)."""
        schema, name = self.split_table(table)
        if self.name == "postgresql":
            return (
                "SELECT a.attname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
                "WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())",
                (name, schema),
            )
        if self.name == "mysql":
            return (
                "SELECT column_name FROM information_schema.statistics "
                "WHERE table_name = %s AND table_schema = coalesce(%s, DATABASE()) "
                "AND seq_in_index = 1",
                (name, schema),
            )
        return (
            "SELECT ii.name FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii "
            "WHERE ii.seqno = 0 "
            "UNION SELECT name FROM pragma_table_info(?) WHERE pk = 1 AND lower(type) = 'integer'",
            (name, name),
        )

    # ------------------------------------------------------------ reading

    def select_after_id(
        self, cols: str, table: str, id_col: str, time_col: str, *, min_time: bool
    ) -> str:
        """Rows with id > $1 [and time >= $2] ordered by id, LIMIT last parameter.

        `cols` is the SELECT list from `column_list()`."""
        where = f"{self.q(id_col)} > {self.ph(1)}"
        n = 2
        if min_time:
            where += f" AND {self.q(time_col)} >= {self.ph(2)}"
            n = 3
        return (
            f"SELECT {cols} FROM {self.q(table)} WHERE {where} "
            f"ORDER BY {self.q(id_col)} LIMIT {self.ph(n)}"
        )

    def select_id_range(self, cols: str, table: str, id_col: str) -> str:
        """Rows with $1 <= id <= $2 (re-reading holes left by out-of-order commits)."""
        i = self.q(id_col)
        return (
            f"SELECT {cols} FROM {self.q(table)} WHERE {i} >= {self.ph(1)} AND {i} <= {self.ph(2)} "
            f"ORDER BY {i}"
        )

    def select_after_time(self, cols: str, table: str, time_col: str) -> str:
        """Rows with time >= $1 ordered by time, LIMIT $2 (tables without an id)."""
        t = self.q(time_col)
        return (
            f"SELECT {cols} FROM {self.q(table)} WHERE {t} >= {self.ph(1)} "
            f"ORDER BY {t} LIMIT {self.ph(2)}"
        )

    def select_max(self, table: str, col: str) -> str:
        return f"SELECT max({self.q(col)}) FROM {self.q(table)}"

    def select_min_id_since(self, table: str, id_col: str, time_col: str) -> str:
        return (
            f"SELECT min({self.q(id_col)}) FROM {self.q(table)} "
            f"WHERE {self.q(time_col)} >= {self.ph(1)}"
        )

    def select_recent_eventtypes(
        self, table: str, order_col: str, eventtype_col: str, limit: int
    ) -> str:
        """How many of the newest `limit` rows are LINKEDID_END (and how many were looked at)."""
        o, e = self.q(order_col), self.q(eventtype_col)
        return (
            f"SELECT count(*), coalesce(sum(CASE WHEN {e} = 'LINKEDID_END' THEN 1 ELSE 0 END), 0) "
            f"FROM (SELECT {e} FROM {self.q(table)} ORDER BY {o} DESC LIMIT {int(limit)}) recent"
        )

    def select_time_type_probe(self, table: str, time_col: str) -> str:
        """sqlite only: storage class of the newest time value (text or numeric epoch)."""
        t = self.q(time_col)
        return f"SELECT typeof({t}) FROM {self.q(table)} ORDER BY rowid DESC LIMIT 1"

    # ------------------------------------------------------------ id-less CDR tables

    def cdr_end_expr(self, time_col: str, duration_col: str, *, epoch: bool) -> str:
        """A CDR row's end (calldate + duration) in the column's own time type."""
        t, dur = self.q(time_col), f"coalesce({self.q(duration_col)}, 0)"
        if epoch:
            return f"({t} + {dur})"
        if self.name == "postgresql":
            return f"({t} + {dur} * interval '1 second')"
        if self.name == "mysql":
            return f"({t} + INTERVAL {dur} SECOND)"
        return f"datetime({t}, '+' || {dur} || ' seconds')"

    def select_cdr_ended_since(
        self, cols: str, table: str, time_col: str, duration_col: str, *, epoch: bool
    ) -> str:
        """Rows with calldate >= $1 (the index bound) and end >= $2, by end, LIMIT $3."""
        t = self.q(time_col)
        end = self.cdr_end_expr(time_col, duration_col, epoch=epoch)
        return (
            f"SELECT {cols} FROM {self.q(table)} WHERE {t} >= {self.ph(1)} "
            f"AND {end} >= {self.ph(2)} ORDER BY {end}, {t} LIMIT {self.ph(3)}"
        )

    def select_max_cdr_end(
        self, table: str, time_col: str, duration_col: str, *, epoch: bool
    ) -> str:
        """The newest end among rows with calldate >= $1."""
        end = self.cdr_end_expr(time_col, duration_col, epoch=epoch)
        return f"SELECT max({end}) FROM {self.q(table)} WHERE {self.q(time_col)} >= {self.ph(1)}"

    def select_by_uniqueids(
        self, cols: str, table: str, uniqueid_col: str, time_col: str, n: int
    ) -> str:
        """Rows whose uniqueid is one of $1..$n and calldate >= $n+1 (indexed on uniqueid)."""
        marks = ", ".join(self.ph(i + 1) for i in range(n))
        return (
            f"SELECT {cols} FROM {self.q(table)} WHERE {self.q(uniqueid_col)} IN ({marks}) "
            f"AND {self.q(time_col)} >= {self.ph(n + 1)}"
        )


DIALECTS: dict[str, Dialect] = {
    "postgresql": Dialect("postgresql", '"', "$"),
    "mysql": Dialect("mysql", "`", "%s"),
    "sqlite": Dialect("sqlite", '"', "?"),
}

_ALIASES = {"postgres": "postgresql", "pgsql": "postgresql", "mariadb": "mysql"}


def dialect_for(db_type: str) -> Dialect:
    key = _ALIASES.get(db_type.lower(), db_type.lower())
    try:
        return DIALECTS[key]
    except KeyError:
        raise ValueError(
            f"unknown database type {db_type!r} (postgresql, mysql or sqlite)"
        ) from None
