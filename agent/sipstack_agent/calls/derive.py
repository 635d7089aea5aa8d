"""Derived call facts from CEL and CDR rows (asterisk-data.md "Derived fields").

Everything here is a pure function of the (sorted) rows of one call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from sipstack_agent.calls import numbers
from sipstack_agent.calls.direction import classify_channel, party_label
from sipstack_agent.calls.types import Channel, Derived, QueueInfo, Transfer
from sipstack_agent.config import DirectionSettings
from sipstack_agent.model import CdrRow, CelRow, RecordingFile
from sipstack_agent.rules.mixmonitor import MONITOR_DIR, appdata_path

END_EVENTS = frozenset({"CHAN_END", "HANGUP"})

# Disposition precedence when no leg answered (ANSWERED always wins).
DISPOSITION_ORDER: tuple[str, ...] = (
    "ANSWERED",
    "BUSY",
    "NO ANSWER",
    "CONGESTION",
    "FAILED",
    "CANCEL",
)
_DIALSTATUS = {
    "ANSWER": "ANSWERED",
    "ANSWERED": "ANSWERED",
    "BUSY": "BUSY",
    "NOANSWER": "NO ANSWER",
    "NO ANSWER": "NO ANSWER",
    "CANCEL": "CANCEL",
    "CONGESTION": "CONGESTION",
    "CHANUNAVAIL": "FAILED",
    "FAILED": "FAILED",
    "INVALIDARGS": "FAILED",
    "DONTCALL": "FAILED",
    "TORTURE": "FAILED",
}
_CLID = re.compile(r'^\s*"?(?P<name>[^"<]*?)"?\s*<(?P<num>[^>]*)>\s*$')


def utc(dt: datetime) -> datetime:
    """Aware UTC datetime (a naive one is taken as UTC)."""
    tz = dt.tzinfo
    if tz is UTC:  # what the sources give: the same object astimezone would return
        return dt
    if tz is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


_EVENT_NAMES: dict[str, str] = {}
_EVENT_NAMES_MAX = 512  # distinct spellings remembered (Asterisk has about 30 event types)


def event_name(eventtype: str) -> str:
    """A CEL eventtype as the rules compare it (stripped, upper case); remembered."""
    name = _EVENT_NAMES.get(eventtype)
    if name is None:
        name = eventtype.strip().upper()
        if len(_EVENT_NAMES) < _EVENT_NAMES_MAX:
            _EVENT_NAMES[eventtype] = name
    return name


def event_names(cels: Sequence[CelRow]) -> tuple[str, ...]:
    """Each row's `event_name`, once per call: the rules below take them with the rows
    (`names`, in the same order) instead of deriving them again in every scan."""
    return tuple([event_name(r.eventtype) for r in cels])


def _secs(delta: timedelta) -> int:
    return max(0, round(delta.total_seconds()))


def sort_cels(cels: Iterable[CelRow]) -> tuple[CelRow, ...]:
    """By real time, then by source row id; id-less rows keep their given order."""
    indexed = list(enumerate(cels))
    indexed.sort(
        key=lambda p: (
            utc(p[1].eventtime),
            0 if p[1].row_id is not None else 1,
            p[1].row_id or 0,
            p[0],
        )
    )
    return tuple(r for _, r in indexed)


def sort_cdrs(cdrs: Iterable[CdrRow]) -> tuple[CdrRow, ...]:
    indexed = list(enumerate(cdrs))
    indexed.sort(
        key=lambda p: (
            utc(p[1].calldate),
            0 if p[1].row_id is not None else 1,
            p[1].row_id or 0,
            p[1].sequence if p[1].sequence is not None else 0,
            p[0],
        )
    )
    return tuple(r for _, r in indexed)


# Values orjson reads exactly as json.loads does (its integers are exact up to 64 bits;
# beyond that it gives a float, without an error).
_EXACT_TYPES = frozenset({str, int, bool, type(None)})


def parse_extra(text: str) -> dict[str, Any] | None:
    """The CEL extra column as a JSON object, None when empty or not an object.

    orjson for the usual flat object of strings and integers; json.loads (the reference)
    for anything else: what orjson refuses (NaN, Infinity, lone surrogates, ...) and any
    float or nested value (a float may be an integer over 64 bits orjson turned into one)."""
    if not text or not text.strip().startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(value) is dict and all(type(v) in _EXACT_TYPES for v in value.values()):
            return value
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def cdr_extra(cdr: CdrRow, name: str) -> str:
    """An optional install-specific CDR column (recordingfile, did, ...), "" when absent."""
    for k, v in cdr.extras:
        if k == name:
            return v
    return ""


def cdr_end(cdr: CdrRow) -> datetime:
    return utc(cdr.calldate) + timedelta(seconds=max(0, cdr.duration))


def cdr_answer(cdr: CdrRow) -> datetime | None:
    if cdr.disposition.strip().upper() != "ANSWERED":
        return None
    ring = max(0, cdr.duration - max(0, cdr.billsec))
    return utc(cdr.calldate) + timedelta(seconds=ring)


# --------------------------------------------------------------------------- channels


def build_channels(
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    settings: DirectionSettings,
    names: Sequence[str] | None = None,
) -> tuple[Channel, ...]:
    """Channels by uniqueid from sorted CEL rows; from CDR rows when there is no CEL.
    `names`: the rows' event_names (event_names(cels)), computed here when not given."""
    if cels:
        return _channels_from_cels(cels, settings, event_names(cels) if names is None else names)
    return _channels_from_cdrs(cdrs, settings)


def _channels_from_cels(
    cels: Sequence[CelRow], settings: DirectionSettings, names: Sequence[str]
) -> tuple[Channel, ...]:
    acc: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(cels):
        key = row.uniqueid or row.channame or f"row{i}"
        t = utc(row.eventtime)
        ch = acc.get(key)
        if ch is None:
            ch = acc[key] = {
                "uniqueid": key,
                "name": row.channame,
                "first_seen": t,
                "order": i,
                "cid_num": row.cid_num,
                "cid_name": row.cid_name,
                "exten": row.exten,
                "context": row.context,
                "dnid": row.cid_dnid,
                "accountcode": row.accountcode,
                "linkedids": [],
            }
        lid = row.call_linkedid
        if lid and lid not in ch["linkedids"]:
            ch["linkedids"].append(lid)
        if not ch["name"] and row.channame:
            ch["name"] = row.channame
        # the first non-empty value of each (written out: this runs for every row)
        if not ch["cid_num"] and row.cid_num:
            ch["cid_num"] = row.cid_num
        if not ch["cid_name"] and row.cid_name:
            ch["cid_name"] = row.cid_name
        if not ch["dnid"] and row.cid_dnid:
            ch["dnid"] = row.cid_dnid
        if not ch["accountcode"] and row.accountcode:
            ch["accountcode"] = row.accountcode
        et = names[i]
        if et == "CHAN_START" and "started_at" not in ch:
            ch["started_at"] = t
            ch["exten"] = row.exten or ch["exten"]
            ch["context"] = row.context or ch["context"]
        elif et == "ANSWER" and "answered_at" not in ch:
            ch["answered_at"] = t
        elif et == "HANGUP":
            ch["hung_up"] = True
            ch.setdefault("hangup_at", t)
            extra = parse_extra(row.extra) or {}
            cause = _int(extra.get("hangupcause"))
            if cause is not None:
                ch["hangup_cause"] = cause
            status = extra.get("dialstatus")
            if isinstance(status, str) and status:
                ch["dialstatus"] = status
        elif et == "CHAN_END":
            ch["ended_at"] = t
    out = []
    for ch in acc.values():
        name = str(ch["name"])
        out.append(
            Channel(
                uniqueid=ch["uniqueid"],
                name=name,
                kind=classify_channel(name, settings),
                label=party_label(name),
                first_seen=ch["first_seen"],
                order=ch["order"],
                started_at=ch.get("started_at"),
                answered_at=ch.get("answered_at"),
                ended_at=ch.get("ended_at") or ch.get("hangup_at"),
                hung_up=bool(ch.get("hung_up")) or "ended_at" in ch,
                chan_end="ended_at" in ch,
                cid_num=ch["cid_num"],
                cid_name=ch["cid_name"],
                exten=ch["exten"],
                context=ch["context"],
                dnid=ch["dnid"],
                accountcode=ch["accountcode"],
                hangup_cause=ch.get("hangup_cause"),
                dialstatus=ch.get("dialstatus", ""),
                linkedids=tuple(ch["linkedids"]),
            )
        )
    return tuple(out)


def parse_clid(clid: str) -> tuple[str, str]:
    """`"John Smith" <4085551234>` -> ("John Smith", "4085551234")."""
    m = _CLID.match(clid or "")
    if not m:
        return "", ""
    return m.group("name").strip(), m.group("num").strip()


def _channels_from_cdrs(cdrs: Sequence[CdrRow], settings: DirectionSettings) -> tuple[Channel, ...]:
    out: dict[str, Channel] = {}
    for i, cdr in enumerate(cdrs):
        start = utc(cdr.calldate)
        end = cdr_end(cdr)
        answer = cdr_answer(cdr)
        name, _ = parse_clid(cdr.clid)
        if cdr.channel:
            key = cdr.uniqueid or f"cdr:{cdr.channel}"
            if key not in out:
                out[key] = Channel(
                    uniqueid=key,
                    name=cdr.channel,
                    kind=classify_channel(cdr.channel, settings),
                    label=party_label(cdr.channel),
                    first_seen=start,
                    order=2 * i,
                    started_at=start,
                    ended_at=end,
                    hung_up=True,
                    chan_end=True,
                    cid_num=cdr.src,
                    cid_name=name,
                    exten=cdr.dst,
                    context=cdr.dcontext,
                    dnid=cdr_extra(cdr, "did"),
                    accountcode=cdr.accountcode,
                    linkedids=(cdr.call_linkedid,),
                )
        if cdr.dstchannel:
            key = f"cdr-dst:{cdr.dstchannel}"
            if key not in out:
                out[key] = Channel(
                    uniqueid=key,
                    name=cdr.dstchannel,
                    kind=classify_channel(cdr.dstchannel, settings),
                    label=party_label(cdr.dstchannel),
                    first_seen=start,
                    order=2 * i + 1,
                    started_at=start,
                    answered_at=answer,
                    ended_at=end,
                    hung_up=True,
                    chan_end=True,
                    accountcode=cdr.peeraccount,
                    linkedids=(cdr.call_linkedid,),
                )
    return tuple(out.values())


def origin_channel(channels: Sequence[Channel], linkedids: Iterable[str]) -> Channel | None:
    """The calling party: the earliest non-Local channel, preferring one that
    started a linkedid (uniqueid == linkedid)."""
    lids = set(linkedids)
    parties = [c for c in channels if c.is_party]
    if not parties:
        return None
    return min(parties, key=lambda c: (c.uniqueid not in lids, c.order))


def destination_channel(channels: Sequence[Channel], origin: Channel | None) -> Channel | None:
    """First non-originating party that answered, else the first one that rang."""
    others = [c for c in channels if c.is_party and c is not origin]
    answered = [c for c in others if c.answered_at is not None]
    if answered:
        return min(answered, key=lambda c: (c.answered_at or c.first_seen, c.order))
    if others:
        return min(others, key=lambda c: c.order)
    return None


# --------------------------------------------------------------------------- recordings


def recording_from_appdata(
    appdata: str, started_at: datetime | None, uniqueid: str, monitor_dir: str = MONITOR_DIR
) -> RecordingFile | None:
    path = appdata_path(appdata, monitor_dir)
    if not path:
        return None
    return RecordingFile(
        filename=os.path.basename(path),
        file_path=path,
        source="cel_mixmonitor",
        started_at=started_at,
        uniqueid=uniqueid,
    )


def freepbx_recording_path(
    name: str, calldate: datetime, timezone: str = "UTC", monitor_dir: str = MONITOR_DIR
) -> str:
    """Where FreePBX writes `cdr.recordingfile`: monitor/YYYY/MM/DD/ of the PBX-local date
    (a full path is kept). The recordings stage replaces it with the file it really finds."""
    if name.startswith("/"):
        return name
    try:
        local = utc(calldate).astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = utc(calldate)
    return os.path.join(monitor_dir, local.strftime("%Y/%m/%d"), name)


def recordings_from_rows(
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    timezone: str = "UTC",
    monitor_dir: str = MONITOR_DIR,
    names: Sequence[str] | None = None,
) -> list[RecordingFile]:
    """MixMonitor APP_START rows and the FreePBX `recordingfile` CDR column."""
    out: list[RecordingFile] = []
    for row, et in zip(cels, event_names(cels) if names is None else names, strict=True):
        if et == "APP_START" and row.appname.lower() == "mixmonitor":
            rec = recording_from_appdata(row.appdata, utc(row.eventtime), row.uniqueid, monitor_dir)
            if rec is not None:
                out.append(rec)
    for cdr in cdrs:
        name = cdr_extra(cdr, "recordingfile").strip()
        if name:
            path = freepbx_recording_path(name, cdr.calldate, timezone, monitor_dir)
            out.append(
                RecordingFile(
                    filename=os.path.basename(path),
                    file_path=path,
                    source="database",
                    started_at=utc(cdr.calldate),
                    uniqueid=cdr.uniqueid,
                )
            )
    return out


def _stem(name: str) -> str:
    base = os.path.basename(name)
    stem, ext = os.path.splitext(base)
    return stem if ext.lower() in {".wav", ".mp3", ".gsm", ".ogg", ".wav49", ".sln"} else base


def merge_recordings(
    given: Sequence[RecordingFile], from_rows: Sequence[RecordingFile]
) -> tuple[RecordingFile, ...]:
    """Recordings found by the recordings stage win over the ones named in rows."""
    out: list[RecordingFile] = []
    seen: set[str] = set()
    for rec in list(given) + list(from_rows):
        key = _stem(rec.filename or rec.file_path)
        if key in seen:
            continue
        seen.add(key)
        out.append(rec)
    return tuple(out)


# --------------------------------------------------------------------------- derive


def _disposition(
    answered: bool, cdrs: Sequence[CdrRow], channels: Sequence[Channel], origin: Channel | None
) -> str:
    if answered:
        return "ANSWERED"
    found: set[str] = set()
    for cdr in cdrs:
        d = _DIALSTATUS.get(cdr.disposition.strip().upper())
        if d:
            found.add(d)
    for ch in channels:
        if ch.dialstatus:
            d = _DIALSTATUS.get(ch.dialstatus.strip().upper())
            if d and d != "ANSWERED":
                found.add(d)
        if ch is not origin and ch.is_party and ch.hangup_cause == 17:
            found.add("BUSY")
    for d in DISPOSITION_ORDER[1:]:
        if d in found:
            return d
    return "NO ANSWER"


def _transfers(cels: Sequence[CelRow], names: Sequence[str]) -> tuple[Transfer, ...]:
    out: list[Transfer] = []
    for row, et in zip(cels, names, strict=True):
        if et not in ("BLINDTRANSFER", "ATTENDEDTRANSFER"):
            continue
        extra = parse_extra(row.extra) or {}
        src = party_label(row.channame) or row.cid_num
        if et == "BLINDTRANSFER":
            to = str(extra.get("extension") or "")
            out.append(Transfer("blind", utc(row.eventtime), src, to))
        else:
            target = ""
            for k in ("transfer_target_channel_name", "channel2_name"):
                v = extra.get(k)
                if isinstance(v, str) and v:
                    target = party_label(v)
                    if target:
                        break
            if not target:
                app = extra.get("app")
                target = str(app) if isinstance(app, str) else ""
            out.append(Transfer("attended", utc(row.eventtime), src, target))
    return tuple(out)


def _queue(
    cels: Sequence[CelRow],
    names: Sequence[str],
    channels: Sequence[Channel],
    origin: Channel | None,
    end: datetime,
) -> QueueInfo | None:
    start_row = next(
        (
            r
            for r, et in zip(cels, names, strict=True)
            if et == "APP_START" and r.appname.lower() == "queue"
        ),
        None,
    )
    if start_row is None:
        return None
    entered = utc(start_row.eventtime)
    name = start_row.appdata.split(",", 1)[0].strip()
    members = [
        c
        for c in channels
        if c.is_party
        and c is not origin
        and c.uniqueid != start_row.uniqueid
        and c.answered_at is not None
        and c.answered_at >= entered
    ]
    if members:
        m = min(members, key=lambda c: (c.answered_at or entered, c.order))
        answered_at = m.answered_at or entered
        return QueueInfo(name, entered, _secs(answered_at - entered), m.label or m.cid_num)
    left = next(
        (
            utc(r.eventtime)
            for r, et in zip(cels, names, strict=True)
            if et == "APP_END"
            and r.appname.lower() == "queue"
            and r.uniqueid == start_row.uniqueid
            and utc(r.eventtime) >= entered
        ),
        end,
    )
    return QueueInfo(name, entered, _secs(left - entered))


def _dtmf(cels: Sequence[CelRow], names: Sequence[str]) -> str:
    digits: list[str] = []
    for row, et in zip(cels, names, strict=True):
        if et != "DTMF" and row.userdeftype.strip().upper() != "DTMF":
            continue
        extra = parse_extra(row.extra) or {}
        d = extra.get("digit") or extra.get("dtmf") or row.appdata
        if isinstance(d, str | int) and str(d).strip():
            digits.append(str(d).strip())
    return "".join(digits)


def _clean_name(name: str, number: str) -> str:
    n = (name or "").strip()
    if not n or n == number or n.lower() in {"unknown", "anonymous", "<unknown>"}:
        return ""
    return n


def derive(
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    channels: Sequence[Channel],
    linkedids: Sequence[str],
    settings: DirectionSettings,
    names: Sequence[str] | None = None,
) -> Derived:
    """All derived facts of one call. `cels` and `cdrs` are sorted (sort_cels/sort_cdrs);
    `names` are the rows' event_names (event_names(cels)), computed here when not given."""
    if names is None:
        names = event_names(cels)
    times = [utc(r.eventtime) for r in cels]
    cdr_times = [utc(c.calldate) for c in cdrs]
    cdr_ends = [cdr_end(c) for c in cdrs]
    if times:
        start = min(times)
    elif cdr_times:
        start = min(cdr_times)
    else:
        start = datetime(1970, 1, 1, tzinfo=UTC)
    last_event = max([start, *times, *cdr_ends])

    origin = origin_channel(channels, linkedids)
    dest = destination_channel(channels, origin)

    # End: every channel hung up (CEL), or the CDR legs' ends (CDR only).
    end: datetime | None = None
    if cels:
        if channels and all(c.hung_up for c in channels):
            ends = [c.ended_at for c in channels if c.ended_at is not None]
            ends += [
                utc(r.eventtime) for r, et in zip(cels, names, strict=True) if et == "LINKEDID_END"
            ]
            end = max(ends) if ends else last_event
    elif cdrs:
        end = max(cdr_ends)

    answers = sorted(
        (c for c in channels if c.is_party and c is not origin and c.answered_at is not None),
        key=lambda c: (c.answered_at or start, c.order),
    )
    cdr_answers = [a for a in (cdr_answer(c) for c in cdrs) if a is not None]
    answered = bool(answers) or bool(cdr_answers)
    answer_time: datetime | None = None
    if answers:
        answer_time = answers[0].answered_at
    elif cdr_answers:
        answer_time = min(cdr_answers)
    answered_by = tuple(
        dict.fromkeys(c.label or c.cid_num for c in answers if c.label or c.cid_num)
    )

    billsec = max((max(0, c.billsec) for c in cdrs), default=None)
    stop = end or last_event
    ring = _secs((answer_time or stop) - start)
    talk = _secs(stop - answer_time) if answer_time is not None and end is not None else None

    # DNID: the first channel's cid_dnid, else FreePBX's CDR `did` (the DID its inbound
    # route matched), else the first dialable CHAN_START exten, else the first CDR dst.
    did = next((cdr_extra(c, "did") for c in cdrs if cdr_extra(c, "did")), "")
    dnid = origin.dnid if origin is not None else ""
    if not dnid:
        dnid = next((c.dnid for c in channels if c.dnid), "")
    if not dnid:
        dnid = did
    if not dnid:
        dnid = next(
            (
                r.exten
                for r, et in zip(cels, names, strict=True)
                if et == "CHAN_START" and numbers.is_dialable(r.exten)
            ),
            "",
        )
    if not dnid and cdrs and numbers.is_dialable(cdrs[0].dst):
        dnid = cdrs[0].dst
    dnid = numbers.clean(dnid)

    # Source party.
    first_cdr = cdrs[0] if cdrs else None
    clid_name, clid_num = parse_clid(first_cdr.clid) if first_cdr else ("", "")
    # FreePBX's cnum / cnam (the caller id after its CID lookups) fill in what CEL lacks.
    cnum = next((cdr_extra(c, "cnum") for c in cdrs if cdr_extra(c, "cnum")), "")
    cnam = next((cdr_extra(c, "cnam") for c in cdrs if cdr_extra(c, "cnam")), "")
    src_raw = (
        (origin.cid_num if origin else "") or (first_cdr.src if first_cdr else "") or clid_num
    ) or cnum
    src_number = numbers.normalize(src_raw, settings)
    src_name = _clean_name((origin.cid_name if origin else "") or clid_name, src_raw)
    src_name = src_name or _clean_name(cnam, src_raw)
    src_extension = ""
    if origin is not None and origin.kind == "extension":
        src_extension = origin.label
    elif origin is None and numbers.is_extension(src_number, settings):
        src_extension = src_number
    src_extension_name = src_name if src_extension else ""

    # Destination party.
    dst_raw = dnid
    if not dst_raw and first_cdr is not None and numbers.is_dialable(first_cdr.dst):
        dst_raw = first_cdr.dst
    dst_number = numbers.normalize(dst_raw, settings) if dst_raw else ""
    dst_extension = dst_name = ""
    if dest is not None and dest.kind == "extension":
        dst_extension = dest.label
        dst_name = _clean_name(dest.cid_name, dest.cid_num)
    elif dest is None and numbers.is_extension(dst_number, settings):
        dst_extension = dst_number
    if not dst_name:  # FreePBX's dst_cnam: the name of the extension it rang
        dst_cnam = next((cdr_extra(c, "dst_cnam") for c in cdrs if cdr_extra(c, "dst_cnam")), "")
        dst_name = _clean_name(dst_cnam, dst_number)
    dst_extension_name = dst_name if dst_extension else ""

    hangup_cause = origin.hangup_cause if origin is not None else None
    if hangup_cause is None:
        hangup_cause = next((c.hangup_cause for c in channels if c.hangup_cause is not None), None)

    return Derived(
        start=start,
        end=end,
        last_event=last_event,
        duration_seconds=_secs(stop - start),
        answered=answered,
        answer_time=answer_time,
        billsec=billsec,
        ring_seconds=ring,
        talk_seconds=talk,
        disposition=_disposition(answered, cdrs, channels, origin),
        dnid=dnid,
        src_number=src_number,
        src_extension=src_extension,
        src_name=src_name,
        src_extension_name=src_extension_name,
        dst_number=dst_number,
        dst_extension=dst_extension,
        dst_name=dst_name,
        dst_extension_name=dst_extension_name,
        answered_by=answered_by,
        transfers=_transfers(cels, names),
        queue=_queue(cels, names, channels, origin, stop),
        dtmf=_dtmf(cels, names),
        hangup_cause=hangup_cause,
        origin=origin,
        destination=dest,
    )
