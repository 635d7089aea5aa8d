"""The operator's /metrics (issue 11 §7), served by the real operator
(KopfRunner + sipstack_operator.handlers against kmock) and scraped over
HTTP with prometheus_client's text parser: reconciles by result, failures by
reason, reconcile duration, connectors by condition, one info series per
connector (for the agent-target-missing alert), build info.
"""

from __future__ import annotations

import asyncio
import dataclasses
import platform
import socket
import time
from collections.abc import Callable
from contextlib import closing

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sipstack_operator import __version__, handlers
from sipstack_operator.config import OperatorConfig
from sipstack_operator.errors import ApplyError, SecretsUnresolvedError, failure_reason
from sipstack_operator.metrics import FAILURE_REASONS, OperatorMetrics
from sipstack_operator.spec import SpecError

from .fake_agent import FakeAgents
from .kmock_emulator import Emulator
from .test_operator_kmock import (  # the fixtures and helpers of the kmock scenarios
    CR_PATH,
    DEPLOYMENTS,
    NS,
    SERVICES,
    cluster,
    condition,
    connector,
    create,
    delete,
    make_ready,
    obj,
    operator,
    seed,
)

__all__ = ["cluster"]  # a fixture, used by name

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def scrape(url: str) -> tuple[set[str], Samples]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return {f.name for f in families}, samples


async def scraped_until(
    url: str, check: Callable[[Samples], bool], timeout: float = 15.0
) -> Samples:
    deadline = time.monotonic() + timeout
    last: Samples = {}
    while time.monotonic() < deadline:
        try:
            _, last = await scrape(url)
        except aiohttp.ClientConnectionError:
            last = {}
        if last and check(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last scrape: {sorted(last.items())}")


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def by_condition(samples: Samples, condition: str, status: str) -> float:
    return samples[key("sipstack_operator_connectors", condition=condition, status=status)]


def info(samples: Samples) -> dict[str, str]:
    """connector -> its paused label, from sipstack_operator_connector_info."""
    found: dict[str, str] = {}
    for (name, labels), value in samples.items():
        if name == "sipstack_operator_connector_info" and value == 1:
            got = dict(labels)
            assert got["connector_namespace"] == NS
            found[got["connector"]] = got["paused"]
    return found


def info_service(samples: Samples, connector: str) -> str:
    (service,) = [
        dict(labels)["connector_service"]
        for (name, labels), _ in samples.items()
        if name == "sipstack_operator_connector_info" and dict(labels)["connector"] == connector
    ]
    return service


@pytest.fixture
def metrics_url(monkeypatch: pytest.MonkeyPatch) -> str:
    port = free_port()
    monkeypatch.setattr(handlers, "CONFIG", dataclasses.replace(handlers.CONFIG, metrics_port=port))
    return f"http://127.0.0.1:{port}/metrics"


@pytest.mark.kmock(cls=Emulator)
@pytest.mark.timeout(60)
async def test_the_operator_serves_its_metrics(
    cluster: Emulator, metrics_url: str, agents: FakeAgents
) -> None:
    # pbx-east's agent reports an empty outbox: its deletion drains at once (a
    # running agent whose backlog cannot be read is waited for up to 600 s).
    agents.set_backlog(NS, "pbx-east", 0)
    await seed(cluster)
    await create(cluster, connector())
    await create(cluster, connector("pbx-paused", paused=True))
    await create(
        cluster, connector("pbx-nokey", apiKeySecretRef={"name": "missing", "key": "api-key"})
    )
    async with operator():
        await make_ready_when_created(cluster, "pbx-east")
        samples = await scraped_until(
            metrics_url,
            lambda s: (
                by_condition(s, "Ready", "True") == 1
                and by_condition(s, "Ready", "False") == 2
                and s[
                    key("sipstack_operator_reconcile_failures_total", reason="secrets_unresolved")
                ]
                >= 1
            ),
        )
        python = platform.python_version()
        assert samples[key("sipstack_operator_build_info", version=__version__, python=python)] == 1
        successes = samples[key("sipstack_operator_reconciles_total", result="success")]
        failures = samples[key("sipstack_operator_reconciles_total", result="failure")]
        assert successes >= 2  # pbx-east and pbx-paused
        assert failures >= 1  # pbx-nokey, retried with backoff
        assert samples[key("sipstack_operator_reconcile_duration_seconds_count")] == (
            successes + failures
        )
        for reason in FAILURE_REASONS:  # every reason exists from start-up, 0 or more
            assert key("sipstack_operator_reconcile_failures_total", reason=reason) in samples
        assert by_condition(samples, "SecretsResolved", "False") == 1
        assert by_condition(samples, "Ready", "Unknown") == 0
        assert info(samples) == {"pbx-east": "false", "pbx-paused": "true", "pbx-nokey": "false"}
        assert condition(cluster, "pbx-nokey", "Ready")["status"] == "False"
        # The info series names the agent Service the operator created (what `up` carries).
        service = obj(cluster, SERVICES, info_service(samples, "pbx-east"))
        assert service is not None
        assert service["metadata"]["labels"]["app.kubernetes.io/instance"] == "pbx-east"

        await delete(cluster, f"{CR_PATH}/pbx-east")
        samples = await scraped_until(metrics_url, lambda s: "pbx-east" not in info(s))
        assert by_condition(samples, "Ready", "True") == 0
    # Stopped with the operator.
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(metrics_url)


async def make_ready_when_created(cluster: Emulator, name: str) -> None:
    for _ in range(200):
        if obj(cluster, DEPLOYMENTS, f"{name}-agent") is not None:
            await make_ready(cluster, name)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no Deployment {name}-agent")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SpecError("spec.region must be set"), "invalid_spec"),
        (SecretsUnresolvedError(["Secret 'x' not found"]), "secrets_unresolved"),
        (ApplyError("applying children failed"), "apply_failed"),
        (RuntimeError("boom"), "error"),
    ],
)
def test_every_failure_reason_is_a_preinitialised_label(error: Exception, reason: str) -> None:
    assert failure_reason(error) == reason
    assert reason in FAILURE_REASONS
    metrics = OperatorMetrics()
    metrics.reconciled(0.1, reason)
    assert (
        metrics.registry.get_sample_value(
            "sipstack_operator_reconcile_failures_total", {"reason": reason}
        )
        == 1
    )


def test_a_bad_metrics_port_names_the_variable() -> None:
    with pytest.raises(ValueError, match="SIPSTACK_METRICS_PORT"):
        OperatorConfig.from_env({"SIPSTACK_METRICS_PORT": "http"})
    assert OperatorConfig.from_env({}).metrics_port == 9090
    assert OperatorConfig.from_env({"SIPSTACK_METRICS_PORT": "0"}).metrics_port == 0


def test_the_cli_refuses_a_bad_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from sipstack_operator import cli

    monkeypatch.setenv("SIPSTACK_METRICS_PORT", "99999")
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--namespace", "telephony"])
    assert "SIPSTACK_METRICS_PORT" in str(exc.value.code)
