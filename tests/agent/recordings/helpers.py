"""Helpers of the recordings tests: the real fixture call, a clock, the recording
worker as the agent wires it, metric samples."""

from __future__ import annotations

import csv
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipstack_agent.config import ApiSettings, Identity, RecordingSettings, load_settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.recordings import ConfinedFiles
from sipstack_agent.scratchdb import asterisk_sample_dir
from sipstack_agent.shipping import RecordingShipper, Transport
from sipstack_agent.state import StateStore

FIXTURES = asterisk_sample_dir()
REAL_WAV = FIXTURES / "recordings" / "in-4155551000-4085551234-20261124-043920-1795495160.0.wav"
CALL_A = "1795495160.0"


def api_settings(key: str, **env: str) -> ApiSettings:
    """The API settings config computes (URLs included) for these variables."""
    base = {"API_KEY": key, "DB_TYPE": "postgresql", "DB_NAME": "asterisk"}
    return load_settings({**base, **env}).api


def recording_shipper(
    store: StateStore,
    transport: Transport,
    settings: RecordingSettings,
    api: ApiSettings,
    identity: Identity,
    metrics: Metrics,
    **kw: Any,
) -> RecordingShipper:
    """The outbox's recording worker as the agent wires it (files confined to the paths)."""
    files = ConfinedFiles(settings.paths)
    return RecordingShipper(store, transport, settings, api, identity, metrics, files=files, **kw)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fixture_cels(linkedid: str = CALL_A) -> list[CelRow]:
    """The real CEL rows of one call from the PostgreSQL export."""
    out: list[CelRow] = []
    with (FIXTURES / "postgres" / "cel.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["linkedid"] != linkedid:
                continue
            out.append(
                CelRow(
                    eventtype=r["eventtype"],
                    eventtime=_ts(r["eventtime"]),
                    uniqueid=r["uniqueid"],
                    linkedid=r["linkedid"],
                    channame=r["channame"],
                    cid_num=r["cid_num"],
                    exten=r["exten"],
                    context=r["context"],
                    appname=r["appname"],
                    appdata=r["appdata"],
                    row_id=int(r["id"]),
                )
            )
    return out


def fixture_cdrs(linkedid: str = CALL_A, recordingfile: str = "") -> list[CdrRow]:
    out: list[CdrRow] = []
    with (FIXTURES / "postgres" / "cdr.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["linkedid"] != linkedid:
                continue
            out.append(
                CdrRow(
                    calldate=_ts(r["calldate"]),
                    uniqueid=r["uniqueid"],
                    linkedid=r["linkedid"],
                    src=r["src"],
                    dst=r["dst"],
                    channel=r["channel"],
                    duration=int(r["duration"]),
                    billsec=int(r["billsec"]),
                    disposition=r["disposition"],
                    extras=(("recordingfile", recordingfile),) if recordingfile else (),
                    row_id=int(r["id"]),
                )
            )
    return out


def copy_real_wav(dest_dir: Path, name: str | None = None) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / (name or REAL_WAV.name)
    shutil.copyfile(REAL_WAV, dest)
    return dest


class FakeClock:
    """Wall-clock seconds that only move when told (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value
