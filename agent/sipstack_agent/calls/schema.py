"""The JSON Schema of the call document (schemas/call_document.schema.json).

Loaded from package data with importlib.resources; validation itself lives
with the users (receiver, tests) so the core needs no jsonschema import.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "sipstack_agent"
SCHEMA_FILE = "call_document.schema.json"


def load_schema(name: str = SCHEMA_FILE) -> dict[str, Any]:
    """A schema file of `sipstack_agent/schemas/` (default: the call document's)."""
    text = resources.files(SCHEMA_PACKAGE).joinpath("schemas", name).read_text(encoding="utf-8")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not a JSON object")
    return value


CALL_DOCUMENT_SCHEMA: dict[str, Any] = load_schema()
