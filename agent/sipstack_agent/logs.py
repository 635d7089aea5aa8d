"""Logging set-up of the agent: text or JSON lines, level from LOG_LEVEL.

Two safety nets sit on the root handler, whatever a stage logs:
- phone numbers (7 to 15 digit runs, optionally with +) are masked in every
  record at INFO and above unless LOG_NUMBERS=true; DEBUG keeps them (asked for);
- anything that looks like an API key (sk_...) is redacted to `sk_…last4`.
Linkedids and uniqueids (`1795495160.12`) are not numbers in this sense and stay.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

_PHONE_RE = re.compile(r"(?<![\w.])\+?\d{7,15}(?![\w.])")
_KEY_RE = re.compile(r"\bsk_[A-Za-z0-9_\-]{8,}")

# Attributes every LogRecord has; anything else was passed with `extra=`.
_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def mask_numbers(text: str) -> str:
    """`+14155551234` -> `+1415…34`-style mask that keeps the last two digits."""
    return _PHONE_RE.sub(lambda m: "…" + m.group(0)[-2:], text)


def redact_keys(text: str) -> str:
    return _KEY_RE.sub(lambda m: "sk_…" + m.group(0)[-4:], text)


class RedactingFilter(logging.Filter):
    """Masks phone numbers (INFO and above, unless allowed) and API keys (always)."""

    def __init__(self, log_numbers: bool = False) -> None:
        super().__init__()
        self.log_numbers = log_numbers

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            msg = str(record.msg)
        new = redact_keys(msg)
        if not self.log_numbers and record.levelno >= logging.INFO:
            new = mask_numbers(new)
        if new != msg or record.args:
            record.msg = new
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    *,
    log_numbers: bool = False,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Replace the root handlers with one stream handler; returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter(log_numbers))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # Chatty libraries stay at WARNING unless we debug.
    for noisy in ("aiohttp.access", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if level.upper() == "DEBUG" and noisy != "aiosqlite" else logging.WARNING
        )
    return handler
