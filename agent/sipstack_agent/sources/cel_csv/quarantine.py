"""Malformed cel_custom records, kept aside: a bounded JSONL file, a metric, one log line."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime

from ...metrics import Metrics
from .parser import Quarantine

__all__ = ["QuarantineSink"]

log = logging.getLogger(__name__)

_REASONS_LOGGED: dict[str, set[str]] = {}  # per feed, for the process: log each reason once


class QuarantineSink:
    """Malformed records: JSONL file (bounded, one rotation), metric, one log line per reason."""

    MAX_BYTES = 16 * 1024 * 1024

    def __init__(
        self, directory: str | None, metrics: Metrics | None, name: str = "cel_csv"
    ) -> None:
        self.path = os.path.join(directory, f"{name}.jsonl") if directory else None
        self.metrics = metrics
        self._reasons_logged = _REASONS_LOGGED.setdefault(name, set())
        self.count = 0

    @staticmethod
    def _reason_kind(reason: str) -> str:
        return reason.split(":", 1)[0]

    def add(self, items: Iterable[Quarantine], *, file: str, dev: int, ino: int) -> None:
        lines: list[str] = []
        now = datetime.now(UTC).isoformat()
        for q in items:
            self.count += 1
            if self.metrics is not None:
                self.metrics.csv_quarantined.inc()
            kind = self._reason_kind(q.reason)
            if kind not in self._reasons_logged:
                self._reasons_logged.add(kind)
                log.warning(
                    "cel_custom record quarantined (%s) at %s offset %d%s; further records "
                    "with this reason are counted in sipstack_csv_lines_quarantined_total",
                    q.reason,
                    file,
                    q.offset,
                    f", kept in {self.path}" if self.path else "",
                )
            else:
                log.debug("cel_custom record quarantined (%s) at offset %d", q.reason, q.offset)
            if self.path:
                lines.append(
                    json.dumps(
                        {
                            "at": now,
                            "file": file,
                            "dev": dev,
                            "inode": ino,
                            "offset": q.offset,
                            "length": q.length,
                            "reason": q.reason,
                            "text": q.raw.decode("utf-8", "backslashreplace"),
                            "raw_b64": base64.b64encode(q.raw).decode("ascii"),
                        },
                        ensure_ascii=False,
                    )
                )
        if lines and self.path:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        assert self.path is not None
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if os.path.getsize(self.path) > self.MAX_BYTES:
                    os.replace(self.path, self.path + ".1")
            # raw CDR/CEL text: personal data, readable by the agent's user only
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)  # also a file an older agent created 0644
            with open(fd, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        except OSError as exc:  # never stop the stream for the quarantine file
            log.error("cannot write the CSV quarantine file %s: %s", self.path, exc)
