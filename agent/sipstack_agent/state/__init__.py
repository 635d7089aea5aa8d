"""The agent's local state store: one SQLite file (WAL) under STATE_DIR.

It holds the rows copied from the PBX (CEL and CDR, de-duplicated by
`row.dedup_key`), the call groups (linkedid -> call key, merged when a
uniqueid shows up under two linkedids), per-call evaluation state (dirty
flag, timer, ship state, closed), the source read positions, the outbox of
documents to deliver, dead letters, the recordings tied to calls and the
recording files still being watched for stability (`recording_watch`).

Every public method is one SQLite transaction run in aiosqlite's connection
thread (one thread hop per call, not per statement), so a source's rows and
its position, or a call's documents and its ship state, move together.

Durability: WAL with `synchronous=NORMAL`. A transaction is written to the
WAL file (write(2), in the OS page cache) before COMMIT returns, so a killed
process (kill -9, OOM, crash) loses nothing that a method has returned for;
that is the guarantee the pipeline relies on. Only an OS crash or power loss
can roll back the last few commits, and then atomically: rows and positions
roll back together (the source re-reads them from the PBX), documents roll
back with the ship state and dirty flag of their call (they are re-derived),
and a delivered mark that rolls back only causes a re-send that the API drops
by Idempotency-Key. FULL would fsync every commit (one per evaluated call),
which costs the >= 1000 calls/s target for no gain against kill -9; it is
chosen with `StateStore.open(path, synchronous="FULL")` (STATE_SYNCHRONOUS,
the default for the AMI source, whose events cannot be read again).

Faults: a full filesystem raises `StateDiskFull` (the transaction rolled back,
nothing half-stored), and so, as `StateDiskLow`, does a write that grows the store
(rows, documents) while the room left is below the reserve kept for delivering
(room.py, `open(..., min_free_mb=)`); a file failing `PRAGMA quick_check` at open raises
`StateCorrupt`, or is quarantined with `open(..., quarantine_corrupt=True)`; the
fresh store then issues revisions above a floor above any the old file issued
(floor.py: never an Idempotency-Key the API may hold with other content).
A page found corrupt later, while the store is in use, raises `StateCorruptExit` (a
SystemExit: the process stops with exit code 1 instead of restarting a stage against
the broken file) and leaves `state.db.corrupt` so the next open quarantines the file.
`prune` leaves tombstones (row digests + ship state per linkedid) so a re-read
of a delivered call is a duplicate. statefaults.py is what the agent does.

The package, one file per concern behind the `StateStore` facade (store.py):
base (connection, open/close, one thread hop, one transaction), schema (layout and
migrations), codec (values <-> columns), positions, ingest, grouping (call groups
and merges), recordings, calls (due, load, save evaluations), outbox, deadletters,
tombstones, prune, stats, watch (the watched recording files), floor (the revision
floor of a rebuilt store); values (the types handed out) and errors.
"""

from .codec import stored_cel
from .errors import StateCorrupt, StateCorruptExit, StateDiskFull, StateDiskLow, StoreError
from .room import Need
from .schema import SCHEMA_VERSION
from .store import StateStore
from .values import (
    AGE_BUCKETS,
    CallRecord,
    Deferral,
    EvaluationLike,
    IngestResult,
    OutboxItem,
    PruneResult,
    StoreStats,
    age_bucket,
)

__all__ = [
    "AGE_BUCKETS",
    "SCHEMA_VERSION",
    "CallRecord",
    "Deferral",
    "EvaluationLike",
    "IngestResult",
    "Need",
    "OutboxItem",
    "PruneResult",
    "StateCorrupt",
    "StateCorruptExit",
    "StateDiskFull",
    "StateDiskLow",
    "StateStore",
    "StoreError",
    "StoreStats",
    "age_bucket",
    "stored_cel",
]
