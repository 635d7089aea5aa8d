"""CEL from cel_custom's CSV file (CEL_MODE=csv).

Two layers:

* Pure parsing: `CelCsvParser.parse_chunk(data, offset, final)` turns raw bytes of
  the file into `CelRow`s and `Quarantine` records and says how many bytes were
  consumed (only whole records; a half-written last record waits). Values
  quoted with CSV_QUOTE may hold commas, doubled quotes and newlines; cel_custom
  lines written as JSON objects are accepted too. Times are PBX-local (or epoch)
  and become aware UTC datetimes. Bytes that are not UTF-8 are decoded as
  latin-1 for that record (every byte kept, never a crash, and the text stays
  encodable for the state store and the JSON documents).
* The tailer `CelCsvSource(settings, store, metrics, timezone)`: reads the file
  in bounded chunks, writes rows and the read position (device, inode, offset,
  fingerprint of the first bytes) through `store.ingest(cels, [], {name: pos})`
  in one transaction, follows rename-and-create rotation (drains the old file
  through its still-open descriptor, or finds it again by inode after a
  restart) and copytruncate (file shrinks below the offset, or its first bytes
  change), and quarantines malformed records (JSONL under
  STATE_DIR/quarantine/, metric, logged once per reason) without stopping.

Identity: each row carries `source_pos = "dev:inode:offset"` of its record, which
is part of `CelRow.dedup_key`, so two identical events in the same microsecond
stay two rows while a re-read of the same record is still de-duplicated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol

from ..config import CsvSettings
from ..metrics import Metrics
from ..model import CEL_COLUMNS, CEL_REQUIRED_COLUMNS, CelRow
from ..rules import backoff
from ..rules.checks import CheckResult, Status
from ..watermarks import ReadPacer, Watermarks
from ..zones import PbxZone, judge, skew_advice, tzinfo_of
from .timezone import ClockCheck

__all__ = [
    "DEFAULT_COLUMNS",
    "CelCsvParser",
    "CelCsvSource",
    "ChunkResult",
    "Quarantine",
    "TimeParser",
    "check_csv",
    "resolve_columns",
]

log = logging.getLogger(__name__)

# cel_custom default mapping = the cel table without its id (see docs/cel-sources.md).
DEFAULT_COLUMNS: tuple[str, ...] = CEL_COLUMNS

_CEL_FIELDS = frozenset(CEL_COLUMNS)
_REQUIRED = CEL_REQUIRED_COLUMNS
# CelRow's positional field order after eventtime (eventtype, eventtime, uniqueid, linkedid, ...).
_ROW_ORDER: tuple[str, ...] = (
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
_JSON_ALIASES: dict[str, str] = {
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
    """The column order to use: the configured one, or the cel_custom default.

    Names that are not CEL columns ("id", "-", "_", anything else) are read and ignored.
    """
    cols = tuple(c.strip().lower() for c in columns) if columns else DEFAULT_COLUMNS
    missing = [c for c in _REQUIRED if c not in cols]
    if missing:
        raise ValueError(f"CEL_CSV_COLUMNS must include {', '.join(missing)}")
    return cols


# --------------------------------------------------------------------------- time


class TimeParser:
    """eventtime text -> aware UTC datetime.

    Accepts `%F %T`, `%F %T.<1..9 digits>` (3 = `%3q`, 6 as cel_pgsql/cel_custom
    write it), ISO forms with `T` and/or an offset, and `<seconds>.<fraction>`
    (epoch, UTC by definition). Naive local times are interpreted in `timezone`
    (the resolved DB_TIMEZONE: an IANA name or a fixed offset such as +05:30); in
    the repeated hour of a DST fall-back the first occurrence is taken.
    The conversion of each distinct second is cached.
    """

    _CACHE_MAX = 16384

    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone or "UTC"
        self._tz = None if self.timezone.upper() in ("UTC", "Z", "ETC/UTC") else tzinfo_of(timezone)
        self._cache: dict[str, datetime] = {}

    def __call__(self, text: str) -> datetime:
        # Fast path: a second seen before (the cache only holds validated prefixes).
        base = self._cache.get(text[:19])
        if base is not None:
            n = len(text)
            if n == 26 and text[19] == ".":
                frac = text[20:]
                if frac.isdigit() and frac.isascii():
                    return base.replace(microsecond=int(frac))
            elif n == 19:
                return base
        return self._parse(text)

    def _parse(self, text: str) -> datetime:
        s = text.strip()
        n = len(s)
        if n >= 19 and s[4] == "-" and s[7] == "-" and s[13] == ":":
            key = s[:19]
            base = self._cache.get(key)
            if base is None:
                base = self._second(key)
            if n == 19:
                return base
            if s[19] == "." and n > 20:
                frac = s[20:]
                if frac.isascii() and frac.isdigit() and len(frac) <= 9:
                    return base.replace(microsecond=int((frac + "00000")[:6]))
            return self._slow(s)
        if n and (s[0].isdigit() or s[0] == "-"):
            return self._epoch(s)
        raise ValueError(f"not a CEL time: {text[:40]!r}")

    def _second(self, key: str) -> datetime:
        if not (key.isascii() and key[:4].isdigit() and key[5:7].isdigit() and key[8:10].isdigit()):
            raise ValueError(f"not a CEL time: {key!r}")
        naive = datetime.fromisoformat(key)
        if self._tz is None:
            value = naive.replace(tzinfo=UTC)
        else:
            value = naive.replace(tzinfo=self._tz).astimezone(UTC)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = value
        return value

    def _slow(self, s: str) -> datetime:
        try:
            value = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"not a CEL time: {s[:40]!r}") from None
        if value.tzinfo is None:
            if self._tz is None:
                return value.replace(tzinfo=UTC)
            return value.replace(tzinfo=self._tz).astimezone(UTC)
        return value.astimezone(UTC)

    def _epoch(self, s: str) -> datetime:
        sec, dot, frac = s.partition(".")
        if not (sec.lstrip("-").isascii() and sec.lstrip("-").isdigit()) or len(sec) > 12:
            raise ValueError(f"not a CEL time: {s[:40]!r}")
        if dot and not (frac.isascii() and frac.isdigit() and len(frac) <= 9):
            raise ValueError(f"not a CEL time: {s[:40]!r}")
        key = "@" + sec
        base = self._cache.get(key)
        if base is None:
            try:
                base = datetime.fromtimestamp(int(sec), UTC)
            except (OverflowError, OSError) as exc:
                raise ValueError(f"not a CEL time: {s[:40]!r}") from exc
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            self._cache[key] = base
        if frac:
            return base.replace(microsecond=int((frac + "00000")[:6]))
        return base


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A record that could not be turned into a CelRow (kept aside, never fatal)."""

    offset: int  # byte offset of the record in its file
    length: int  # bytes of the record (without its newline)
    reason: str
    raw: bytes  # the record, cut to QUARANTINE_RAW_MAX bytes


@dataclass(slots=True)
class ChunkResult:
    rows: list[CelRow] = field(default_factory=list)
    quarantined: list[Quarantine] = field(default_factory=list)
    consumed: int = 0  # bytes of whole records consumed from the start of the chunk
    latin1_records: int = 0  # records that were not valid UTF-8 (decoded as latin-1)


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


class _DictGetter:
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __call__(self, d: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(d.get(n, "") for n in self.names)


class CelCsvParser:
    """Stateless-per-call parser of cel_custom records (one instance per file format)."""

    def __init__(self, columns: Sequence[str] | None = None, timezone: str = "UTC") -> None:
        self.columns = resolve_columns(columns)
        self.ncols = len(self.columns)
        self.times = TimeParser(timezone)
        index = {name: i for i, name in enumerate(self.columns) if name in _CEL_FIELDS}
        blank = self.ncols  # index of a "" appended for CEL fields the file does not have
        self._time_idx = index["eventtime"]
        self._get = itemgetter(*(index.get(name, blank) for name in _ROW_ORDER))
        self._json_get = _DictGetter(_ROW_ORDER)

    # -- one record ------------------------------------------------------------

    def parse_record(
        self, raw: bytes, offset: int = 0, pos_prefix: str = ""
    ) -> CelRow | Quarantine:
        """Parse one whole record (no trailing newline) found at `offset`."""
        item, _ = self._parse_one(raw, offset, pos_prefix)
        if item is None:
            return Quarantine(offset, len(raw), "empty record", raw[:QUARANTINE_RAW_MAX])
        return item

    def _parse_one(
        self, raw: bytes, offset: int, pos_prefix: str
    ) -> tuple[CelRow | Quarantine | None, bool]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            return None, False
        text, latin1 = _decode(raw)
        if text.lstrip().startswith("{"):
            return self._json_record(text, raw, offset, pos_prefix), latin1
        try:
            fields = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration) as exc:
            return self._q(raw, offset, f"CSV syntax: {exc}"), latin1
        return self._fields(fields, raw, offset, pos_prefix), latin1

    def _q(self, raw: bytes, offset: int, reason: str) -> Quarantine:
        return Quarantine(offset, len(raw), reason, raw[:QUARANTINE_RAW_MAX])

    def _fields(
        self, fields: list[str], raw: bytes, offset: int, pos_prefix: str
    ) -> CelRow | Quarantine:
        if len(fields) != self.ncols:
            return self._q(raw, offset, f"expected {self.ncols} columns, got {len(fields)}")
        try:
            eventtime = self.times(fields[self._time_idx])
        except ValueError as exc:
            return self._q(raw, offset, f"bad eventtime: {exc}")
        fields.append("")
        v = self._get(fields)
        if not v[0]:
            return self._q(raw, offset, "empty eventtype")
        if not v[1]:
            return self._q(raw, offset, "empty uniqueid")
        return CelRow(
            v[0], eventtime, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
            v[11], v[12], v[13], v[14], v[15], v[16], v[17],
            None, "csv", pos_prefix + str(offset),
        )  # fmt: skip

    def _json_record(
        self, text: str, raw: bytes, offset: int, pos_prefix: str
    ) -> CelRow | Quarantine:
        try:
            obj = json.loads(text)
        except ValueError as exc:
            return self._q(raw, offset, f"bad JSON: {exc}")
        if not isinstance(obj, dict):
            return self._q(raw, offset, "JSON record is not an object")
        values: dict[str, str] = {}
        for k, val in obj.items():
            key = str(k).strip().lower()
            key = _JSON_ALIASES.get(key, key)
            if key in _CEL_FIELDS and key not in values:
                if val is None:
                    values[key] = ""
                elif isinstance(val, str):
                    values[key] = val
                else:  # nested JSON (extra) / numbers: keep them as JSON text
                    values[key] = json.dumps(val, separators=(",", ":"), ensure_ascii=False)
        try:
            eventtime = self.times(values.get("eventtime", ""))
        except ValueError as exc:
            return self._q(raw, offset, f"bad eventtime: {exc}")
        if not values.get("eventtype"):
            return self._q(raw, offset, "empty eventtype")
        if not values.get("uniqueid"):
            return self._q(raw, offset, "empty uniqueid")
        values.pop("eventtime", None)
        values[""] = ""
        v = self._json_get(values)
        return CelRow(
            v[0], eventtime, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10],
            v[11], v[12], v[13], v[14], v[15], v[16], v[17],
            None, "csv", pos_prefix + str(offset),
        )  # fmt: skip

    # -- a chunk of the file --------------------------------------------------

    def split_records(
        self, data: bytes, base_offset: int = 0, final: bool = False
    ) -> tuple[list[tuple[int, bytes]], list[Quarantine], int]:
        """Cut `data` into whole records: ([(offset, record)], quarantined, consumed).

        A record ends at a newline outside quotes (quote parity of its lines). A
        record whose quotes never close within MAX_RECORD_LINES lines /
        MAX_RECORD_BYTES, or that is followed by a line that is a valid record on
        its own, is broken: its first line is quarantined and scanning resumes
        at the next line. Without `final`, an unfinished record at the end waits
        for more data; with `final` (rotated file drained, stale tail) it is
        parsed or quarantined too.
        """
        lines = data.split(b"\n")
        tail = lines.pop()
        records: list[tuple[int, bytes]] = []
        bad: list[Quarantine] = []
        pos = base_offset
        i = 0
        n = len(lines)
        while i < n:
            line = lines[i]
            if not line.count(b'"') & 1:
                records.append((pos, line))
                pos += len(line) + 1
                i += 1
                continue
            # An odd number of quotes: the record continues on the next line(s).
            parts = [line]
            size = len(line) + 1
            j = i + 1
            closed = broken = False
            while j < n:
                nxt = lines[j]
                if j - i >= MAX_RECORD_LINES or size + len(nxt) > MAX_RECORD_BYTES:
                    broken = True
                    break
                odd = nxt.count(b'"') & 1
                if not odd and self._is_record(nxt):
                    broken = True
                    break
                parts.append(nxt)
                size += len(nxt) + 1
                j += 1
                if odd:
                    closed = True
                    break
            if closed:
                records.append((pos, b"\n".join(parts)))
                pos += size
                i = j
                continue
            if not broken and not final and size + len(tail) <= MAX_RECORD_BYTES:
                break  # the rest of this record is not written yet
            bad.append(self._q(line, pos, "unbalanced quotes (unterminated quoted value)"))
            pos += len(line) + 1
            i += 1
        else:
            if final and tail:
                records.append((pos, tail))
                pos += len(tail)
            elif not lines and len(tail) > MAX_RECORD_BYTES:
                bad.append(self._q(tail, pos, f"record longer than {MAX_RECORD_BYTES} bytes"))
                pos += len(tail)
        return records, bad, pos - base_offset

    def _is_record(self, line: bytes) -> bool:
        item, _ = self._parse_one(line, 0, "")
        return isinstance(item, CelRow)

    def parse_chunk(
        self, data: bytes, base_offset: int = 0, final: bool = False, pos_prefix: str = ""
    ) -> ChunkResult:
        """Parse the whole records at the start of `data` (file bytes from `base_offset`)."""
        records, bad, consumed = self.split_records(data, base_offset, final)
        result = ChunkResult(consumed=consumed)
        rows = result.rows
        quarantined = result.quarantined
        if bad:
            quarantined.extend(bad)
        if not records:
            if len(bad) > 1:
                quarantined.sort(key=lambda q: q.offset)
            return result
        # Fast path: decode everything once and run one csv reader over the records.
        texts: list[str] = []
        latin1 = 0
        simple = True
        for _, raw in records:
            if raw[:1] == b"{":
                texts.append("")  # JSON line: parsed one by one below
                continue
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("latin-1"))
                latin1 += 1
        result.latin1_records = latin1
        reader = csv.reader(texts, strict=True)
        done = 0
        ncols = self.ncols
        times = self.times
        get = self._get
        tidx = self._time_idx
        try:
            for k, fields in enumerate(reader):
                if reader.line_num != k + 1:
                    simple = False
                    break
                off, raw = records[k]
                if len(fields) == ncols:
                    # The common case inline (same as _fields, which gives the reasons).
                    try:
                        eventtime = times(fields[tidx])
                    except ValueError:
                        item = self._fields(fields, raw, off, pos_prefix)
                    else:
                        fields.append("")
                        v = get(fields)
                        if v[0] and v[1]:
                            rows.append(
                                CelRow(
                                    v[0], eventtime, v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                                    v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16],
                                    v[17], None, "csv", pos_prefix + str(off),
                                )
                            )  # fmt: skip
                            done = k + 1
                            continue
                        why = "empty eventtype" if not v[0] else "empty uniqueid"
                        item = self._q(raw, off, why)
                elif not fields:
                    item_or_none, _ = self._parse_one(raw, off, pos_prefix)
                    if item_or_none is None:
                        done = k + 1
                        continue
                    item = item_or_none
                else:
                    item = self._q(raw, off, f"expected {ncols} columns, got {len(fields)}")
                if type(item) is CelRow:
                    rows.append(item)
                else:
                    quarantined.append(item)  # type: ignore[arg-type]
                done = k + 1
        except csv.Error:
            simple = False
        if not simple:
            for off, raw in records[done:]:
                item_or_none, _ = self._parse_one(raw, off, pos_prefix)
                if item_or_none is None:
                    continue
                if isinstance(item_or_none, CelRow):
                    rows.append(item_or_none)
                else:
                    quarantined.append(item_or_none)
        if bad:
            quarantined.sort(key=lambda q: q.offset)
        return result

    def parse_lines(self, data: bytes) -> list[CelRow | Quarantine]:
        """Convenience for tests/check: every record of `data` (treated as final), in order."""
        res = self.parse_chunk(data, 0, final=True)
        items: list[CelRow | Quarantine] = [*res.rows, *res.quarantined]
        items.sort(key=_item_offset)
        return items


def _item_offset(item: CelRow | Quarantine) -> int:
    if isinstance(item, Quarantine):
        return item.offset
    return int(item.source_pos.rsplit(":", 1)[-1] or 0)


# --------------------------------------------------------------------------- quarantine sink


_REASONS_LOGGED: dict[str, set[str]] = {}  # per feed, for the process: log each reason once


class QuarantineSink:
    """Malformed records: JSONL file (bounded, one rotation), metric, one log line per reason."""

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(
        self, directory: str | None, metrics: Metrics | None, name: str = "cel_csv"
    ) -> None:
        self.path = os.path.join(directory, f"{name}.jsonl") if directory else None
        self.metrics = metrics
        self._reasons_logged = _REASONS_LOGGED.setdefault(name, set())
        self.count = 0

    @staticmethod
    def _reason_kind(reason: str) -> str:
        return reason.split(":", 1)[0]

    def add(self, items: Iterable[Quarantine], *, file: str, dev: int, ino: int) -> None:
        lines: list[str] = []
        now = datetime.now(UTC).isoformat()
        for q in items:
            self.count += 1
            if self.metrics is not None:
                self.metrics.csv_quarantined.inc()
            kind = self._reason_kind(q.reason)
            if kind not in self._reasons_logged:
                self._reasons_logged.add(kind)
                log.warning(
                    "cel_custom record quarantined (%s) at %s offset %d%s; further records "
                    "with this reason are counted in sipstack_csv_lines_quarantined_total",
                    q.reason,
                    file,
                    q.offset,
                    f", kept in {self.path}" if self.path else "",
                )
            else:
                log.debug("cel_custom record quarantined (%s) at offset %d", q.reason, q.offset)
            if self.path:
                lines.append(
                    json.dumps(
                        {
                            "at": now,
                            "file": file,
                            "dev": dev,
                            "inode": ino,
                            "offset": q.offset,
                            "length": q.length,
                            "reason": q.reason,
                            "text": q.raw.decode("utf-8", "backslashreplace"),
                            "raw_b64": base64.b64encode(q.raw).decode("ascii"),
                        },
                        ensure_ascii=False,
                    )
                )
        if lines and self.path:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        assert self.path is not None
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if os.path.getsize(self.path) > self.MAX_BYTES:
                    os.replace(self.path, self.path + ".1")
            # raw CDR/CEL text: personal data, readable by the agent's user only
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # also a file an older agent created 0644
            with open(fd, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        except OSError as exc:  # never stop the stream for the quarantine file
            log.error("cannot write the CSV quarantine file %s: %s", self.path, exc)


# --------------------------------------------------------------------------- tailer


class CelStore(Protocol):
    """The part of `state.StateStore` the CSV source uses."""

    async def ingest(
        self,
        cels: Sequence[CelRow] = ...,
        cdrs: Sequence[Any] = ...,
        positions: Mapping[str, Mapping[str, Any]] | None = ...,
    ) -> Any: ...

    async def get_position(self, name: str) -> dict[str, Any] | None: ...

    async def set_position(self, name: str, value: Mapping[str, Any]) -> None: ...


HEAD_BYTES = 128  # fingerprint of the file start: detects copytruncate even when it regrew


@dataclass(slots=True)
class _Open:
    fd: int
    dev: int
    ino: int
    path: str
    offset: int = 0
    head_len: int = 0
    head: str = ""
    pending_since: float | None = None  # monotonic time an unfinished tail was first seen
    pending_size: int = -1


def _head_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _parse_start_from(start_from: str | datetime | None) -> tuple[str, datetime | None]:
    if isinstance(start_from, datetime):
        return "time", start_from.astimezone(UTC)
    s = (start_from or "latest").strip()
    if s.lower() in ("latest", "beginning"):
        return s.lower(), None
    t = datetime.fromisoformat(s)
    return "time", (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


class CelCsvSource:
    """Tail cel_custom's Master.csv into the state store. See the module docstring.

    `run(stop)` polls every `settings.poll_interval` s until `stop` is set; `poll_once()`
    reads everything available now (in chunks of `chunk_size` bytes, one ingest
    transaction per chunk) and returns the number of rows handed to the store.

    `start_from` applies only when the store has no position for this file:
    "latest" (default: start at the end, no history), "beginning", or an ISO
    time / datetime (read from the beginning, drop rows older than it).
    `quarantine_dir` (normally STATE_DIR/quarantine) receives malformed records as
    JSONL; None keeps only the metric and the log line.
    """

    def __init__(
        self,
        settings: CsvSettings,
        store: CelStore,
        metrics: Metrics,
        timezone: str = "UTC",
        *,
        start_from: str | datetime | None = "latest",
        quarantine_dir: str | None = None,
        position_name: str = "cel_csv",
        chunk_size: int = 1024 * 1024,
        stale_after: float | None = None,
        clock: ClockCheck | None = None,
        watermarks: Watermarks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.timezone = timezone
        self.path = settings.path
        self.name = position_name
        self.parser = CelCsvParser(settings.columns or None, timezone)
        self.chunk_size = max(int(chunk_size), 2 * MAX_RECORD_BYTES)
        self.stale_after = (
            stale_after if stale_after is not None else max(30.0, 10 * settings.poll_interval)
        )
        self._start_mode, self._start_time = _parse_start_from(start_from)
        self.quarantine = QuarantineSink(quarantine_dir, metrics, position_name)
        self._cur: _Open | None = None
        self._started = False
        self.state = "starting"  # starting | waiting_for_file | tailing | error | stopped
        self.last_error: str | None = None
        self.rows_total = 0
        self.rotations: dict[str, int] = {"rename": 0, "truncate": 0, "lost": 0}
        self.clock = clock  # the zone sanity check (sources/timezone.py)
        self._live = False  # a poll drained the file: what comes next is written now
        self._poll_written: datetime | None = None
        self._marks = watermarks
        self._read_newest: datetime | None = None  # newest eventtime read (file order)
        if watermarks is not None:
            watermarks.register(position_name)
        self._pacer = ReadPacer(watermarks)  # the evaluator may ask for a read now

    @property
    def healthy(self) -> bool:
        """False while the file is missing or reading fails (see `state`, `last_error`)."""
        return self.state in ("starting", "tailing")

    @property
    def connected(self) -> bool:
        """The app's readiness probe reads this: the file is open and being tailed."""
        return self.healthy

    # -- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = max(self.settings.poll_interval, 0.01)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    started = datetime.now(UTC)
                    self._pacer.reading()
                    await self.poll_once(stop)  # reads to the end of the file
                    if self._marks is not None:
                        self._marks.publish(
                            self.name, newest=self._read_newest, caught_up_at=started
                        )
                    failures = 0
                    delay = interval
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # transient: log, mark unhealthy, back off, retry
                    failures += 1
                    self.state = "error"
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._status(0)
                    log.error("cel_custom reader failed (%s); retrying", self.last_error)
                    log.debug("cel_custom reader failure", exc_info=True)
                    delay = backoff.ceiling(interval, min(60.0, interval * 64), failures)
                if not failures:
                    await self._pacer.sleep(stop, delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            self.close()
            self.state = "stopped"

    def close(self) -> None:
        if self._cur is not None:
            with contextlib.suppress(OSError):
                os.close(self._cur.fd)
            self._cur = None

    def _status(self, ok: int) -> None:
        self.metrics.database_connection_status.labels(source="cel_csv").set(ok)

    def position(self) -> dict[str, Any] | None:
        """The read position as stored (None before the file was opened)."""
        cur = self._cur
        if cur is None:
            return None
        return {
            "path": cur.path,
            "dev": cur.dev,
            "ino": cur.ino,
            "offset": cur.offset,
            "head_len": cur.head_len,
            "head": cur.head,
        }

    # -- one poll ---------------------------------------------------------------

    async def poll_once(self, stop: asyncio.Event | None = None) -> int:
        live, self._poll_written = self._live, None
        n = await self._poll(stop)
        if self.clock is not None:
            self.clock.observe(self._poll_written, live=live)
        self._live = self._cur is not None
        return n

    async def _poll(self, stop: asyncio.Event | None) -> int:
        if not self._started:
            await self._startup()
        if self._cur is None:
            st = _stat(self.path)
            if st is None:
                self._waiting()
                return 0
            self._open_path(0)
            if self._cur is None:
                self._waiting()
                return 0
            await self.store.set_position(self.name, self._pos())
        cur = self._cur
        total = 0
        st = _stat(self.path)
        if st is None or (st.st_dev, st.st_ino) != (cur.dev, cur.ino):
            # Rename-and-create (or the file was removed): drain the old file through the
            # descriptor we still hold, then continue with the new file from its start.
            total += await self._drain(cur, final=True, stop=stop)
            self.rotations["rename"] += 1
            self.metrics.csv_rotations.labels(kind="rename").inc()
            log.info(
                "%s was rotated (inode %d drained to offset %d); following the new file",
                self.path,
                cur.ino,
                cur.offset,
            )
            self.close()
            if st is None:
                self._waiting()
                return total
            self._open_path(0)
            if self._cur is None:
                self._waiting()
                return total
            await self.store.set_position(self.name, self._pos())
            cur = self._cur
        elif await asyncio.to_thread(self._truncated, cur):
            total += await self._truncation(cur, stop)
        self.state = "tailing"
        self.last_error = None
        self._status(1)
        total += await self._drain(cur, final=False, stop=stop)
        return total

    async def _truncation(self, cur: _Open, stop: asyncio.Event | None = None) -> int:
        """copytruncate (or any shrink/rewrite): drain the copy past our offset, restart at 0."""
        self.rotations["truncate"] += 1
        self.metrics.csv_rotations.labels(kind="truncate").inc()
        total = 0
        copy = None
        if cur.head_len and cur.offset:
            copy = await asyncio.to_thread(
                _find_copy, cur.path, cur.head_len, cur.head, cur.offset, (cur.dev, cur.ino)
            )
        if copy is not None:
            fd = _open_ro(copy)
            if fd is not None:
                fst = os.fstat(fd)
                tmp = _Open(fd, fst.st_dev, fst.st_ino, copy, cur.offset, cur.head_len, cur.head)
                try:
                    total = await self._drain(tmp, final=True, stop=None, persist=False)
                finally:
                    os.close(fd)
                log.info(
                    "%s was copied and truncated; read %d rows past offset %d from the copy %s",
                    cur.path,
                    total,
                    cur.offset,
                    copy,
                )
        else:
            log.warning(
                "%s shrank or was rewritten below offset %d (copytruncate?); reading it from "
                "the start",
                cur.path,
                cur.offset,
            )
        cur.offset = 0
        cur.head_len = 0
        cur.head = ""
        cur.pending_since = None
        cur.pending_size = -1
        await self.store.set_position(self.name, self._pos_of(cur))
        return total

    def _waiting(self) -> None:
        self.state = "waiting_for_file"
        self.last_error = f"{self.path}: no such file (yet)"
        self._status(0)

    def _pos(self) -> dict[str, Any]:
        pos = self.position()
        assert pos is not None
        return pos

    async def _startup(self) -> None:
        self._started = True
        pos = await self.store.get_position(self.name)
        st = _stat(self.path)
        if pos is None:
            if st is None:
                return  # the file will appear later: read it from its start then
            offset = 0
            if self._start_mode == "latest":
                offset = await asyncio.to_thread(_end_of_last_line, self.path)
            self._open_path(offset)
            if self._cur is not None:
                log.info(
                    "reading %s from offset %d (START_FROM=%s)", self.path, offset, self._start_mode
                )
                await self.store.set_position(self.name, self._pos())
            return
        self._start_time = None  # a stored position wins over START_FROM
        dev, ino, offset = (
            int(pos.get("dev", -1)),
            int(pos.get("ino", -1)),
            int(pos.get("offset", 0)),
        )
        if st is not None and (st.st_dev, st.st_ino) == (dev, ino):
            self._open_path(offset, pos)
            if self._cur is not None and await asyncio.to_thread(self._truncated, self._cur):
                await self._truncation(self._cur)
            return
        # Rotated while we were down: find the old file by inode and drain it first.
        old = await asyncio.to_thread(_find_by_inode, os.path.dirname(self.path) or ".", dev, ino)
        if old is not None:
            fd = _open_ro(old)
            if fd is not None:
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) == (dev, ino):
                    cur = _Open(
                        fd,
                        dev,
                        ino,
                        old,
                        offset,
                        int(pos.get("head_len", 0)),
                        str(pos.get("head", "")),
                    )
                    self._cur = cur
                    if await asyncio.to_thread(self._truncated, cur):
                        cur.offset = 0
                    log.info("draining the rotated file %s from offset %d", old, cur.offset)
                    await self._drain(cur, final=True)
                    self.rotations["rename"] += 1
                    self.metrics.csv_rotations.labels(kind="rename").inc()
                else:
                    os.close(fd)
            self.close()
        else:
            self.rotations["lost"] += 1
            self.metrics.csv_rotations.labels(kind="lost").inc()
            log.warning(
                "the cel_custom file read before the restart (inode %d, offset %d) is gone; "
                "records written to it after that offset are lost",
                ino,
                offset,
            )
        if st is not None:
            self._open_path(0)
            if self._cur is not None:
                await self.store.set_position(self.name, self._pos())

    def _open_path(self, offset: int, pos: Mapping[str, Any] | None = None) -> None:
        fd = _open_ro(self.path)
        if fd is None:
            return
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            os.close(fd)
            raise OSError(f"CEL_CSV_PATH {self.path} is not a regular file; {_NOT_REGULAR}")
        cur = _Open(fd, fst.st_dev, fst.st_ino, self.path, offset)
        if pos is not None:
            cur.head_len = int(pos.get("head_len", 0))
            cur.head = str(pos.get("head", ""))
        self._cur = cur

    def _truncated(self, cur: _Open) -> bool:
        size = os.fstat(cur.fd).st_size
        if size < cur.offset:
            return True
        if cur.head_len:
            data = os.pread(cur.fd, cur.head_len, 0)
            if len(data) < cur.head_len or _head_digest(data) != cur.head:
                return True
        return False

    def _update_head(self, cur: _Open) -> None:
        if cur.head_len < HEAD_BYTES and cur.offset > cur.head_len:
            data = os.pread(cur.fd, min(HEAD_BYTES, cur.offset), 0)
            cur.head_len = len(data)
            cur.head = _head_digest(data)

    def _read_parse(self, cur: _Open, final: bool) -> tuple[ChunkResult, int, bool]:
        """Blocking part (run in a thread): read one chunk at the offset and parse it."""
        data = os.pread(cur.fd, self.chunk_size, cur.offset)
        at_eof = len(data) < self.chunk_size
        if not data:
            return ChunkResult(), 0, True
        stale = False
        if not final and at_eof:
            # An unfinished record at the end that does not change for stale_after seconds is
            # taken as final (a writer that died mid-record) rather than blocking forever.
            size = cur.offset + len(data)
            now = time.monotonic()
            if cur.pending_since is not None and cur.pending_size == size:
                stale = now - cur.pending_since >= self.stale_after
        prefix = f"{cur.dev}:{cur.ino}:"
        result = self.parser.parse_chunk(
            data, cur.offset, final=(final or stale) and at_eof, pos_prefix=prefix
        )
        if at_eof and not final:
            if cur.offset + result.consumed < cur.offset + len(data):
                size = cur.offset + len(data)
                if cur.pending_size != size:
                    cur.pending_since = time.monotonic()
                    cur.pending_size = size
            else:
                cur.pending_since = None
                cur.pending_size = -1
        return result, len(data), at_eof

    async def _drain(
        self,
        cur: _Open,
        *,
        final: bool,
        stop: asyncio.Event | None = None,
        persist: bool = True,
    ) -> int:
        total = 0
        while True:
            result, nread, at_eof = await asyncio.to_thread(self._read_parse, cur, final)
            if nread == 0 or result.consumed == 0:
                break
            rows = result.rows
            if self._start_time is not None and rows:
                t0 = self._start_time
                kept = [r for r in rows if r.eventtime >= t0]
                if len(kept) != len(rows):
                    self.metrics.rows_discarded.labels(reason="before_start_from").inc(
                        len(rows) - len(kept)
                    )
                rows = kept
            if result.quarantined:
                await asyncio.to_thread(
                    self.quarantine.add, result.quarantined, file=cur.path, dev=cur.dev, ino=cur.ino
                )
            if result.latin1_records:
                log.debug(
                    "%d cel_custom records were not UTF-8; decoded as latin-1",
                    result.latin1_records,
                )
            new_offset = cur.offset + result.consumed
            old_offset = cur.offset
            cur.offset = new_offset
            if cur.head_len < HEAD_BYTES and persist:
                await asyncio.to_thread(self._update_head, cur)
            try:
                positions = {self.name: self._pos_of(cur)} if persist else {}
                res = await self.store.ingest(rows, [], positions)
            except BaseException:
                cur.offset = old_offset
                raise
            newest = max((r.eventtime for r in rows), default=None)
            if newest is not None and (self._poll_written is None or newest > self._poll_written):
                self._poll_written = newest
            new = getattr(res, "new_cels", len(rows))
            if new:
                self.metrics.cels_processed.labels(source="csv").inc(new)
            newest = max((r.eventtime for r in rows), default=self._read_newest)
            if newest is not None and (self._read_newest is None or newest > self._read_newest):
                self._read_newest = newest
                if self._marks is not None:
                    self._marks.publish(self.name, newest=newest)
            self.rows_total += len(rows)
            total += len(rows)
            if at_eof or (stop is not None and stop.is_set()):
                break
        return total

    @staticmethod
    def _pos_of(cur: _Open) -> dict[str, Any]:
        return {
            "path": cur.path,
            "dev": cur.dev,
            "ino": cur.ino,
            "offset": cur.offset,
            "head_len": cur.head_len,
            "head": cur.head,
        }


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


_NOT_REGULAR = "point it at the Master.csv-style file cel_custom writes (not a FIFO or device)"


def _open_ro(path: str) -> int | None:
    """Open for reading; O_NONBLOCK so that a FIFO cannot block the event loop."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None


def _find_by_inode(directory: str, dev: int, ino: int) -> str | None:
    """The file in `directory` with this (device, inode): a renamed rotation of ours."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.inode() == ino and entry.stat(follow_symlinks=False).st_dev == dev:
                        return entry.path
                except OSError:
                    continue
    except OSError:
        return None
    return None


def _find_copy(
    path: str, head_len: int, head: str, min_size: int, exclude: tuple[int, int]
) -> str | None:
    """A copy of our file made by copytruncate: same first bytes, at least `min_size` long."""
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    best: tuple[float, str] | None = None
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if (
                    name == base
                    or not name.startswith(base)
                    or name.endswith((".gz", ".bz2", ".xz", ".zst"))
                ):
                    continue
                try:
                    st = entry.stat()
                    if (st.st_dev, st.st_ino) == exclude or not stat.S_ISREG(st.st_mode):
                        continue
                    if st.st_size < min_size:
                        continue
                    with open(entry.path, "rb") as fh:
                        if _head_digest(fh.read(head_len)) != head:
                            continue
                except OSError:
                    continue
                if best is None or st.st_mtime > best[0]:
                    best = (st.st_mtime, entry.path)
    except OSError:
        return None
    return best[1] if best else None


def _end_of_last_line(path: str) -> int:
    """Offset just after the last newline of the file (START_FROM=latest)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return 0  # refused with a clear error when it is opened
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            k = block.rfind(b"\n")
            if k >= 0:
                return pos + k + 1
        return 0


# --------------------------------------------------------------------------- check


async def check_csv(
    settings: CsvSettings,
    timezone: str = "UTC",
    *,
    sample_lines: int = 50,
    found: str = "configured",
) -> list[CheckResult]:
    """`sipstack-agent check` for CEL_MODE=csv (rules/checks.py). `found`: how
    the zone was found (zones.FOUND), named in the line about events in the future."""
    return await asyncio.to_thread(_check_csv_sync, settings, timezone, sample_lines, found)


def _check_csv_sync(
    settings: CsvSettings, timezone: str, sample_lines: int, found: str
) -> list[CheckResult]:
    out: list[CheckResult] = []
    path = settings.path
    try:
        parser = CelCsvParser(settings.columns or None, timezone)
    except (ValueError, KeyError) as exc:
        return [CheckResult.fail("cel_csv columns", str(exc), "fix CEL_CSV_COLUMNS")]
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            detail = f"{path} is not a regular file"
            return [CheckResult.fail("cel_csv file", detail, f"CEL_CSV_PATH: {_NOT_REGULAR}")]
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - 256 * 1024)
            fh.seek(start)
            data = fh.read()
        mtime = os.path.getmtime(path)
    except FileNotFoundError:
        return [
            CheckResult.fail(
                "cel_csv file",
                f"{path} does not exist",
                "enable cel_custom (cel_custom.conf [mappings]) and mount its directory; "
                "see docs/cel-sources.md",
            )
        ]
    except OSError as exc:
        return [
            CheckResult.fail("cel_csv file", f"{path}: {exc.strerror or exc}", "grant read access")
        ]
    age = max(0.0, time.time() - mtime)
    out.append(
        CheckResult.ok(
            "cel_csv file", f"{path} readable, {size} bytes, last written {age:.0f} s ago"
        )
    )
    if start > 0:
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    items = parser.parse_lines(data)[-sample_lines:]
    rows = [i for i in items if isinstance(i, CelRow)]
    bad = [i for i in items if isinstance(i, Quarantine)]
    if not items:
        out.append(CheckResult.warn("cel_csv recent lines", "file is empty (no CEL yet)"))
        return out
    ok = not bad or len(bad) * 10 <= len(items)
    detail = f"{len(rows)} of the last {len(items)} records parse"
    if bad:
        detail += f"; first problem: {bad[0].reason}"
    out.append(
        CheckResult(
            "cel_csv recent lines",
            Status.OK if rows and ok else Status.FAIL,
            detail,
            "" if ok and rows else "check the cel_custom.conf mapping and CEL_CSV_COLUMNS",
        )
    )
    colq = [q for q in bad if q.reason.startswith("expected")]
    counts = sorted({_count_columns(q.raw) for q in colq} - {0})
    out.append(
        CheckResult(
            "cel_csv column count",
            Status.FAIL if colq else Status.OK,
            f"{parser.ncols} columns expected"
            + (f"; lines have {', '.join(map(str, counts))}" if colq and counts else ""),
            ""
            if not colq
            else "the cel_custom.conf mapping and CEL_CSV_COLUMNS must list the same columns "
            "in the same order",
        )
    )
    if rows:
        ends = any(r.eventtype == "LINKEDID_END" for r in rows)
        out.append(
            CheckResult(
                "cel_csv linkedid_end",
                Status.OK if ends else Status.WARN,
                "LINKEDID_END events present"
                if ends
                else f"no LINKEDID_END in the last {len(rows)} events: calls complete after "
                "CALL_IDLE_TIMEOUT instead",
                "" if ends else "add LINKEDID_END to events= in cel.conf (not in the stock list)",
            )
        )
        newest = max(r.eventtime for r in rows)
        zone = PbxZone(parser.times.timezone, found)
        skew = judge(zone, newest, datetime.now(UTC), live=False, max_age=float("inf"))
        if skew is not None:
            detail, _, fix = skew_advice(zone, skew).partition("; set ")
            out.append(CheckResult.fail("cel_csv timezone", detail, f"set {fix}" if fix else ""))
    return out


def _count_columns(raw: bytes) -> int:
    try:
        return len(next(csv.reader([raw.decode("latin-1")])))
    except (csv.Error, StopIteration):
        return 0
