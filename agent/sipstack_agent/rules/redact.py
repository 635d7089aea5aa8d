"""API keys in text: `sk_…last4`, never the key. Logs, check output and stored errors use this."""

from __future__ import annotations

import re

# sk_ + at least 8 key characters at a word start ("task_id", "sk_id" are not keys)
KEY_RE = re.compile(r"\bsk_[A-Za-z0-9_\-]{8,}")


def redact_key(key: str | None) -> str:
    """`sk_…last4`; a key of 8 characters or fewer shows none of its characters."""
    if not key:
        return "(empty)"
    prefix = "sk_" if key.startswith("sk_") else ""
    return f"{prefix}…{key[-4:]}" if len(key) > 8 else f"{prefix}…"


def redact_text(text: str, key: str | None = None) -> str:
    """`text` without the API `key` and without anything that looks like an sk_ key."""
    if key:
        text = text.replace(key, redact_key(key))
    return KEY_RE.sub(lambda m: redact_key(m.group(0)), text)
