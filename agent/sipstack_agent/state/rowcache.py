"""The write-through cache: the stored rows of recent linkedids kept in memory, so
`load_calls` need not read back (and decode) rows it has just stored.

The store stays the truth: rows are still committed with their positions, and the
cache only ever holds a linkedid's *complete* set of stored rows (with their `seq`),
so a hit returns exactly what the SQLite read would. It is touched only in the
connection's thread, in the order of the store's transactions:

- an ingest adds rows after its COMMIT (a rolled-back one leaves it untouched), for
  linkedids it holds, or that were new to the store in that transaction (no row of
  them stored before);
- a load that missed fills the linkedid from what it read;
- prune drops the linkedids it deletes; merges change only `links` (the cache is
  keyed by the rows' own linkedid, so it is unaffected);
- bounded: past `cap` rows the least recently used linkedids are evicted (a later
  load reads them from the store again). A restart starts empty.

An ingested row whose time is not in `UTC` drops its linkedid (its read-back differs
in `tzinfo`, not in value); a load then fills it from the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC

from ..model import CdrRow, CelRow

ROW_CACHE_ROWS = 10_000  # about 10 MB (1-1.4 KB a row): the last two 5 000-row pages


@dataclass(slots=True)
class _Entry:
    cels: list[tuple[int, CelRow]] = field(default_factory=list)
    cdrs: list[tuple[int, CdrRow]] = field(default_factory=list)


@dataclass(slots=True)
class RowCacheStats:
    linkedids: int
    rows: int
    cap: int
    hits: int
    misses: int
    evicted: int


class RowCache:
    def __init__(self, cap: int = ROW_CACHE_ROWS) -> None:
        self.cap = cap
        self._by_lid: OrderedDict[str, _Entry] = OrderedDict()
        self.rows = 0
        self.hits = self.misses = self.evicted = 0

    def stats(self) -> RowCacheStats:
        return RowCacheStats(
            len(self._by_lid), self.rows, self.cap, self.hits, self.misses, self.evicted
        )

    def get(self, lid: str) -> _Entry | None:
        e = self._by_lid.get(lid)
        if e is None:
            self.misses += 1
            return None
        self.hits += 1
        self._by_lid.move_to_end(lid)
        return e

    def fill(
        self, lid: str, cels: list[tuple[int, CelRow]], cdrs: list[tuple[int, CdrRow]]
    ) -> None:
        """All the stored rows of `lid`, as a load just read them (sorted by seq)."""
        if self.cap <= 0:
            return
        self.drop((lid,))
        self._by_lid[lid] = _Entry(cels, cdrs)
        self.rows += len(cels) + len(cdrs)
        self._evict()

    def committed(
        self,
        new_lids: set[str],
        cels: Iterable[tuple[int, CelRow]],
        cdrs: Iterable[tuple[int, CdrRow]],
    ) -> None:
        """An ingest committed these (seq, row) pairs; `new_lids` had no stored row before."""
        if self.cap <= 0:
            return
        by = self._by_lid
        for lid in new_lids:
            by.setdefault(lid, _Entry())
        touched: set[str] = set()
        spoilt: set[str] = set()
        for seq, c in cels:
            lid = c.call_linkedid
            e = by.get(lid)
            if e is not None:
                if c.eventtime.tzinfo is not UTC or (e.cels and e.cels[-1][0] >= seq):
                    spoilt.add(lid)
                e.cels.append((seq, c))
                self.rows += 1
                touched.add(lid)
        for seq, d in cdrs:
            lid = d.call_linkedid
            e = by.get(lid)
            if e is not None:
                if d.calldate.tzinfo is not UTC or (e.cdrs and e.cdrs[-1][0] >= seq):
                    spoilt.add(lid)
                e.cdrs.append((seq, d))
                self.rows += 1
                touched.add(lid)
        for lid in touched:
            by.move_to_end(lid)
        self.drop(spoilt)
        self._evict()

    def drop(self, lids: Iterable[str]) -> None:
        for lid in lids:
            e = self._by_lid.pop(lid, None)
            if e is not None:
                self.rows -= len(e.cels) + len(e.cdrs)

    def clear(self) -> None:
        self._by_lid.clear()
        self.rows = 0

    def _evict(self) -> None:
        by = self._by_lid
        while self.rows > self.cap and by:
            _, e = by.popitem(last=False)
            self.rows -= len(e.cels) + len(e.cdrs)
            self.evicted += 1
