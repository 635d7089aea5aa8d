"""The call document's JSON Schema, as the receiver validates it.

The schema is owned by the calls core and shipped in the package at
`sipstack_agent/schemas/call_document.schema.json`. Until that file exists a
built-in minimal schema (the "always present" keys of ingest-api.md) is used,
so the receiver is usable on its own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from jsonschema import FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

SCHEMA_PACKAGE = "sipstack_agent"
SCHEMA_RESOURCE = "schemas/call_document.schema.json"

# Minimal contract: the keys ingest-api.md says are always present.
FALLBACK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "call document (receiver fallback)",
    "type": "object",
    "required": [
        "connector",
        "connector_version",
        "customer_id",
        "tenant",
        "hostname",
        "linkedid",
        "is_complete",
        "call_time",
        "duration_seconds",
        "disposition",
        "direction",
        "call_threads",
        "call_threads_count",
        "ship_phase",
        "shipped_at",
    ],
    "properties": {
        "connector": {"const": "asterisk"},
        "connector_version": {"type": "string"},
        "customer_id": {"type": "integer"},
        "tenant": {"type": "string"},
        "hostname": {"type": "string"},
        "linkedid": {"type": "string", "minLength": 1},
        "is_complete": {"type": "boolean"},
        "call_time": {"type": "string", "format": "date-time"},
        "duration_seconds": {"type": "integer", "minimum": 0},
        "disposition": {
            "enum": ["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "CANCEL"]
        },
        "direction": {"enum": ["i", "o", "x"]},
        "call_threads": {"type": "array", "items": {"type": "object"}},
        "call_threads_count": {"type": "integer", "minimum": 0},
        "ship_phase": {"enum": ["initial", "update", "complete"]},
        "shipped_at": {"type": "string", "format": "date-time"},
        "revision": {"type": "integer", "minimum": 1},
    },
}


def load_call_schema() -> dict[str, Any] | None:
    """The packaged schema, or None when the file is not there (yet)."""
    try:
        res = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE)
        text = res.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        return None
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{SCHEMA_RESOURCE} is not a JSON object")
    return loaded


# Keywords newer than draft-07: a schema using any of them is checked by
# jsonschema alone (fastjsonschema would silently ignore them).
_POST_DRAFT7 = frozenset(
    {
        "unevaluatedProperties",
        "unevaluatedItems",
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "minContains",
        "maxContains",
    }
)


def _uses_post_draft7(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k in _POST_DRAFT7 or _uses_post_draft7(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_uses_post_draft7(v) for v in node)
    return False


class CallValidator:
    """Validates call documents; jsonschema is the authority.

    When the schema allows it, a compiled fastjsonschema validator answers
    first (about ten times faster, which keeps the receiver out of the way of
    the throughput benchmark); only documents it rejects are checked again by
    jsonschema, which then gives (or overrules) the reason.
    """

    def __init__(self, schema: dict[str, Any], origin: str) -> None:
        self.schema = schema
        self.origin = origin
        cls = validator_for(schema)
        cls.check_schema(schema)
        self.full: Validator = cls(schema, format_checker=FormatChecker())
        self.fast: Callable[[Any], Any] | None = None
        if not _uses_post_draft7(schema):
            try:
                import fastjsonschema

                # compile() annotates the dict it is given: hand it a copy
                self.fast = fastjsonschema.compile(copy.deepcopy(schema))
            except Exception:  # not installed, or a schema it cannot compile
                self.fast = None

    def problem(self, doc: Any) -> str | None:
        """None when valid, else a one-line reason (schema, then contract rules)."""
        if self.fast is not None:
            try:
                self.fast(doc)
            except Exception:
                reason = first_problem(self.full, doc)
            else:
                reason = None
        else:
            reason = first_problem(self.full, doc)
        if reason is None and isinstance(doc, dict):
            reason = semantic_problem(doc)
        return reason


def make_validator(schema: dict[str, Any] | None = None) -> CallValidator:
    """The validator for `schema`, else the packaged schema, else the fallback.

    `.origin` says which: "given" | "package" | "fallback".
    """
    origin = "given"
    if schema is None:
        schema = load_call_schema()
        origin = "package"
        if schema is None:
            schema = FALLBACK_SCHEMA
            origin = "fallback"
    return CallValidator(schema, origin)


def first_problem(validator: Validator, doc: Any) -> str | None:
    """A one-line reason for the most relevant schema error, or None when valid."""
    err = best_match(validator.iter_errors(doc))
    if err is None:
        return None
    where = "/".join(str(p) for p in err.absolute_path) or "(document)"
    return f"{where}: {err.message}"[:500]


def semantic_problem(doc: dict[str, Any]) -> str | None:
    """Contract rules a JSON Schema cannot say."""
    threads = doc.get("call_threads")
    count = doc.get("call_threads_count")
    if isinstance(threads, list) and isinstance(count, int) and count != len(threads):
        return f"call_threads_count: {count} != len(call_threads) {len(threads)}"
    return None
