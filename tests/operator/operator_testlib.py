"""Shared paths and helpers of the operator tests (imported by name: a
unique module name, since tests/ has no packages and `conftest` is taken
by several folders)."""

from __future__ import annotations

import copy
import json
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "asteriskconnectors.sipstack.com.yaml"
EXAMPLES = ROOT / "examples"
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"


def load_docs(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def example_crs() -> list[pathlib.Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "secrets.yaml")


def strip_for_draft4(node: Any) -> Any:
    """The openAPIV3Schema as a Draft 4 JSON schema that also rejects unknown fields.

    The API server prunes unknown fields (kubectl's default strict field
    validation turns that into an error); here they fail validation. Objects
    marked x-kubernetes-preserve-unknown-fields keep accepting anything.
    """
    if isinstance(node, list):
        return [strip_for_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strip_for_draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    return out


# --------------------------------------------------------------------------- agent /status

AGENT_STATUS_SCHEMA_COPY = (
    ROOT / "operator" / "sipstack_operator" / "data" / "agent_status.v1.schema.json"
)
AGENT_STATUS_SCHEMA_SOURCE = (
    ROOT / "agent" / "sipstack_agent" / "schemas" / "agent_status.v1.schema.json"
)
EXAMPLE_TIME = "2026-11-25T21:00:00+00:00"


def _schema() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(AGENT_STATUS_SCHEMA_COPY.read_text())
    return value


def _example(node: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """The simplest instance of a schema node (every property filled in)."""
    if "$ref" in node:
        ref = str(node["$ref"])
        assert ref.startswith("#/$defs/"), ref
        return _example(root["$defs"][ref.removeprefix("#/$defs/")], root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    if "anyOf" in node:
        return _example(node["anyOf"][0], root)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        return {k: _example(v, root) for k, v in (node.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind == "string":
        if "pattern" in node:
            assert re.fullmatch(node["pattern"], EXAMPLE_TIME), node["pattern"]
            return EXAMPLE_TIME
        return "x" * max(1, int(node.get("minLength", 1)))
    if kind == "integer":
        return int(node.get("minimum", 0))
    if kind == "number":
        return float(node.get("minimum", 0))
    if kind == "boolean":
        return False
    raise AssertionError(f"no example for schema node {dict(node)}")


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, Mapping):
        out = dict(base)
        for k, v in extra.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(extra)


def agent_status_doc(**sections: Any) -> dict[str, Any]:
    """An agent /status document made from the schema the operator ships.

    Every property of the schema filled with its simplest value, then `sections`
    merged in (nested objects merge key by key); the result must validate against
    the schema, so a fixture can never have a shape of its own.
    """
    schema = _schema()
    doc = _merge(_example(schema, schema), sections)
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert isinstance(doc, dict)
    return doc
