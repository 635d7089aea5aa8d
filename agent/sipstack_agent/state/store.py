"""The facade: one `StateStore` with the methods of every concern of the store."""

from __future__ import annotations

from .calls import CallMethods
from .deadletters import DeadLetterMethods
from .ingest import IngestMethods
from .outbox import OutboxMethods
from .positions import PositionMethods
from .prune import PruneMethods
from .recordings import RecordingMethods
from .stats import StatsMethods


class StateStore(
    PositionMethods,
    IngestMethods,
    RecordingMethods,
    CallMethods,
    OutboxMethods,
    DeadLetterMethods,
    StatsMethods,
    PruneMethods,
):
    """See the package docstring. Create with `await StateStore.open(path)`."""
