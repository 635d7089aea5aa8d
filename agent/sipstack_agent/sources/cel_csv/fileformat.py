"""What cel_custom writes: the column order, the JSON-line aliases, the size bounds."""

from __future__ import annotations

import csv
from collections.abc import Sequence

from ...model import CEL_COLUMNS, CEL_REQUIRED_COLUMNS

__all__ = [
    "JSON_ALIASES",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_LINES",
    "NOT_REGULAR",
    "QUARANTINE_RAW_MAX",
    "ROW_ORDER",
    "resolve_columns",
]

_REQUIRED = CEL_REQUIRED_COLUMNS
# CelRow's positional field order after eventtime (eventtype, eventtime, uniqueid, linkedid, ...).
ROW_ORDER: tuple[str, ...] = (
    "eventtype",
    "uniqueid",
    "linkedid",
    "channame",
    "cid_name",
    "cid_num",
    "cid_ani",
    "cid_rdnis",
    "cid_dnid",
    "exten",
    "context",
    "appname",
    "appdata",
    "amaflags",
    "accountcode",
    "peer",
    "userdeftype",
    "extra",
)

# Aliases accepted in JSON lines (lower-cased keys): AMI header names and common variants.
JSON_ALIASES: dict[str, str] = {
    "eventname": "eventtype",
    "event": "eventtype",
    "type": "eventtype",
    "time": "eventtime",
    "callerid_name": "cid_name",
    "calleridname": "cid_name",
    "callerid_num": "cid_num",
    "calleridnum": "cid_num",
    "calleridani": "cid_ani",
    "calleridrdnis": "cid_rdnis",
    "calleriddnid": "cid_dnid",
    "channel": "channame",
    "channel_name": "channame",
    "application": "appname",
    "application_name": "appname",
    "application_data": "appdata",
    "unique_id": "uniqueid",
    "linked_id": "linkedid",
    "account_code": "accountcode",
    "userdef_type": "userdeftype",
    "extension": "exten",
}

MAX_RECORD_BYTES = 64 * 1024  # a CEL record larger than this is malformed
MAX_RECORD_LINES = 64  # physical lines one quoted record may span
QUARANTINE_RAW_MAX = 4096  # bytes of a quarantined record kept

csv.field_size_limit(MAX_RECORD_BYTES * 2)


def resolve_columns(columns: Sequence[str] | None) -> tuple[str, ...]:
    """The column order to use: the configured one, or the cel_custom default (the cel
    table's columns without its id, `model.CEL_COLUMNS`; see docs/cel-sources.md).

    Names that are not CEL columns ("id", "-", "_", anything else) are read and ignored.
    """
    cols = tuple(c.strip().lower() for c in columns) if columns else CEL_COLUMNS
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise ValueError(f"CEL_CSV_COLUMNS must include {', '.join(missing)}")
    return cols


NOT_REGULAR = "point it at the Master.csv-style file cel_custom writes (not a FIFO or device)"
