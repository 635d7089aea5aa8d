"""The recordings stage's calls: which call a recording file belongs to.

The single home of that mapping. The evaluator tells the recordings stage
about every call it evaluates (`RecordingManager.on_call`, with the rows it
just loaded); `KnownCalls` keeps, per call key, the linkedids and uniqueids of
those rows, the file candidates its rows name and nobody found yet (`Hint`s),
the fields of the upload form and its completion. Files that appear later are
matched against these ids on every pass (file names, the recordings table)
without a round trip to the state store; the store stays the durable truth
(rows, links, `recordings` of each call) and what it holds comes back with the
next evaluation.

Bounded: a call is forgotten once it is complete and its recordings are
stored, after RECORDING_KNOWN_CALL_WINDOW, or, beyond
RECORDING_KNOWN_CALL_MAX calls, the least recently evaluated first (a backlog
evaluates calls much faster than the window's wall-clock time passes).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sipstack_agent.model import CdrRow, CelRow, RecordingFile
from sipstack_agent.recordings.detect import Hint

log = logging.getLogger("sipstack_agent.recordings")

IDLE_FORGET_SECONDS = 6 * 3600.0  # a call not evaluated again for this long (at least)


@dataclass(slots=True)
class KnownCall:
    """One call as the recordings stage knows it (from its last evaluations)."""

    call_key: str
    linkedids: set[str] = field(default_factory=set)
    uniqueids: set[str] = field(default_factory=set)
    complete: bool = False
    seen_at: float = 0.0
    completed_at: float | None = None
    started_at: datetime | None = None
    info: dict[str, Any] = field(default_factory=dict)  # fields for the upload form
    hints: list[Hint] = field(default_factory=list)  # candidates not found yet

    @property
    def ids(self) -> set[str]:
        return self.linkedids | self.uniqueids

    def add_hints(self, hints: Iterable[Hint]) -> None:
        """Candidates not known yet (the same source naming the same files once)."""
        known = {(h.source, h.candidates) for h in self.hints}
        for h in hints:
            if (h.source, h.candidates) not in known:
                self.hints.append(h)
                known.add((h.source, h.candidates))


def call_info_from(document: Mapping[str, Any] | None, cdrs: Sequence[CdrRow]) -> dict[str, Any]:
    """Fields of the upload form from the call's latest document, else its CDR rows."""
    info: dict[str, Any] = {}
    if document:
        info = {
            "src_number": document.get("src_number", ""),
            "dst_number": document.get("dst_number", ""),
            "direction": document.get("direction", ""),
            "duration": document.get("duration_seconds", 0),
            "start_time": document.get("call_time", ""),
            "tenant_name": document.get("tenant", ""),
        }
    elif cdrs:
        first = min(cdrs, key=lambda r: (r.calldate, r.row_id or 0))
        info = {
            "src_number": first.src,
            "dst_number": first.dst,
            "direction": "",
            "duration": max(r.duration for r in cdrs),
            "start_time": first.calldate.astimezone(UTC).isoformat(),
            "tenant_name": "",
        }
    return info


class KnownCalls:
    """Call key -> `KnownCall`, least recently evaluated first, and the real paths
    already stored on each call (`stored`), so a file is handed on once."""

    def __init__(self, max_calls: int, window: float, clock: Callable[[], float]) -> None:
        self.max_calls = max(1, max_calls)
        self.window = window
        self.clock = clock
        self._calls: OrderedDict[str, KnownCall] = OrderedDict()
        self.stored: dict[str, str] = {}  # real path -> call key (stored on the call)

    def __contains__(self, call_key: object) -> bool:
        return call_key in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[KnownCall]:
        return iter(self._calls.values())

    def get(self, call_key: str) -> KnownCall | None:
        return self._calls.get(call_key)

    def see(
        self,
        call_key: str,
        cels: Sequence[CelRow],
        cdrs: Sequence[CdrRow],
        recordings: Sequence[RecordingFile],
        *,
        complete: bool,
        document: Mapping[str, Any] | None,
    ) -> KnownCall:
        """Take in one evaluation of the call: its rows' ids, start, upload fields,
        completion and the recordings the store already has for it; known calls the
        store merged into it since are folded in (`_merge_into`)."""
        now = self.clock()
        kc = self._calls.get(call_key)
        if kc is None:
            kc = self._calls[call_key] = KnownCall(call_key)
        else:
            self._calls.move_to_end(call_key)
        kc.seen_at = now
        if complete and not kc.complete:
            kc.completed_at = now
        kc.complete = complete
        rows: list[CelRow | CdrRow] = [*cels, *cdrs]
        for row in rows:
            kc.linkedids.add(row.call_linkedid)
            if row.uniqueid:
                kc.uniqueids.add(row.uniqueid)
        kc.linkedids.add(call_key)
        self._merge_into(kc)
        starts = [r.eventtime for r in cels] + [c.calldate for c in cdrs]
        if starts:
            kc.started_at = min(starts)
        if document or not kc.info:  # a document's fields win over the CDR fallback
            info = call_info_from(document, cdrs)
            if info:
                kc.info = info
        for rec in recordings:
            self.stored[rec.file_path] = call_key  # stored paths are real paths already
        return kc

    def _merge_into(self, kc: KnownCall) -> None:
        """Known calls whose key is now one of `kc`'s linkedids were merged into it by
        the store (its links): their ids, hints and stored files move to `kc`."""
        merged = [k for k in kc.linkedids if k != kc.call_key and k in self._calls]
        for key in merged:
            old = self._calls.pop(key)
            kc.linkedids |= old.linkedids
            kc.uniqueids |= old.uniqueids
            kc.add_hints(old.hints)
            for path, owner in self.stored.items():
                if owner == key:
                    self.stored[path] = kc.call_key

    def owners(self) -> dict[str, str]:
        """linkedid / uniqueid -> call key (the least recently evaluated call first)."""
        out: dict[str, str] = {}
        for kc in self._calls.values():
            for i in kc.ids:
                out.setdefault(i, kc.call_key)
        return out

    def ids(self) -> tuple[list[str], list[str]]:
        """Every known call's linkedids and uniqueids (the recordings table's query)."""
        lids: list[str] = []
        uids: list[str] = []
        for kc in self._calls.values():
            lids.extend(sorted(kc.linkedids))
            uids.extend(sorted(kc.uniqueids))
        return lids, uids

    def forget(self, keys: Iterable[str]) -> None:
        """Drop calls and the stored-file entries that were theirs."""
        gone = {k for k in keys if self._calls.pop(k, None) is not None}
        if gone:
            for p in [p for p, k in self.stored.items() if k in gone]:
                del self.stored[p]

    def evict(self) -> None:
        """Beyond RECORDING_KNOWN_CALL_MAX: forget the least recently evaluated calls
        (down to 90 % of the cap, so the sweep over `stored` is not paid per call)."""
        if len(self._calls) <= self.max_calls:
            return
        target = self.max_calls - self.max_calls // 10
        excess = len(self._calls) - target
        oldest = [k for k, _ in zip(self._calls, range(excess), strict=False)]
        self.forget(oldest)
        log.debug("recordings: %d calls known, forgot the %d least recent", target, len(oldest))

    def expire(self) -> None:
        """Forget calls complete for longer than RECORDING_KNOWN_CALL_WINDOW, and calls
        not evaluated again for longer than that window (at least IDLE_FORGET_SECONDS)."""
        now = self.clock()
        idle = max(self.window, IDLE_FORGET_SECONDS)
        expired = []
        for key, kc in self._calls.items():
            ref = kc.completed_at if kc.complete and kc.completed_at else None
            if (ref is not None and now - ref > self.window) or now - kc.seen_at > idle:
                expired.append(key)
        self.forget(expired)
