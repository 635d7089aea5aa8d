"""Logging set-up of the agent: text or JSON lines, level from LOG_LEVEL.

Three safety nets sit on the root handler's formatter, applied to the whole
formatted line (message, `extra=` fields, traceback), whatever a stage logs:
- phone numbers (7 to 15 digit runs, optionally with +) are masked in every
  record at INFO and above unless LOG_NUMBERS=true; DEBUG keeps them (asked for);
- anything that looks like an API key (sk_...) is redacted to `sk_…last4`;
- credentials in URLs (`scheme://user:password@host`) become `scheme://user:***@host`.
Linkedids and uniqueids (`1795495160.12`) are not numbers in this sense and stay.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from .rules.redact import redact_text

_PHONE_RE = re.compile(r"(?<![\w.])\+?\d{7,15}(?![\w.])")
_URL_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*):[^/\s@]*@")

# Attributes every LogRecord has; anything else was passed with `extra=`.
_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def mask_numbers(text: str) -> str:
    """`+14155551234` -> `+1415…34`-style mask that keeps the last two digits."""
    return _PHONE_RE.sub(lambda m: "…" + m.group(0)[-2:], text)


def redact_keys(text: str) -> str:
    return redact_text(text)


def redact_url_credentials(text: str) -> str:
    """`https://user:secret@host/` -> `https://user:***@host/`."""
    return _URL_CREDENTIALS_RE.sub(r"\1:***@", text)


def redact(text: str, levelno: int, log_numbers: bool = False) -> str:
    """The one redaction rule of log output (keys, URL credentials, numbers at INFO+)."""
    text = redact_url_credentials(redact_keys(text))
    if not log_numbers and levelno >= logging.INFO:
        text = mask_numbers(text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the whole line: message, extras and traceback."""

    def __init__(self, inner: logging.Formatter, log_numbers: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.log_numbers = log_numbers

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(self.inner, JsonFormatter):
            return self.inner.format(record, lambda t: redact(t, record.levelno, self.log_numbers))
        return redact(self.inner.format(record), record.levelno, self.log_numbers)


def _same(text: str) -> str:
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc.

    `clean` is applied to every value's text before it is encoded (a masked
    number becomes a string, so the line stays valid JSON).
    """

    def format(self, record: logging.LogRecord, clean: Callable[[str], str] = _same) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": clean(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                plain = isinstance(v, int | float) and clean(str(v)) == str(v)
                if plain or isinstance(v, bool | type(None)):
                    out[k] = v
                else:
                    out[k] = clean(str(v))
        if record.exc_info:
            out["exc"] = clean(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = clean(self.formatStack(record.stack_info))
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
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(RedactingFormatter(inner, log_numbers))
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
