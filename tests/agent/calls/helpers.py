"""Builders for hand-written CEL/CDR sequences and a schema validator."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from sipstack_agent.calls import CALL_DOCUMENT_SCHEMA
from sipstack_agent.config import CallSettings, DirectionSettings, Identity
from sipstack_agent.model import CdrRow, CelRow

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
IDENTITY = Identity(customer_id=7, hostname="pbx1", connector_id="pbx1-agent", version="0.14.0")
SETTINGS = CallSettings(direction=DirectionSettings(default_country_code="1"))

VALIDATOR = jsonschema.Draft202012Validator(
    CALL_DOCUMENT_SCHEMA, format_checker=jsonschema.FormatChecker()
)


def validate(doc: dict[str, Any]) -> None:
    VALIDATOR.validate(doc)


class Seq:
    """Writes CEL rows like Asterisk: increasing ids, times as offsets from T0."""

    def __init__(self, start_id: int = 1, t0: datetime = T0) -> None:
        self._ids = itertools.count(start_id)
        self.t0 = t0
        self.rows: list[CelRow] = []
        self.cdrs: list[CdrRow] = []

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    def cel(
        self,
        t: float,
        eventtype: str,
        chan: str,
        uniqueid: str,
        linkedid: str,
        **kw: Any,
    ) -> CelRow:
        row = CelRow(
            eventtype=eventtype,
            eventtime=self.at(t),
            uniqueid=uniqueid,
            linkedid=linkedid,
            channame=chan,
            row_id=next(self._ids),
            **kw,
        )
        self.rows.append(row)
        return row

    def cdr(self, t: float, uniqueid: str, linkedid: str, **kw: Any) -> CdrRow:
        row = CdrRow(
            calldate=self.at(t), uniqueid=uniqueid, linkedid=linkedid, row_id=next(self._ids), **kw
        )
        self.cdrs.append(row)
        return row


def thread_times(doc: dict[str, Any]) -> list[str]:
    return [item["time"] for item in doc["call_threads"]]


def sorted_by_time(items: Sequence[dict[str, Any]]) -> bool:
    times = [datetime.fromisoformat(i["time"]) for i in items]
    return all(a <= b for a, b in itertools.pairwise(times))
