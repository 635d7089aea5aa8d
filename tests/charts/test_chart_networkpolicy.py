"""The agents' NetworkPolicy (templates/networkpolicy.yaml), rendered by the real helm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate

from .chartlib import CI_DIR, NAMESPACE, Helm, by_kind, release_objects

FLEET = CI_DIR / "fleet-50-values.yaml"


def test_off_by_default(helm: Helm):
    assert not by_kind(release_objects(helm.render([FLEET])), "NetworkPolicy")


def test_one_valid_policy_per_served_namespace(helm: Helm, write_values: Callable[[Any], Path]):
    values = write_values({"networkPolicy": {"enabled": True, "pbxCIDRs": ["10.20.0.0/16"]}})
    policies = by_kind(release_objects(helm.render([FLEET, values])), "NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == [NAMESPACE, "pbx-fleet"]
    for policy in policies:
        kubernetes_validate.validate(policy, "1.30", strict=True)
    spec = policies[1]["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "sipstack-agent"
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8000}]
    sources = [s["namespaceSelector"]["matchLabels"] for s in ingress["from"]]
    assert sources == [
        {"kubernetes.io/metadata.name": "monitoring"},
        {"kubernetes.io/metadata.name": NAMESPACE},
    ]
    assert ingress["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
        "sipstack-operator"
    )
    dns, pbx, api = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert [p["port"] for p in pbx["ports"]] == [3306, 5432, 5038]
    assert pbx["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert api == {"ports": [{"protocol": "TCP", "port": 443}]}


def test_cluster_wide_covers_the_connectors_namespaces(
    helm: Helm, write_values: Callable[[Any], Path]
):
    values = write_values({"operator": {"clusterWide": True}, "networkPolicy": {"enabled": True}})
    objects = release_objects(helm.render([CI_DIR / "two-namespaces-values.yaml", values]))
    namespaces = {p["metadata"]["namespace"] for p in by_kind(objects, "NetworkPolicy")}
    connectors = {c["metadata"]["namespace"] for c in by_kind(objects, "AsteriskConnector")}
    assert connectors and connectors | {NAMESPACE} == namespaces
    for policy in by_kind(objects, "NetworkPolicy"):
        assert "to" not in policy["spec"]["egress"][1]  # no pbxCIDRs: any address on the ports
