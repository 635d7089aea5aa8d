"""The chart's alerts evaluated by Prometheus' own rule engine: the rules
rendered with the real helm, checked by `promtool check rules` and run by
`promtool test rules` (Prometheus' rule unit tests) on series shaped as the
real agent and operator serve them and as a ServiceMonitor target labels them.

promtool comes from Debian's prometheus package (tools/fetch-promtool.sh).
When it cannot be fetched the tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chartlib import CI_DIR, ROOT, Helm, by_kind
from .served_metrics import agent_series, operator_series

# Target labels a ServiceMonitor gives an agent's and the operator's series.
AGENT = {
    "namespace": "pbx",
    "service": "pbx-east-metrics",
    "job": "pbx-east-metrics",
    "pod": "pbx-east-agent-7d9f-abcde",
    "container": "agent",
    "endpoint": "metrics",
    "instance": "10.1.0.5:8000",
}
OPERATOR = {
    "namespace": "sipstack-system",
    "service": "sipstack-operator",
    "job": "sipstack-operator",
    "pod": "sipstack-operator-5c4b-xyz",
    "container": "operator",
    "endpoint": "metrics",
    "instance": "10.1.0.9:9090",
}


@pytest.fixture(scope="module")
def promtool() -> Iterator[Path]:
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-promtool.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        message = f"tools/fetch-promtool.sh failed: {proc.stderr.strip()[-2000:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    yield Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    return {**agent_series(tmp_path_factory.mktemp("agent")), **operator_series()}


@pytest.fixture(scope="module")
def groups(helm: Helm) -> list[dict[str, Any]]:
    (rule,) = by_kind(helm.render([CI_DIR / "single-pbx-values.yaml"]), "PrometheusRule")
    return list(rule["spec"]["groups"])


def series(served: Mapping[str, set[str]], name: str, **labels: str) -> str:
    """A promtool input series; its own labels must be ones the real /metrics serve."""
    assert name in served, name
    own = set(labels) - set(AGENT)
    assert own <= served[name], f"{name} has no label(s) {own - served[name]}"
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def run_promtool(
    promtool: Path, tmp_path: Path, groups: list[dict[str, Any]], tests: list[dict[str, Any]]
) -> None:
    # Annotations are checked by `promtool check rules`; the unit tests compare labels.
    bare = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}, sort_keys=False))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(
        [str(promtool), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def alert(name: str, at: str, *expected: Mapping[str, str]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": dict(labels)} for labels in expected],
    }


def test_promtool_accepts_the_rules_and_their_templates(
    promtool: Path, groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_the_unit_test_harness_fails_a_wrong_expectation(
    promtool: Path, groups: list[dict[str, Any]], served: dict[str, set[str]], tmp_path: Path
) -> None:
    """A series that never moves, expected to alert: promtool must say no."""
    quiet = series(
        served, "sipstack_dead_letters_total", kind="call", reason="retry_horizon", **AGENT
    )
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": quiet, "values": "0x60"}],
            "alert_rule_test": [
                alert("SipstackDeadLetters", "30m", {"severity": "warning", **AGENT})
            ],
        }
    ]
    with pytest.raises(AssertionError, match="SipstackDeadLetters"):
        run_promtool(promtool, tmp_path, groups, tests)


def test_dead_letters_alert_on_the_first_one(
    promtool: Path, groups: list[dict[str, Any]], served: dict[str, set[str]], tmp_path: Path
) -> None:
    def dead(reason: str, **target: str) -> str:
        return series(served, "sipstack_dead_letters_total", kind="call", reason=reason, **target)

    restarted = {**AGENT, "pod": "pbx-east-agent-7d9f-fghij", "instance": "10.1.0.6:8000"}
    expected = {"severity": "warning", "namespace": "pbx", "service": "pbx-east-metrics"}
    tests = [
        {
            "interval": "1m",
            "input_series": [
                # Pre-initialised at 0 from start-up; the first dead letter at 31m.
                {"series": dead("retry_horizon", **AGENT), "values": "0x30 1x29"},
                # Pre-initialised and never moving: never alerts.
                {"series": dead("invalid_payload", **AGENT), "values": "0x59"},
                # A set that appears with its first dead letter (an HTTP status), at 45m.
                {"series": dead("http_422", **AGENT), "values": "_x44 1x15"},
                # The agent restarts at 60m (a new pod): its sets start at 0 again.
                {"series": dead("retry_horizon", **restarted), "values": "_x60 0x30"},
            ],
            "alert_rule_test": [
                alert("SipstackDeadLetters", "30m"),
                alert(
                    "SipstackDeadLetters",
                    "33m",
                    {**expected, "kind": "call", "reason": "retry_horizon"},
                ),
                alert(
                    "SipstackDeadLetters", "46m", {**expected, "kind": "call", "reason": "http_422"}
                ),
                alert("SipstackDeadLetters", "58m"),
                alert("SipstackDeadLetters", "75m"),
            ],
        }
    ]
    run_promtool(promtool, tmp_path, groups, tests)


def test_a_connector_without_an_agent_target_alerts(
    promtool: Path, groups: list[dict[str, Any]], served: dict[str, set[str]], tmp_path: Path
) -> None:
    def info(connector: str, paused: str = "false") -> str:
        return series(
            served,
            "sipstack_operator_connector_info",
            connector_namespace="pbx",
            connector=connector,
            connector_service=f"{connector}-metrics",
            paused=paused,
            **OPERATOR,
        )

    def up(connector: str) -> str:
        target = {**AGENT, "service": f"{connector}-metrics", "job": f"{connector}-metrics"}
        target["pod"] = f"{connector}-agent-1-a"
        return "up{" + ", ".join(f'{k}="{v}"' for k, v in sorted(target.items())) + "}"

    missing = {"severity": "critical", "namespace": "pbx", "service": "pbx-east-metrics"}
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": info("pbx-east"), "values": "1x30"},  # Pending: never a target
                {"series": info("pbx-west"), "values": "1x30"},
                {"series": up("pbx-west"), "values": "1x30"},  # scraped fine
                {"series": info("pbx-down"), "values": "1x30"},
                {"series": up("pbx-down"), "values": "0x30"},  # a target that fails
                {"series": info("pbx-lab", paused="true"), "values": "1x30"},  # paused
            ],
            "alert_rule_test": [
                alert("SipstackAgentTargetMissing", "5m"),  # still within `for`
                alert("SipstackAgentTargetMissing", "15m", missing),
                alert(
                    "SipstackAgentDown",
                    "15m",
                    {
                        "severity": "critical",
                        **{k: v for k, v in AGENT.items()},
                        "service": "pbx-down-metrics",
                        "job": "pbx-down-metrics",
                        "pod": "pbx-down-agent-1-a",
                    },
                ),
            ],
        }
    ]
    run_promtool(promtool, tmp_path, groups, tests)


def test_reconciles_that_keep_failing_alert(
    promtool: Path, groups: list[dict[str, Any]], served: dict[str, set[str]], tmp_path: Path
) -> None:
    def failures(pod: str) -> str:
        return series(
            served,
            "sipstack_operator_reconcile_failures_total",
            reason="secrets_unresolved",
            **{**OPERATOR, "pod": pod},
        )

    tests = [
        {
            "interval": "1m",
            "input_series": [
                # A missing Secret: a retry fails every 5 minutes (the backoff cap).
                {"series": failures("sipstack-operator-a"), "values": "0+0.2x60"},
                # One failure, then fixed.
                {"series": failures("sipstack-operator-b"), "values": "0 1x60"},
            ],
            "alert_rule_test": [
                alert("SipstackReconcileFailing", "20m"),
                alert(
                    "SipstackReconcileFailing",
                    "50m",
                    {
                        "severity": "warning",
                        "namespace": "sipstack-system",
                        "pod": "sipstack-operator-a",
                    },
                ),
            ],
        }
    ]
    run_promtool(promtool, tmp_path, groups, tests)
