"""ServiceMonitors, PrometheusRule and the Grafana dashboard of the chart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
from sipstack_operator import render
from sipstack_operator import spec as spec_mod

from .chartlib import CHART, CI_DIR, ROOT, Helm, by_kind
from .served_metrics import agent_series, operator_series

REQUIRED_ALERTS = {
    "SipstackAgentDown",
    "SipstackAgentTargetMissing",
    "SipstackBacklogGrowing",
    "SipstackOldestUndeliveredTooOld",
    "SipstackDeadLetters",
    "SipstackDatabaseUnreachable",
    "SipstackApiKeyRejected",
    "SipstackReconcileFailing",
    "SipstackTimezoneSuspect",
    "SipstackOperatorDown",
}
# Series from outside the project: Prometheus' own `up` and kube-state-metrics.
EXTERNAL_SERIES = {
    "up": set(),
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
}
# Labels Prometheus puts on every series of a ServiceMonitor target.
TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Series name -> label names, from the real agent's and operator's /metrics."""
    return {
        **agent_series(tmp_path_factory.mktemp("agent")),
        **operator_series(),
        **EXTERNAL_SERIES,
    }


def _selectors(node: Any) -> list[Any]:
    found: list[Any] = []

    def visit(n: Any) -> bool:
        if isinstance(n, promql_parser.VectorSelector):
            found.append(n)
        return True

    promql_parser.walk(node, visit)
    return found


def promql_problems(expr: str, served: dict[str, set[str]]) -> list[str]:
    """Why `expr` would not work: it does not parse (promql-parser checks argument
    types too), or names a series or a label the project's /metrics do not serve."""
    try:
        tree = promql_parser.parse(expr)
    except ValueError as e:
        return [f"does not parse: {e}"]
    problems: list[str] = []
    for selector in _selectors(tree):
        if selector.name not in served:
            problems.append(f"no such series: {selector.name}")
            continue
        labels = served[selector.name]
        for matcher in selector.matchers.matchers:
            if labels and matcher.name not in labels | TARGET_LABELS:
                problems.append(f"{selector.name} has no label {matcher.name}")

    def visit(n: Any) -> bool:
        if isinstance(n, promql_parser.Call) and n.func.name == "label_replace":
            source = n.args[3].val
            for selector in _selectors(n.args[0]):
                if source not in served.get(selector.name, set()) | TARGET_LABELS:
                    problems.append(f"label_replace: {selector.name} has no label {source}")
        return True

    promql_parser.walk(tree, visit)
    return problems


def test_the_expression_check_catches_mistakes(served: dict[str, set[str]]) -> None:
    assert promql_problems("sum by (kind) (rate(sipstack_dead_letters_total[5m]))", served) == []
    assert promql_problems("rate(sipstack_dead_letters_total)", served)  # a vector, not a range
    assert promql_problems("sum(rate(sipstack_dead_letters_total[5m])", served)
    assert promql_problems("recordings_uploaded_total", served)  # the pre-prefix name
    assert promql_problems('sipstack_dead_letters_total{knd="call"}', served)
    assert promql_problems(
        'label_replace(sipstack_operator_connector_info, "a", "$1", "connector_ns", "(.+)")',
        served,
    )


def single(helm: Helm, **kw: Any) -> list[dict[str, Any]]:
    return helm.render([CI_DIR / "single-pbx-values.yaml"], **kw)


def test_prometheus_rule_has_every_alert(helm: Helm, served: dict[str, set[str]]):
    (rule,) = by_kind(single(helm), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == REQUIRED_ALERTS
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert promql_problems(alert["expr"], served) == [], f"{name}: {alert['expr']}"
    assert "> 900" in alerts["SipstackOldestUndeliveredTooOld"]["expr"]
    assert "sipstack_api_auth_failed" in alerts["SipstackApiKeyRejected"]["expr"]
    assert "sipstack_timezone_suspect" in alerts["SipstackTimezoneSuspect"]["expr"]
    assert "database_connection_status" in alerts["SipstackDatabaseUnreachable"]["expr"]
    assert alerts["SipstackAgentDown"]["expr"].startswith('up{container="agent"')


def test_alert_labels_and_runbooks(helm: Helm, write_values: Callable[[Any], Path]):
    path = write_values(
        {
            "prometheusRule": {
                "alertLabels": {"team": "voice"},
                "runbookBaseUrl": "https://example.com/docs/monitoring.md",
            }
        }
    )
    (rule,) = by_kind(helm.render([path]), "PrometheusRule")
    for alert in [r for g in rule["spec"]["groups"] for r in g["rules"]]:
        assert alert["labels"]["team"] == "voice"
        anchor = alert["alert"].lower()
        assert alert["annotations"]["runbook_url"] == (
            f"https://example.com/docs/monitoring.md#{anchor}"
        )


def test_monitoring_guide_explains_every_alert():
    guide = (ROOT / "docs" / "monitoring.md").read_text()
    for alert in REQUIRED_ALERTS:
        assert f"### {alert}" in guide, f"docs/monitoring.md has no section for {alert}"


def test_dashboard_config_map(helm: Helm, served: dict[str, set[str]]):
    objects = single(helm)
    (config_map,) = [
        o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needle in ("calls completed per second", "outbox depth", "latency", "dead letters"):
        assert needle in titles
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$namespace", ".+").replace("$pbx", ".+")
            assert promql_problems(expr, served) == [], f"{panel['title']}: {target['expr']}"
            if panel["type"] == "timeseries":
                assert "namespace, service" in target["expr"], panel["title"]
    assert json.loads((CHART / "dashboards" / "sipstack-fleet.json").read_text()) == dashboard
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "pbx"}


def test_fleet_service_monitor_selects_the_operators_agent_services(helm: Helm):
    objects = single(helm)
    (connector,) = by_kind(objects, "AsteriskConnector")
    fleet = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-agents")
    ]
    assert len(fleet) == 1
    selector = fleet[0]["spec"]["selector"]["matchLabels"]
    endpoint = fleet[0]["spec"]["endpoints"][0]
    connector["metadata"]["namespace"] = "pbx"
    spec = spec_mod.parse_resource(connector)
    secrets = {
        ("pbx-east-credentials", "api-key"): "sk_test",
        ("pbx-east-credentials", "db-password"): "pw",
    }
    children = render.render(spec, secrets, service_monitor_available=True)
    (service,) = by_kind(children, "Service")
    assert service["metadata"]["name"] == "pbx-east-metrics"
    assert selector.items() <= service["metadata"]["labels"].items()
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    (deployment,) = by_kind(children, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # The alert selector container="agent" is the agent's container name.
    assert container["name"] == "agent"
    assert fleet[0]["spec"]["namespaceSelector"] == {"matchNames": ["sipstack-system"]}
    # perConnector mode: the operator's own ServiceMonitor scrapes the same endpoint.
    connector["spec"]["monitoring"] = {"serviceMonitor": {"enabled": True}}
    children = render.render(spec_mod.parse_resource(connector), secrets)
    (own,) = by_kind(children, "ServiceMonitor")
    assert own["spec"]["endpoints"][0]["port"] == endpoint["port"]
    assert own["spec"]["endpoints"][0]["path"] == endpoint["path"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert own["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "jobLabel" not in own["spec"] and "jobLabel" not in fleet[0]["spec"]


def test_fleet_mode_and_per_connector_service_monitors_exclude_each_other(
    helm: Helm, write_values: Callable[[Any], Path]
):
    values = {
        "connectors": [
            {
                "name": "pbx-east",
                "region": "us1",
                "customerId": 1,
                "existingSecret": "creds",
                "database": {"type": "mysql", "host": "db", "name": "cdr", "user": "u"},
                "monitoring": {"serviceMonitor": {"enabled": True}},
            }
        ]
    }
    result = helm.run(*helm.template_args([write_values(values)], monitoring=True))
    assert result.returncode != 0
    assert "scraped twice" in result.output


def test_per_connector_mode_delegates_to_the_operator(
    helm: Helm, write_values: Callable[[Any], Path]
):
    path = write_values({"serviceMonitor": {"agents": {"mode": "perConnector"}, "interval": "15s"}})
    objects = helm.render([CI_DIR / "single-pbx-values.yaml", path])
    names = [o["metadata"]["name"] for o in by_kind(objects, "ServiceMonitor")]
    assert not [n for n in names if n.endswith("-agents")]
    without_api = helm.render([CI_DIR / "single-pbx-values.yaml", path], monitoring=False)
    (connector,) = by_kind(without_api, "AsteriskConnector")
    assert "monitoring" not in connector["spec"]
    (connector,) = by_kind(objects, "AsteriskConnector")
    assert connector["spec"]["monitoring"] == {
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "labels": {"release": "kube-prometheus-stack"},
        }
    }


def _operator_objects(objects: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
    (service,) = [
        o for o in by_kind(objects, "Service") if o["metadata"]["name"].endswith("-operator")
    ]
    (deployment,) = by_kind(objects, "Deployment")
    sms = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-operator")
    ]
    return service, deployment, sms


def test_the_operator_service_monitor_scrapes_the_operators_metrics_port(helm: Helm):
    """ServiceMonitor -> Service -> pod -> container port -> the port the operator serves."""
    service, deployment, (sm,) = _operator_objects(single(helm))
    # The ServiceMonitor selects the operator Service, in its namespace...
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    # ... by a port name the Service has, whose targetPort names a container port ...
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    # ... which is the port the operator is told to serve /metrics on.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIPSTACK_METRICS_PORT"] == str(container_port["containerPort"])
    assert container_port["containerPort"] == 9090
    # The job label of the operator's series is its app name (used by nothing else).
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"


def test_the_operator_serves_metrics_without_a_service_monitor(
    helm: Helm, write_values: Callable[[Any], Path]
):
    path = write_values({"serviceMonitor": {"operator": {"enabled": False, "metricsPort": 9400}}})
    service, deployment, sms = _operator_objects(
        helm.render([CI_DIR / "single-pbx-values.yaml", path])
    )
    assert sms == []
    assert {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9400, "protocol": "TCP"} in container["ports"]
    (rule,) = by_kind(helm.render([CI_DIR / "single-pbx-values.yaml", path]), "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "SipstackReconcileFailing" not in alerts  # nothing scrapes its series


def test_the_served_operator_port_is_the_one_the_chart_scrapes(
    helm: Helm, served: dict[str, set[str]]
):
    """The operator's default port (OperatorConfig) is the chart's metricsPort."""
    from sipstack_operator.config import OperatorConfig

    _, deployment, _ = _operator_objects(single(helm))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert OperatorConfig().metrics_port == port["containerPort"]
    assert "sipstack_operator_build_info" in served


def test_operator_down_alert_watches_the_operator_deployment(helm: Helm):
    objects = single(helm)
    (deployment,) = by_kind(objects, "Deployment")
    (rule,) = by_kind(objects, "PrometheusRule")
    (alert,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r["alert"] == "SipstackOperatorDown"
    ]
    assert f'deployment="{deployment["metadata"]["name"]}"' in alert["expr"]


def test_watch_namespaces_become_the_fleet_namespace_selector(helm: Helm):
    objects = helm.render([CI_DIR / "fleet-50-values.yaml"])
    (fleet,) = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-agents")
    ]
    assert fleet["spec"]["namespaceSelector"] == {"matchNames": ["sipstack-system", "pbx-fleet"]}
    assert fleet["spec"]["endpoints"][0]["interval"] == "60s"


# monitoring.coreos.com/v1 schemas generated from the pydantic models of
# cloudcoil-models-prometheus-operator 0.80.1.0 (see their $comment), closed with
# additionalProperties: false, so an unknown or misspelt field fails. To
# regenerate: pip install --target /tmp/cc --no-deps cloudcoil==0.6.0
# cloudcoil-models-prometheus-operator==0.80.1.0, then with PYTHONPATH=/tmp/cc:
#   schema = v1.<Kind>.model_json_schema(by_alias=True), add additionalProperties:
#   false to every object with properties. (cloudcoil itself is not installed in
#   the venv: its pytest plugin breaks pytest without filelock.)
DATA = Path(__file__).parent / "data"
UPSTREAM = {
    kind: json.loads((DATA / f"{kind.lower()}.v1.schema.json").read_text())
    for kind in ("ServiceMonitor", "PrometheusRule")
}


@pytest.mark.parametrize("values", ["single-pbx-values.yaml", "fleet-50-values.yaml"])
def test_monitoring_objects_match_the_upstream_schema(
    helm: Helm, write_values: Callable[[Any], Path], values: str
):
    extra = write_values({"serviceMonitor": {"operator": {"enabled": True}}})
    objects = helm.render([CI_DIR / values, extra])
    checked = 0
    for obj in by_kind(objects, "ServiceMonitor") + by_kind(objects, "PrometheusRule"):
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        validator = jsonschema.Draft202012Validator(UPSTREAM[obj["kind"]])
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: {errors}"
        checked += 1
    assert checked == 3


def test_upstream_schemas_are_closed():
    """A misspelt key fails against the generated schemas (they are strict)."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "30s"}]},
    }
    validator = jsonschema.Draft202012Validator(UPSTREAM["ServiceMonitor"])
    assert any("intervall" in e.message for e in validator.iter_errors(bad))
