"""docs/monitoring.md documents every field of the agent's /status schema, and
its example is a valid document."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
from sipstack_agent.status_schema import AGENT_STATUS_SCHEMA

MONITORING_MD = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def section() -> str:
    text = MONITORING_MD.read_text()
    start = text.index("## The agent's /status")
    return text[start : text.index("\n## ", start + 1)]


def fields(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Leaf fields, dotted (an object with properties is documented by its leaves)."""
    for name, sub in (node.get("properties") or {}).items():
        if "properties" in sub:
            yield from fields(sub, prefix + name + ".")
        else:
            yield prefix + name


def test_every_schema_field_is_in_the_table() -> None:
    documented: set[str] = set()
    for line in section().splitlines():
        if line.startswith("| `"):
            documented.update(re.findall(r"`([a-z_.<>]+)`", line.split("|")[1]))
    flat = {d.split(".<")[0] for d in documented}
    missing = [f for f in fields(AGENT_STATUS_SCHEMA) if f not in documented | flat]
    assert missing == []


def test_every_schema_field_has_a_description() -> None:
    def walk(node: Mapping[str, Any], path: str) -> Iterator[str]:
        for name, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                yield path + name
            yield from walk(sub, path + name + ".")

    assert list(walk(AGENT_STATUS_SCHEMA, "")) == []
    for name, stage_field in AGENT_STATUS_SCHEMA["$defs"]["stage"]["properties"].items():
        assert "description" in stage_field, name


def test_the_example_is_valid() -> None:
    (example,) = re.findall(r"```json\n(.*?)```", section(), re.S)
    jsonschema.Draft202012Validator(AGENT_STATUS_SCHEMA).validate(json.loads(example))
