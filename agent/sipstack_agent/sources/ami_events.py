"""CEL events of the Asterisk Manager Interface -> `CelRow` (pure: text in, rows out).

Two jobs, both on the hot path of CEL_MODE=ami (sources/cel_ami.py does the I/O):

- `cel_headers(message)`: one AMI message of the wire format (`Key: value`
  lines, CRLF, the blank line already cut off) -> its headers, names in lower
  case, when it is a plain `Event: CEL`; None for anything else (responses,
  other events, an event answering an action), which panoramisk parses as
  before. The same reading as panoramisk's `Message.from_line`: a line without
  `": "` is ignored, a value is kept as sent (not stripped), a repeated header
  becomes a list; without building a `CaseInsensitiveDict` per event.
- `headers_to_row(headers)` / `event_to_row(event)`: the headers of one CEL
  event -> a `CelRow`, with the rules of the cel table (USER_DEFINED, AMA flag
  names, EventTime in DB_TIMEZONE or the `Timestamp` header).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..model import CelRow
from .celtime import TimeParser

__all__ = [
    "AMA_FLAGS",
    "AMI_FIELDS",
    "CEL_EVENT_TYPES",
    "CEL_PREFIX",
    "Headers",
    "cel_headers",
    "event_to_row",
    "headers_to_row",
    "text_of",
]

# The headers of one message, names in lower case; a repeated header is a list.
Headers = dict[str, "str | list[str]"]

# How every CEL event starts on the wire (manager.c writes `Event:` first).
CEL_PREFIX = "Event: CEL\r\n"
# Headers that make a message something else than a plain CEL event for panoramisk:
# an answer to an action (matched to it by ActionID/CommandID) or a quoted AGI result.
_NOT_PLAIN = ("actionid", "commandid", "result")

# AMI CEL header (lower case) -> CelRow field.
AMI_FIELDS: dict[str, str] = {
    "eventname": "eventtype",
    "calleridnum": "cid_num",
    "calleridname": "cid_name",
    "calleridani": "cid_ani",
    "calleridrdnis": "cid_rdnis",
    "calleriddnid": "cid_dnid",
    "exten": "exten",
    "context": "context",
    "channel": "channame",
    "application": "appname",
    "appdata": "appdata",
    "amaflags": "amaflags",
    "accountcode": "accountcode",
    "uniqueid": "uniqueid",
    "linkedid": "linkedid",
    "peer": "peer",
    "extra": "extra",
    "peeraccount": "peeraccount",
    "userdeftype": "userdeftype",
}
_FIELD_ITEMS = tuple(AMI_FIELDS.items())
# AMI names the AMA flags; the cel table stores their numbers (AST_AMA_*).
AMA_FLAGS: dict[str, str] = {"OMIT": "1", "BILLING": "2", "DOCUMENTATION": "3"}
# The CEL event types Asterisk defines: any other EventName is a user-defined event.
CEL_EVENT_TYPES = frozenset(
    {
        "CHAN_START",
        "CHAN_END",
        "ANSWER",
        "HANGUP",
        "APP_START",
        "APP_END",
        "PARK_START",
        "PARK_END",
        "USER_DEFINED",
        "BRIDGE_ENTER",
        "BRIDGE_EXIT",
        "BRIDGE_START",
        "BRIDGE_END",
        "BRIDGE_UPDATE",
        "BLINDTRANSFER",
        "ATTENDEDTRANSFER",
        "PICKUP",
        "FORWARD",
        "LINKEDID_END",
        "LOCAL_OPTIMIZE",
        "LOCAL_OPTIMIZE_BEGIN",
        "STREAM_BEGIN",
        "STREAM_END",
        "DTMF",
        "CONF_START",
        "CONF_END",
        "CONF_ENTER",
        "CONF_EXIT",
        "3WAY_START",
        "3WAY_END",
        "HOOKFLASH",
        "TRANSFER",
    }
)


# --------------------------------------------------------------------------- the wire


def cel_headers(message: str) -> Headers | None:
    """Headers of one plain `Event: CEL` message (stripped, without its blank line), else None."""
    if not message.startswith(CEL_PREFIX):
        return None
    h: Headers = {}
    for line in message.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            continue  # as panoramisk: a line without ": " is no header
        key = key.lower()
        old = h.get(key)
        if old is None:
            h[key] = value
        elif isinstance(old, list):
            old.append(value)
        else:
            h[key] = [old, value]
    if h.get("event") != "CEL" or any(k in h for k in _NOT_PLAIN):
        return None
    return h


# --------------------------------------------------------------------------- mapping


def text_of(value: Any) -> str:
    """Header value -> text. The connection decodes latin-1 (lossless); undo that for UTF-8."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = value[-1] if value else ""
    s = str(value)
    if s.isascii():
        return s
    try:
        return s.encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return s


def event_to_row(event: Mapping[str, Any], times: TimeParser, source_pos: str = "") -> CelRow:
    """Map one `Event: CEL` (headers, any case) to a CelRow. Raises ValueError when unusable."""
    return headers_to_row({str(k).lower(): v for k, v in event.items()}, times, source_pos)


def headers_to_row(h: Mapping[str, Any], times: TimeParser, source_pos: str = "") -> CelRow:
    """`event_to_row` for headers whose names are already in lower case (`cel_headers`)."""
    values: dict[str, Any] = {}  # CelRow field -> text
    for key, name in _FIELD_ITEMS:
        v = h.get(key)
        if v is not None:
            values[name] = v if v.__class__ is str and v.isascii() else text_of(v)
    eventtype = values.get("eventtype", "")
    if not eventtype:
        raise ValueError("CEL event without EventName")
    if not values.get("uniqueid"):
        raise ValueError("CEL event without UniqueID")
    userdef = values.get("userdeftype", "")
    if eventtype == "USER_DEFINED" and userdef:
        values["eventtype"] = userdef  # as the cel table stores it (eventtype = the user type)
    elif not userdef and eventtype not in CEL_EVENT_TYPES:
        values["userdeftype"] = eventtype  # show_user_defined=no: EventName is the user type
    ama = values.get("amaflags")
    if ama:
        values["amaflags"] = AMA_FLAGS.get(ama.upper(), ama)
    eventtime = _event_time(h, times)
    return CelRow(eventtime=eventtime, source="ami", source_pos=source_pos, **values)


def _event_time(h: Mapping[str, Any], times: TimeParser) -> datetime:
    raw = h.get("eventtime")
    raw = "" if raw is None else raw if raw.__class__ is str else text_of(raw)
    stamp = h.get("timestamp")
    parsed: datetime | None = None
    if raw:  # the parser strips: " 2026-..." is read, blanks are unreadable
        try:
            parsed = times(raw)
        except ValueError:
            parsed = None
    if stamp:
        if stamp.__class__ is not str:
            stamp = text_of(stamp)
        try:
            precise: datetime | None = times(stamp)
        except ValueError:
            precise = None
        # Timestamp (timestampevents=yes) is when the manager event was queued: the same
        # instant with microseconds. Use it when it agrees with EventTime (same zone etc.).
        if precise is not None and (
            parsed is None or -2.0 < (precise - parsed).total_seconds() < 2.0
        ):
            return precise
    if parsed is None:
        raise ValueError(f"CEL event with an unreadable EventTime {raw.strip()[:40]!r}")
    return parsed
