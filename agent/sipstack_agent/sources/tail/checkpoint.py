"""Checkpoint: how far which file was read, as the state store keeps it.

A checkpoint is the file's identity (path, device, inode, fingerprint of its
first bytes) and the offset just after the last record handed on. It is
written in the same store transaction as the rows read up to it (the
consumer passes `Checkpoints.with_rows(f)` to `ingest`), so a kill -9 never
leaves rows without their offset or an offset past rows that were not stored.
Only moments without rows (a file opened, a rotation followed) write it alone.
The stored shape is a JSON object:
`{"path", "dev", "ino", "offset", "head_len", "head"}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .identity import FileId, Head
from .reader import OpenFile

__all__ = ["Checkpoint", "Checkpoints", "Position", "PositionStore"]

Position = dict[str, str | int]


class PositionStore(Protocol):
    """The read-position part of `state.StateStore`."""

    async def get_position(self, name: str) -> dict[str, Any] | None: ...

    async def set_position(self, name: str, value: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    path: str
    id: FileId
    offset: int
    head: Head

    @classmethod
    def of(cls, f: OpenFile) -> Checkpoint:
        return cls(f.path, f.id, f.offset, f.head)

    @classmethod
    def from_position(cls, pos: Mapping[str, object]) -> Checkpoint:
        def num(key: str, default: int) -> int:
            value = pos.get(key, default)
            return int(value) if isinstance(value, int | str | float) else default

        return cls(
            str(pos.get("path", "")),
            FileId(num("dev", -1), num("ino", -1)),
            num("offset", 0),
            Head(num("head_len", 0), str(pos.get("head", ""))),
        )

    def to_position(self) -> Position:
        return {
            "path": self.path,
            "dev": self.id.dev,
            "ino": self.id.ino,
            "offset": self.offset,
            "head_len": self.head.length,
            "head": self.head.digest,
        }


class Checkpoints:
    """The checkpoint of one tailed file, stored under `name` in the state store."""

    def __init__(self, store: PositionStore, name: str) -> None:
        self.store = store
        self.name = name

    async def load(self) -> Checkpoint | None:
        pos = await self.store.get_position(self.name)
        return None if pos is None else Checkpoint.from_position(pos)

    async def save(self, f: OpenFile) -> None:
        """The checkpoint alone (no rows come with it: a file opened, a rotation)."""
        await self.store.set_position(self.name, Checkpoint.of(f).to_position())

    def with_rows(self, f: OpenFile) -> dict[str, Position]:
        """The `positions` argument of `ingest`, committed with the rows read up to `f.offset`."""
        return {self.name: Checkpoint.of(f).to_position()}
