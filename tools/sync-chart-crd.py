#!/usr/bin/env python3
"""Keep the Helm chart in step with the operator's CRD and RBAC files.

    tools/sync-chart-crd.py          # rewrite the chart's copies
    tools/sync-chart-crd.py --check  # exit 1 (and say what) when they are stale

What it maintains in charts/sipstack-connector/:
- crds/asteriskconnectors.sipstack.com.yaml: a byte-identical copy of
  crds/asteriskconnectors.sipstack.com.yaml. Helm creates it on the first
  install before it maps the templates (so the fleet's AsteriskConnectors map
  on a fresh cluster) and never touches it again; the pre-install/pre-upgrade
  hook Job (templates/crd-upgrade-job.yaml) applies the same file server-side;
- crds/kopfpeerings.kopf.dev.yaml: a byte-identical copy of
  crds/kopfpeerings.kopf.dev.yaml (kopf's peering CRDs, created by Helm on the
  first install like the one above; they hardly ever change);
- files/rbac.yaml: a byte-identical copy of operator/sipstack_operator/data/rbac.yaml
  (templates/rbac.yaml takes the operator's rules from it);
- operator/sipstack_operator/data/agent_status.v1.schema.json: a byte-identical
  copy of the agent's /status schema (agent/sipstack_agent/schemas/), so the
  operator, which never imports the agent, has it as data;
- values.schema.json `definitions.connector` and `definitions.connectorDefaults`:
  the CRD's spec schema as JSON Schema (draft-07) with the chart's own keys
  (name, namespace, labels, annotations, existingSecret, createSecret). Unknown
  keys are rejected, so an inline password can never be set.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "sipstack-connector"
CRD = ROOT / "crds" / "asteriskconnectors.sipstack.com.yaml"
RBAC = ROOT / "operator" / "sipstack_operator" / "data" / "rbac.yaml"
STATUS_SCHEMA = ROOT / "agent" / "sipstack_agent" / "schemas" / "agent_status.v1.schema.json"
PEERING_CRDS = ROOT / "crds" / "kopfpeerings.kopf.dev.yaml"
COPIES = {
    CRD: CHART / "crds" / "asteriskconnectors.sipstack.com.yaml",
    PEERING_CRDS: CHART / "crds" / "kopfpeerings.kopf.dev.yaml",
    RBAC: CHART / "files" / "rbac.yaml",
    STATUS_SCHEMA: ROOT / "operator" / "sipstack_operator" / "data" / STATUS_SCHEMA.name,
}
SCHEMA = CHART / "values.schema.json"

# JSON Schema keywords kept from the CRD's structural schema.
KEEP = {
    "type",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "anyOf",
}

REF_FILLED_NOTE = (
    "Filled by the chart from existingSecret/createSecret when not given "
    "(keys api-key, db-password, ami-password)."
)


def convert(node: dict[str, Any]) -> dict[str, Any]:
    """One CRD schema node -> JSON Schema (closed objects, no defaults, no required)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in KEEP:
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = convert(value)
        elif key == "anyOf":
            out[key] = [convert(sub) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def chart_keys() -> dict[str, Any]:
    return {
        "name": {
            "type": "string",
            "description": "Name of the AsteriskConnector (and prefix of its children).",
            "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$",
            "maxLength": 55,
        },
        "namespace": {
            "type": "string",
            "description": "Namespace of the AsteriskConnector; default: the release namespace.",
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "maxLength": 63,
        },
        "labels": {
            "type": "object",
            "description": "Labels of the AsteriskConnector.",
            "additionalProperties": {"type": "string", "maxLength": 63},
        },
        "annotations": {
            "type": "object",
            "description": "Annotations of the AsteriskConnector.",
            "additionalProperties": {"type": "string"},
        },
        "existingSecret": {
            "type": "string",
            "description": (
                "Secret in the connector's namespace with the keys api-key, "
                "db-password (and ami-password for cel.mode ami)."
            ),
            "minLength": 1,
            "maxLength": 253,
        },
        "createSecret": {
            "type": "object",
            "description": (
                "Quick starts only, NOT for production: the chart creates the Secret "
                "<name>-credentials from these values (stored in the Helm release)."
            ),
            "additionalProperties": False,
            "required": ["apiKey"],
            "properties": {
                "apiKey": {"type": "string", "minLength": 1},
                "dbPassword": {"type": "string"},
                "amiPassword": {"type": "string"},
            },
        },
    }


def connector_definitions(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    fields = convert(spec)["properties"]
    for path in (("apiKeySecretRef",), ("database", "passwordSecretRef")):
        node = fields
        for part in path[:-1]:
            node = node[part]["properties"]
        node[path[-1]]["description"] += " " + REF_FILLED_NOTE
    defaults = {
        "type": "object",
        "description": (
            "Merged under every item of connectors: any AsteriskConnector spec field "
            "(and namespace, labels, annotations, existingSecret)."
        ),
        "additionalProperties": False,
        "properties": {
            **{k: v for k, v in chart_keys().items() if k not in ("name", "createSecret")},
            **copy.deepcopy(fields),
        },
    }
    item_fields = copy.deepcopy(fields)
    item_fields["database"]["required"] = ["host"]
    connector = {
        "type": "object",
        "description": (
            "One PBX: the AsteriskConnector spec fields (camelCase, as in the CRD) plus "
            "name, namespace, labels, annotations, existingSecret or createSecret. "
            "Passwords and API keys are never inline: only Secret references exist."
        ),
        "additionalProperties": False,
        "required": ["name", "database"],
        "properties": {**chart_keys(), **item_fields},
    }
    return {"connector": connector, "connectorDefaults": defaults}


def render_schema() -> str:
    crd = yaml.safe_load(CRD.read_text())
    schema = json.loads(SCHEMA.read_text())
    schema.setdefault("definitions", {}).update(connector_definitions(crd))
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale copies")
    args = parser.parse_args()
    stale: list[str] = []
    for source, copy_path in COPIES.items():
        if not source.exists():
            print(f"skipped: {source.relative_to(ROOT)} does not exist yet", file=sys.stderr)
            continue
        data = source.read_bytes()
        if not copy_path.exists() or copy_path.read_bytes() != data:
            stale.append(str(copy_path.relative_to(ROOT)))
            if not args.check:
                copy_path.parent.mkdir(parents=True, exist_ok=True)
                copy_path.write_bytes(data)
    if CRD.exists():
        text = render_schema()
        if SCHEMA.read_text() != text:
            stale.append(str(SCHEMA.relative_to(ROOT)))
            if not args.check:
                SCHEMA.write_text(text)
    if stale and args.check:
        print("stale, run tools/sync-chart-crd.py: " + ", ".join(stale), file=sys.stderr)
        return 1
    for path in stale:
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
