"""What a discovered PBX table is: its kind, columns, id and time column (discovery.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Kind", "SchemaError", "TableInfo"]

Kind = Literal["cel", "cdr"]


class SchemaError(Exception):
    """The PBX table is missing or lacks required columns (a configuration problem)."""


@dataclass(frozen=True)
class TableInfo:
    table: str
    kind: Kind
    columns: tuple[str, ...]  # actual column names, table order
    types: dict[str, str]  # lower name -> data type
    id_col: str | None
    time_col: str  # actual name of eventtime / calldate
    select: tuple[str, ...]  # actual names in the order of `wanted`
    wanted: tuple[str, ...]  # logical names of the selected columns ("id" first when present)
    time_is_aware: bool = False  # timestamptz / MySQL TIMESTAMP (session in UTC)
    time_is_epoch: bool = False  # sqlite numeric time
    optional: tuple[str, ...] = ()  # optional CDR columns present (recordingfile, did, ...)
    cols_sql: str = ""  # the SELECT list
