"""CEL from cel_custom's CSV file (CEL_MODE=csv), one module per job.

* `fileformat` - what cel_custom writes: the column order (`resolve_columns`), JSON
  aliases, the record bounds.
* `parser` - pure: `CelCsvParser.parse_chunk(data, offset, final)`: bytes -> `CelRow`s and
  `Quarantine` records, and how many bytes of whole records were consumed (a
  half-written last record waits). Quoted values may hold commas, doubled quotes and
  newlines; JSON lines are accepted; times become aware UTC (`sources.celtime`);
  non-UTF-8 records are decoded as latin-1.
* `quarantine` - malformed records: JSONL under STATE_DIR/quarantine/ (bounded, one
  rotation), a metric, one log line per reason; never stops the stream.
* `source` - `CelCsvSource(settings, store, metrics, timezone)`: the consumer of the
  CEL-agnostic `sources.tail.Tailer` (device, inode, offset and fingerprint of the
  first bytes committed with the rows in one `store.ingest`; rename-and-create and
  copytruncate rotations, restarts, FIFOs refused, bounded chunks).
* `check` - `check_csv`, the `sipstack-agent check` lines of this feed.

Identity of a row: each carries `source_pos = "dev:inode:offset"` of its record, which
is part of `CelRow.dedup_key`, so two identical events in the same microsecond stay
two rows while a re-read of the same record is still de-duplicated.
"""

from .check import check_csv
from .fileformat import MAX_RECORD_BYTES, resolve_columns
from .parser import CelCsvParser, Quarantine
from .source import CelCsvSource

__all__ = [
    "MAX_RECORD_BYTES",
    "CelCsvParser",
    "CelCsvSource",
    "Quarantine",
    "check_csv",
    "resolve_columns",
]
