"""The outbox item of a recording upload: what recordings/ queues and shipping/ sends.

`recordings.RecordingManager` queues one item (kind "recording") per ready file
with `upload_payload`; `shipping.RecordingShipper` sends it and, after a 2xx,
stores the file again with `recording_from_payload(..., uploaded=True)`.
Neither imports the other: the payload (this module) and the file access
(`FileAccess`, implemented by recordings.files) are the seam.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .model import RecordingFile

KIND = "recording"  # outbox kind


def recording_key(connector_id: str, call_key: str, filename: str) -> str:
    """The Idempotency-Key of one recording's upload."""
    return f"{connector_id}:recording:{call_key}:{filename}"


def upload_payload(
    rec: RecordingFile,
    *,
    linkedid: str,
    original_path: str,
    mtime_ns: int,
    call: Mapping[str, Any],
) -> dict[str, Any]:
    """The queued item: everything the upload needs, so it survives restarts alone."""
    return {
        "file_path": rec.file_path,
        "filename": rec.filename,
        "file_size": rec.file_size or 0,
        "mtime_ns": mtime_ns,
        "source": rec.source,
        "started_at": rec.started_at.isoformat() if rec.started_at else "",
        "uniqueid": rec.uniqueid,
        "linkedid": linkedid,
        "original_file_path": original_path or rec.file_path,
        "src_number": str(call.get("src_number") or ""),
        "dst_number": str(call.get("dst_number") or ""),
        "direction": str(call.get("direction") or ""),
        "duration": int(call.get("duration") or 0),
        "start_time": str(call.get("start_time") or ""),
        "tenant_name": str(call.get("tenant_name") or ""),
    }


def recording_from_payload(payload: Mapping[str, Any], *, uploaded: bool) -> RecordingFile:
    started = payload.get("started_at") or ""
    return RecordingFile(
        filename=str(payload.get("filename") or ""),
        file_path=str(payload.get("file_path") or ""),
        source=str(payload.get("source") or ""),
        file_size=int(payload.get("file_size") or 0),
        started_at=datetime.fromisoformat(started) if started else None,
        uploaded=uploaded,
        uniqueid=str(payload.get("uniqueid") or ""),
    )


@dataclass(frozen=True, slots=True)
class LocatedFile:
    """A queued file as found just before its upload.

    `refused`: outside RECORDING_PATHS (never uploaded); `missing`: gone (why);
    else `real_path` with the identity (size, mtime, inode) the upload is of.
    """

    path: str
    real_path: str | None = None
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    content_type: str = "application/octet-stream"
    refused: str | None = None
    missing: str | None = None


class FileAccess(Protocol):
    """The file side of an upload (recordings.files.ConfinedFiles); blocking calls."""

    def locate(self, path: str) -> LocatedFile: ...

    def delete_uploaded(self, f: LocatedFile) -> bool:
        """Delete `f` if it is still the file that was sent, inside RECORDING_PATHS."""
        ...
