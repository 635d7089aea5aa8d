"""Load the real Asterisk 20 sample rows (shared/fixtures/asterisk20-sample) as model rows."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sipstack_agent.model import CEL_COLUMNS, CdrRow, CelRow

FIXTURE_DIR = Path(__file__).resolve().parents[3].parent / "shared/fixtures/asterisk20-sample"
if not FIXTURE_DIR.exists():  # running from another checkout location
    FIXTURE_DIR = Path("/work/shared/fixtures/asterisk20-sample")

CALL_A = "1795495160.0"
CALL_C = "1795495196.4"
CALL_D = "1795495211.6"
CALL_E = "1795495228.8"
CALL_G = "1795495237.12"


def parse_time(text: str) -> datetime:
    """Asterisk wrote UTC; postgres has microseconds, mariadb whole seconds."""
    text = text.strip()
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def _int(text: str) -> int | None:
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def load_cel(flavour: str) -> list[CelRow]:
    """CEL rows of postgres/ or mariadb/ (with ids) or csv/ (cel_custom, no ids)."""
    if flavour == "csv":
        path = FIXTURE_DIR / "csv" / "cel_custom_Master.csv"
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [dict(zip(CEL_COLUMNS, r, strict=True)) for r in csv.reader(fh)]
    else:
        path = FIXTURE_DIR / flavour / "cel.csv"
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        out.append(
            CelRow(
                eventtype=r["eventtype"],
                eventtime=parse_time(r["eventtime"]),
                uniqueid=r["uniqueid"],
                linkedid=r["linkedid"],
                **{
                    k: r.get(k) or ""
                    for k in CEL_COLUMNS
                    if k not in ("eventtype", "eventtime", "uniqueid", "linkedid")
                },
                row_id=_int(r.get("id", "")),
                source="csv" if flavour == "csv" else "db",
            )
        )
    if flavour != "csv":
        out.sort(key=lambda c: c.row_id or 0)
    return out


def load_cdr(flavour: str) -> list[CdrRow]:
    path = FIXTURE_DIR / flavour / "cdr.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        out.append(
            CdrRow(
                calldate=parse_time(r["calldate"]),
                uniqueid=r["uniqueid"],
                linkedid=r["linkedid"],
                clid=r["clid"],
                src=r["src"],
                dst=r["dst"],
                dcontext=r["dcontext"],
                channel=r["channel"],
                dstchannel=r["dstchannel"],
                lastapp=r["lastapp"],
                lastdata=r["lastdata"],
                duration=_int(r["duration"]) or 0,
                billsec=_int(r["billsec"]) or 0,
                disposition=r["disposition"],
                amaflags=r["amaflags"],
                accountcode=r["accountcode"],
                userfield=r["userfield"],
                sequence=_int(r["sequence"]),
                peeraccount=r["peeraccount"],
                row_id=_int(r["id"]),
            )
        )
    return sorted(out, key=lambda c: c.row_id or 0)


def rows_of(rows: Iterable[CelRow | CdrRow], linkedids: Iterable[str]) -> list[CelRow | CdrRow]:
    wanted = set(linkedids)
    return [r for r in rows if r.call_linkedid in wanted]
