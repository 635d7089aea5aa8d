"""Value types of the call core: channels, derived facts, the assembled `Call`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sipstack_agent.model import CdrRow, CelRow, RecordingFile, _slot_init


@_slot_init  # built once or more per evaluated call (model._slot_init)
@dataclass(frozen=True, slots=True)
class Channel:
    """One channel (one uniqueid) of a call, as seen in CEL (or CDR) rows."""

    uniqueid: str
    name: str
    kind: str  # trunk | extension | local | other (see direction.classify_channel)
    label: str  # peer name / Local extension
    first_seen: datetime
    order: int  # position of its first row in the sorted rows
    started_at: datetime | None = None  # CHAN_START
    answered_at: datetime | None = None  # first ANSWER
    ended_at: datetime | None = None  # CHAN_END, else HANGUP
    hung_up: bool = False  # HANGUP or CHAN_END seen
    chan_end: bool = False  # CHAN_END seen: the channel is gone
    cid_num: str = ""
    cid_name: str = ""
    exten: str = ""  # exten of the first row (CHAN_START)
    context: str = ""
    dnid: str = ""  # first non-empty cid_dnid
    accountcode: str = ""
    hangup_cause: int | None = None
    dialstatus: str = ""
    linkedids: tuple[str, ...] = ()

    @property
    def is_party(self) -> bool:
        return self.kind != "local"


@dataclass(frozen=True, slots=True)
class Transfer:
    type: str  # blind | attended
    at: datetime
    from_: str
    to: str


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    entered_at: datetime
    wait_seconds: int
    answered_by: str = ""


@_slot_init  # built once or more per evaluated call (model._slot_init)
@dataclass(frozen=True, slots=True)
class Derived:
    """Facts derived from the rows (derive.py)."""

    start: datetime
    end: datetime | None  # last hangup; None while the call runs
    last_event: datetime  # newest event time of any row
    duration_seconds: int
    answered: bool
    answer_time: datetime | None
    billsec: int | None
    ring_seconds: int | None
    talk_seconds: int | None
    disposition: str
    dnid: str = ""
    src_number: str = ""
    src_extension: str = ""
    src_name: str = ""
    src_extension_name: str = ""
    dst_number: str = ""
    dst_extension: str = ""
    dst_name: str = ""
    dst_extension_name: str = ""
    answered_by: tuple[str, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    queue: QueueInfo | None = None
    dtmf: str = ""
    hangup_cause: int | None = None
    origin: Channel | None = None
    destination: Channel | None = None


@_slot_init  # built once or more per evaluated call (model._slot_init)
@dataclass(frozen=True, slots=True)
class Call:
    """One assembled call: its rows, channels, completion state and derived facts."""

    call_key: str
    linkedids: tuple[str, ...]
    cels: tuple[CelRow, ...]
    cdrs: tuple[CdrRow, ...]
    recordings: tuple[RecordingFile, ...]
    channels: tuple[Channel, ...]
    derived: Derived
    is_complete: bool
    completion_reason: str  # linkedid_end | idle_timeout | cdr_idle_timeout | max_age | ...
    forced: bool  # force-completed by CALL_MAX_AGE
    last_activity: datetime  # newest event time (or arrival time when that is older)
    idle_deadline: datetime | None  # complete at this time unless a row arrives
    max_age_deadline: datetime
    direction: str
    direction_reason: str
    tenant: str
    tenant_source: str = "none"
    cdr_only: bool = False
    gap: bool = False  # active while the CEL feed (AMI) was disconnected
    timezone: str = "UTC"
    timezone_source: str = "configured"  # zones.FOUND: how the zone was found
    notes: tuple[str, ...] = field(default=())
    held: bool = False  # complete by its rows, waiting for the sources / SHIP_COMPLETE_AFTER
    wait_mark: datetime | None = None  # held until the sources' low watermark reaches it
    supersedes: tuple[tuple[str, int], ...] = ()  # (linkedid, revision) shipped before a merge
    awaiting_cdr: bool = False  # CEL says it ended; waiting (CallSettings.cdr_wait) for CDR rows
    cel_events: tuple[str, ...] = ()  # derive.event_names(cels), computed once by assemble
