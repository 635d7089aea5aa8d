"""Value types shared by every stage of the agent.

Pure data: no I/O, no framework imports. Sources produce `CelRow` / `CdrRow`
(times already converted to aware UTC datetimes), the state store persists
them, `calls/` turns the rows of one call into a `Call` and then into the JSON
document of the ingest contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

_C = TypeVar("_C", bound=type)


def _slot_init(cls: _C) -> _C:
    """Give a frozen slots dataclass an `__init__` that writes each slot through its
    descriptor: the one dataclasses generates calls `object.__setattr__` per field, which
    costs about twice as much, and rows are built by the hundred thousand. Same signature,
    same defaults (immutable ones only), no __post_init__; the class stays frozen."""
    fields = dataclasses.fields(cls)
    ns: dict[str, Any] = {}
    params = []
    for f in fields:
        if f.default_factory is not dataclasses.MISSING or not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: not supported by _slot_init")
        ns[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            ns[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fields)
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", ns)  # noqa: S102 - our own text
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls


# Column names as Asterisk writes them (cel_pgsql / cel_odbc / cel_custom).
CEL_COLUMNS: tuple[str, ...] = (
    "eventtype",
    "eventtime",
    "cid_name",
    "cid_num",
    "cid_ani",
    "cid_rdnis",
    "cid_dnid",
    "exten",
    "context",
    "channame",
    "appname",
    "appdata",
    "amaflags",
    "accountcode",
    "uniqueid",
    "linkedid",
    "peer",
    "userdeftype",
    "extra",
)
# A CEL row cannot be read without these (CEL_CSV_COLUMNS must name them).
CEL_REQUIRED_COLUMNS: tuple[str, ...] = ("eventtype", "eventtime", "uniqueid")

CDR_COLUMNS: tuple[str, ...] = (
    "calldate",
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "accountcode",
    "uniqueid",
    "userfield",
    "linkedid",
    "sequence",
    "peeraccount",
)

# Optional CDR columns some installs add (FreePBX); kept in CdrRow.extras.
CDR_OPTIONAL_COLUMNS: tuple[str, ...] = (
    "recordingfile",
    "did",
    "cnum",
    "cnam",
    "outbound_cnum",
    "outbound_cnam",
    "dst_cnam",
)


def _digest(parts: tuple[object, ...]) -> str:
    """blake2b-96 of every part followed by 0x1f (one update: the same bytes, the same key)."""
    data = "\x1f".join(map(str, parts)) + "\x1f" if parts else ""
    return hashlib.blake2b(data.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


@_slot_init
@dataclass(frozen=True, slots=True)
class CelRow:
    """One CEL event. `eventtime` is an aware datetime in UTC.

    `row_id` is the source table's id (None when the source has none: CSV,
    AMI, id-less tables). `source` names the feed ("db", "csv", "ami").
    Text fields are never None: a NULL column becomes "".
    """

    eventtype: str
    eventtime: datetime
    uniqueid: str
    linkedid: str
    channame: str = ""
    cid_name: str = ""
    cid_num: str = ""
    cid_ani: str = ""
    cid_rdnis: str = ""
    cid_dnid: str = ""
    exten: str = ""
    context: str = ""
    appname: str = ""
    appdata: str = ""
    amaflags: str = ""
    accountcode: str = ""
    peer: str = ""
    userdeftype: str = ""
    extra: str = ""
    row_id: int | None = None
    source: str = "db"
    # Where the row sits in a feed without ids (CSV: "dev:inode:offset" of the line,
    # AMI: "session:n"). Part of dedup_key when set, so two identical events in the
    # same microsecond (or the same second on AMI) stay two rows. "" for table sources.
    source_pos: str = ""
    # The bridged peer's accountcode (AMI PeerAccount, cel.peeraccount where the table has it).
    peeraccount: str = ""

    @property
    def call_linkedid(self) -> str:
        """The grouping key: linkedid, or uniqueid when linkedid is empty."""
        return self.linkedid or self.uniqueid

    @property
    def dedup_key(self) -> str:
        """Stable identity of the row: its id where the source has one, else a hash."""
        if self.row_id is not None:
            return f"{self.source}:id:{self.row_id}"
        parts: tuple[object, ...] = (
            self.eventtype,
            self.eventtime.isoformat(),
            self.uniqueid,
            self.linkedid,
            self.channame,
            self.appname,
            self.appdata,
            self.peer,
            self.extra,
            self.exten,
            self.context,
        )
        if self.source_pos:
            parts = (*parts, self.source_pos)
        return f"{self.source}:h:" + _digest(parts)


@_slot_init
@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR row (one leg). `calldate` is an aware datetime in UTC."""

    calldate: datetime
    uniqueid: str
    linkedid: str
    clid: str = ""
    src: str = ""
    dst: str = ""
    dcontext: str = ""
    channel: str = ""
    dstchannel: str = ""
    lastapp: str = ""
    lastdata: str = ""
    duration: int = 0
    billsec: int = 0
    disposition: str = ""
    amaflags: str = ""
    accountcode: str = ""
    userfield: str = ""
    sequence: int | None = None
    peeraccount: str = ""
    # Optional install-specific columns (recordingfile, did, cnum, ...).
    extras: tuple[tuple[str, str], ...] = ()
    row_id: int | None = None
    source: str = "db"

    @property
    def call_linkedid(self) -> str:
        return self.linkedid or self.uniqueid

    def extra(self, name: str) -> str:
        for k, v in self.extras:
            if k == name:
                return v
        return ""

    @property
    def dedup_key(self) -> str:
        if self.row_id is not None:
            return f"{self.source}:id:{self.row_id}"
        return f"{self.source}:h:" + _digest(
            (
                self.calldate.isoformat(),
                self.uniqueid,
                self.linkedid,
                self.channel,
                self.dstchannel,
                self.src,
                self.dst,
                self.duration,
                self.billsec,
                self.disposition,
                self.sequence,
                self.lastapp,
            )
        )


Row = CelRow | CdrRow


def row_layout(cls: type[CelRow] | type[CdrRow]) -> tuple[dict[str, int], list[Any]]:
    """(field -> position, the defaults in field order) of a row class, for building rows
    positionally; a required field's default is "" (the builder always sets it)."""
    fields = dataclasses.fields(cls)
    return (
        {f.name: k for k, f in enumerate(fields)},
        ["" if f.default is dataclasses.MISSING else f.default for f in fields],
    )


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """A recording tied to a call (see ingest-api.md `recording_files`)."""

    filename: str
    file_path: str
    source: str  # cel_mixmonitor | database | filesystem
    file_size: int | None = None
    started_at: datetime | None = None
    uploaded: bool = False
    uniqueid: str = ""

    def as_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "filename": self.filename,
            "file_path": self.file_path,
            "file_size": self.file_size if self.file_size is not None else 0,
            "source": self.source,
            "uploaded": self.uploaded,
        }
        if self.started_at is not None:
            doc["started_at"] = self.started_at.isoformat()
        return doc


# ShipState.extra keys the state store writes when call groups merge.
SHIP_MERGED_FROM = "merged_from"  # [call keys merged into this one]
SHIP_SUPERSEDED = "superseded"  # {merged-away linkedid: last revision sent for it}


@dataclass(slots=True)
class ShipState:
    """What has been shipped for one call so far (kept in the state store)."""

    revision: int = 0  # revision of the last document enqueued (0 = none yet)
    last_phase: str = ""  # "", initial, update, complete
    last_enqueued_at: datetime | None = None
    last_fingerprint: str = ""  # content hash of the last document (no-op updates are skipped)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceMark:
    """How far one source of rows has read (its watermark), as it last said.

    `read_through`: every row whose time (CEL eventtime; CDR end in id order,
    the time column in time order) is at or before it has been read (PBX time
    as converted, aware UTC). `caught_up_at`: a read that started at this wall
    clock time found nothing more to read. `holds`: False while the source
    cannot deliver older rows any more (AMI disconnected: what it misses is a
    gap), so it holds no call back. `behind`: the source's last read stopped at a
    full page with more rows waiting (a backlog); it reads again at once.
    """

    read_through: datetime | None = None
    caught_up_at: datetime | None = None
    holds: bool = True
    behind: bool = False

    @property
    def watermark(self) -> datetime | None:
        """Rows up to this time are in; None before the source said anything."""
        known = [t for t in (self.read_through, self.caught_up_at) if t is not None]
        return max(known) if known else None
