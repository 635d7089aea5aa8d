"""The recordings section: where recording files are found, how they are linked to
calls and uploaded (`RecordingSettings`)."""

from __future__ import annotations

import re

from .reader import Reader
from .spec import IDENT_RE, Invalid, Notes, Table, boolean, integer, items, seconds, show
from .types import RecordingSettings

_D = RecordingSettings()


def _columns(value: str, notes: Notes) -> tuple[str, ...]:
    cols = items(value, notes)
    for c in cols:
        if not IDENT_RE.match(c):
            raise Invalid(f"column names must be plain identifiers, got {show(c)}")
    return cols


def _extensions(value: str, notes: Notes) -> tuple[str, ...]:
    exts = tuple(x.lstrip(".") for x in items(value, notes))
    for x in exts:
        if not re.fullmatch(r"[A-Za-z0-9]{1,10}", x):
            raise Invalid(f"extensions like wav,mp3 expected, got {show(x)}")
    return exts


def _paths(value: str, notes: Notes) -> tuple[str, ...]:
    paths = items(value, notes)
    if [p.lower() for p in paths] == ["none"]:
        return ()  # no recording directories: recordings are not looked for in files
    for p in paths:
        if not p.startswith("/"):
            notes.problem(f"paths must be absolute, got {show(p)}")
            break
    return paths


TABLE = Table("recordings")
RECORDINGS_COLUMNS = TABLE.var("RECORDINGS_COLUMNS", _columns, _D.columns)
RECORDING_FILE_EXTENSIONS = TABLE.var("RECORDING_FILE_EXTENSIONS", _extensions, _D.extensions)
RECORDING_PATHS = TABLE.var("RECORDING_PATHS", _paths, _D.paths)
RECORDING_STABILITY_CHECK_COUNT = TABLE.var(
    "RECORDING_STABILITY_CHECK_COUNT", integer(1, 100), _D.stability_check_count
)
RECORDING_STABILITY_CHECK_INTERVAL = TABLE.var(
    "RECORDING_STABILITY_CHECK_INTERVAL",
    seconds(hi=3600),
    _D.stability_check_interval,
    "RECORDING_STABILITY_CHECK",
)
RECORDING_UPLOAD = TABLE.var("RECORDING_UPLOAD", boolean, _D.upload)
RECORDING_UPLOAD_CONCURRENCY = TABLE.var(
    "RECORDING_UPLOAD_CONCURRENCY",
    integer(1, 64),
    _D.upload_concurrency,
    "RECORDING_BATCH_SIZE",
    "RECORDING_UPLOAD_BATCH_SIZE",
)
DELETE_RECORDINGS_AFTER_UPLOAD = TABLE.var(
    "DELETE_RECORDINGS_AFTER_UPLOAD",
    boolean,
    _D.delete_after_upload,
    "RECORDING_DELETE_AFTER_UPLOAD",
)
RECORDING_SCAN_BUDGET = TABLE.var("RECORDING_SCAN_BUDGET", integer(10, 10_000_000), _D.scan_budget)
RECORDING_POLL_INTERVAL = TABLE.var("RECORDING_POLL_INTERVAL", seconds(hi=3600), _D.poll_interval)
RECORDING_INDEX_WINDOW = TABLE.var(
    "RECORDING_INDEX_WINDOW", seconds(hi=365 * 86400), _D.fs_index_window
)
RECORDING_KNOWN_CALL_WINDOW = TABLE.var(
    "RECORDING_KNOWN_CALL_WINDOW", seconds(hi=30 * 86400), _D.known_call_window
)
RECORDING_KNOWN_CALL_MAX = TABLE.var(
    "RECORDING_KNOWN_CALL_MAX", integer(100, 10_000_000), _D.known_call_max
)


def load(r: Reader) -> RecordingSettings:
    columns = r.get(RECORDINGS_COLUMNS)
    extensions = r.get(RECORDING_FILE_EXTENSIONS)
    return RecordingSettings(
        paths=r.get(RECORDING_PATHS),
        extensions=extensions,
        stability_check_count=r.get(RECORDING_STABILITY_CHECK_COUNT),
        stability_check_interval=r.get(RECORDING_STABILITY_CHECK_INTERVAL),
        upload=r.get(RECORDING_UPLOAD),
        upload_concurrency=r.get(RECORDING_UPLOAD_CONCURRENCY),
        delete_after_upload=r.get(DELETE_RECORDINGS_AFTER_UPLOAD),
        columns=columns,
        scan_budget=r.get(RECORDING_SCAN_BUDGET),
        poll_interval=r.get(RECORDING_POLL_INTERVAL),
        fs_index_window=r.get(RECORDING_INDEX_WINDOW),
        known_call_window=r.get(RECORDING_KNOWN_CALL_WINDOW),
        known_call_max=r.get(RECORDING_KNOWN_CALL_MAX),
    )
