"""A file tailer that knows nothing about CEL: identity, reading and checkpoint kept apart.

* `identity` - which file is this: (device, inode), and a fingerprint of its first bytes;
  finding a renamed file or a copytruncate copy again.
* `reader` - bounded chunks from an offset; an unfinished tail waits (or goes stale).
* `checkpoint` - (identity, offset) as the state store keeps it, committed with the rows.
* `tailer` - `Tailer`: follows one path across rename and copytruncate rotations and
  restarts, handing chunks to a `TailConsumer` (sources/cel_csv/ is the one we have).
"""

from .checkpoint import Checkpoint, Checkpoints, Position, PositionStore
from .identity import FileId
from .reader import Chunk, OpenFile
from .tailer import RotationKind, StartAt, TailConsumer, Tailer

__all__ = [
    "Checkpoint",
    "Checkpoints",
    "Chunk",
    "FileId",
    "OpenFile",
    "Position",
    "PositionStore",
    "RotationKind",
    "StartAt",
    "TailConsumer",
    "Tailer",
]
