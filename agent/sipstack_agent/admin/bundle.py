"""`sipstack-agent support-bundle`: one tar.gz for a support ticket.

Members: `config.json` (the parsed configuration; secret fields, those the
settings dataclasses keep out of their repr, replaced), `status.json` and
`status.txt` (`sipstack-agent status`), `check.txt` (`sipstack-agent check`),
`versions.txt`, `log.txt` (the last lines of the log given with `--log`). Every
member goes through the logging safety nets (logs.redact_keys, logs.mask_numbers)
and any literal secret value is cut out, so no secret and no phone number leaves
the host in it."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import platform
import sqlite3
import sys
import tarfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from typing import TextIO

from .. import __version__
from ..config import Settings
from ..logs import mask_numbers, redact_keys
from ..state import SCHEMA_VERSION
from .statuscmd import gather, status_target
from .summary import render

REDACTED = "<redacted>"
PACKAGES = ("aiohttp", "aiosqlite", "asyncpg", "aiomysql", "prometheus-client", "panoramisk")


def _secrets(obj: object) -> Iterator[str]:
    """Values of the fields kept out of the settings' repr (API key, passwords)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if not f.repr and isinstance(v, str) and v:
            yield v
        else:
            yield from _secrets(v)


def _redacted_tree(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: (REDACTED if getattr(obj, f.name) else "")
            if not f.repr
            else _redacted_tree(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, dict):
        return {str(k): _redacted_tree(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_redacted_tree(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


class Cleaner:
    """Redacts the configured secrets, anything like an API key, and phone numbers."""

    def __init__(self, settings: Settings | None) -> None:
        found = set(_secrets(settings)) if settings is not None else set()
        self.secrets = sorted((s for s in found if len(s) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return mask_numbers(redact_keys(text))


def config_json(settings: Settings | None) -> str:
    if settings is None:
        return json.dumps({"error": "the configuration did not load (see check.txt)"})
    return json.dumps(_redacted_tree(settings), indent=2, default=str)


def versions_text() -> str:
    lines = [
        f"sipstack-agent {__version__}",
        f"python {sys.version.split()[0]} ({platform.python_implementation()})",
        f"platform {platform.platform()}",
        f"sqlite {sqlite3.sqlite_version}",
        f"state schema {SCHEMA_VERSION}",
    ]
    for name in PACKAGES:
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} (not installed)")
    return "\n".join(lines) + "\n"


def check_text(settings: Settings | None, *, api: bool) -> str:
    if settings is None:
        return "the configuration did not load: run `sipstack-agent check` for the problems\n"
    from .check import render, run_checks

    try:
        lines = asyncio.run(run_checks(settings, api=api))
    except Exception as e:  # a check that cannot run is a finding, not a lost bundle
        return f"checks did not run: {type(e).__name__}: {e}\n"
    return render(lines)


def last_lines(source: Iterable[str], n: int) -> str:
    return "".join(deque(source, maxlen=n))


def build(
    settings: Settings | None,
    *,
    url: str | None = None,
    state_dir: str | None = None,
    log: Iterable[str] | None = None,
    log_lines: int = 2000,
    api_check: bool = True,
) -> bytes:
    """The archive as bytes (members as listed in the module docstring)."""
    clean = Cleaner(settings)
    report = gather(status_target(settings, url=url, state_dir=state_dir))
    now = datetime.now(UTC)
    members = {
        "config.json": config_json(settings),
        "status.json": json.dumps(report.as_json(), indent=2, default=str),
        "status.txt": render(report.status, report.health, origin=report.origin, now=now),
        "check.txt": check_text(settings, api=api_check),
        "versions.txt": versions_text(),
        "log.txt": last_lines(log, log_lines)
        if log is not None
        else "no log given: pass the agent's log with --log FILE (or --log - on stdin)\n",
    }
    buf = io.BytesIO()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = clean(text).encode("utf-8", "replace")
            info = tarfile.TarInfo(f"sipstack-support-{stamp}/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run_bundle(
    settings: Settings | None,
    *,
    output: str | None,
    url: str | None,
    state_dir: str | None,
    log_path: str | None,
    log_lines: int,
    api_check: bool,
    out: TextIO,
) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = output or f"sipstack-support-{stamp}.tar.gz"
    log: Iterable[str] | None = None
    fh = None
    if log_path == "-":
        log = sys.stdin
    elif log_path:
        fh = open(log_path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        log = fh
    try:
        data = build(
            settings, url=url, state_dir=state_dir, log=log, log_lines=log_lines,
            api_check=api_check,
        )  # fmt: skip
    finally:
        if fh is not None:
            fh.close()
    if target == "-":
        sys.stdout.buffer.write(data)
        return 0
    with open(target, "wb") as f:
        f.write(data)
    print(f"wrote {target} ({len(data)} bytes): attach it to the support ticket", file=out)
    return 0
