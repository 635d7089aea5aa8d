"""What every source needs of the state store: rows and positions in one commit.

`state.StateStore` satisfies it; the agent hands the sources a sink that adds
the full-disk backpressure and the evaluator's wake-up (app._SourceSink).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..model import CdrRow, CelRow
from ..state import IngestResult
from .tail import PositionStore

__all__ = ["PositionStore", "SourceStore"]


class SourceStore(PositionStore, Protocol):
    async def ingest(
        self,
        cels: Sequence[CelRow] = ...,
        cdrs: Sequence[CdrRow] = ...,
        positions: Mapping[str, Mapping[str, Any]] | None = ...,
    ) -> IngestResult: ...
