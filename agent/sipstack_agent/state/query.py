"""SQL plumbing shared by the store's parts: IN (...) queries over chunks of keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")

CHUNK = 400  # bound parameters per IN (...) query (SQLite's limit is 32766; keep plans small)

# One value SQLite binds (what a column of the store can hold). Rows read back are
# sqlite3's own `tuple[Any, ...]`: each query's caller unpacks the columns it selected.
SqlValue = str | int | float | bytes | None


def chunks(items: Sequence[_T], n: int = CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def marks(n: int) -> str:
    return ",".join("?" * n)


def select_in(
    conn: sqlite3.Connection, sql: str, keys: Iterable[str], extra: Sequence[SqlValue] = ()
) -> list[tuple[Any, ...]]:
    """Run `sql` (containing one `{in}` placeholder) over chunks of keys."""
    keys = list(keys)
    out: list[tuple[Any, ...]] = []
    for chunk in chunks(keys):
        q = sql.format(**{"in": marks(len(chunk))})
        out.extend(conn.execute(q, (*chunk, *extra)).fetchall())
    return out
