"""cel_custom bytes -> `CelRow`s and `Quarantine` records (pure: no I/O).

`CelCsvParser.parse_chunk(data, offset, final)` turns raw bytes of the file
into rows and quarantined records and says how many bytes were consumed (only
whole records; a half-written last record waits). Values quoted with
CSV_QUOTE may hold commas, doubled quotes and newlines; cel_custom lines
written as JSON objects are accepted too. Times are PBX-local (or epoch) and
become aware UTC datetimes. Bytes that are not UTF-8 are decoded as latin-1
for that record (every byte kept, never a crash, and the text stays encodable
for the state store and the JSON documents).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from ...model import CEL_COLUMNS, CelRow
from ..celtime import TimeParser
from .fileformat import (
    JSON_ALIASES,
    MAX_RECORD_BYTES,
    MAX_RECORD_LINES,
    QUARANTINE_RAW_MAX,
    ROW_ORDER,
    resolve_columns,
)

__all__ = ["CelCsvParser", "ChunkResult", "Quarantine"]

_CEL_FIELDS = frozenset(CEL_COLUMNS)


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
        self._get = itemgetter(*(index.get(name, blank) for name in ROW_ORDER))
        self._json_get = _DictGetter(ROW_ORDER)

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
            key = JSON_ALIASES.get(key, key)
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
