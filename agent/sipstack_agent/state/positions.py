"""The sources' read positions (checkpoints): one JSON object per name."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from .base import StoreBase
from .codec import dumps, loads_object, now_ts

Positions = Mapping[str, Mapping[str, Any]]


def set_positions(conn: sqlite3.Connection, positions: Positions, now: float) -> None:
    if positions:
        conn.executemany(
            "INSERT INTO positions (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            [(n, dumps(dict(v)), now) for n, v in positions.items()],
        )


class PositionMethods(StoreBase):
    async def get_position(self, name: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda c: c.execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else loads_object(row[0])

    async def set_position(self, name: str, value: Mapping[str, Any]) -> None:
        await self._tx(set_positions, {name: value}, now_ts())

    async def positions(self) -> dict[str, dict[str, Any]]:
        rows = await self._run(lambda c: c.execute("SELECT name, value FROM positions").fetchall())
        return {n: loads_object(v) for n, v in rows}
