"""Shared paths and helpers of the operator tests (imported by name: a
unique module name, since tests/ has no packages and `conftest` is taken
by several folders)."""

from __future__ import annotations

import pathlib
from typing import Any

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
