"""The JSON Schema of the agent's GET /status (schemas/agent_status.v1.schema.json).

`Agent.status()` stamps `schema_version` from it; the operator reads a
byte-identical copy (operator/sipstack_operator/data/, kept by
tools/sync-chart-crd.py) and the tests validate the real output against it.
"""

from __future__ import annotations

from typing import Any

from .calls.schema import load_schema

STATUS_SCHEMA_FILE = "agent_status.v1.schema.json"
AGENT_STATUS_SCHEMA: dict[str, Any] = load_schema(STATUS_SCHEMA_FILE)
STATUS_SCHEMA_VERSION: int = int(AGENT_STATUS_SCHEMA["properties"]["schema_version"]["const"])
