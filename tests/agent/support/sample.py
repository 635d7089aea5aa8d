"""The real Asterisk 20 sample (../shared/fixtures/asterisk20-sample): CSV dicts and
the CelRow / CdrRow a reader must produce from them (Asterisk wrote UTC)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow
from sipstack_agent.scratchdb import asterisk_sample_dir, read_sample_csv

SAMPLE_DIR = asterisk_sample_dir()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def sample_cel_rows(flavor: str = "postgres") -> list[CelRow]:
    out = []
    for d in read_sample_csv(flavor, "cel"):
        kw: dict[str, Any] = {c: d[c] for c in CEL_COLUMNS if c != "eventtime"}
        out.append(CelRow(eventtime=_utc(d["eventtime"]), row_id=int(d["id"]), source="db", **kw))
    return out


def sample_cdr_rows(flavor: str = "postgres") -> list[CdrRow]:
    out = []
    for d in read_sample_csv(flavor, "cdr"):
        kw: dict[str, Any] = {c: d[c] for c in CDR_COLUMNS if c != "calldate"}
        for c in ("duration", "billsec"):
            kw[c] = int(kw[c] or 0)
        kw["sequence"] = int(kw["sequence"]) if kw["sequence"] != "" else None
        out.append(CdrRow(calldate=_utc(d["calldate"]), row_id=int(d["id"]), source="db", **kw))
    return out


@dataclass(frozen=True)
class AsteriskSample:
    dir: Path = SAMPLE_DIR
    read_csv: Callable[[str, str], list[dict[str, str]]] = read_sample_csv
    cel_rows: Callable[[str], list[CelRow]] = sample_cel_rows
    cdr_rows: Callable[[str], list[CdrRow]] = sample_cdr_rows
