"""The real operator (kopf.testing.KopfRunner + sipstack_operator.handlers)
against an in-memory Kubernetes API (kmock + tests/operator/kmock_emulator.py).

kmock runs on the test's event loop, the operator in KopfRunner's thread:
the tests only ever await (never block) while the operator runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.web
import jsonschema
import kmock
import pytest
import yaml
from kopf.testing import KopfRunner
from sipstack_operator import handlers
from sipstack_operator.config import OperatorConfig
from sipstack_operator.render import HASH_ANNOTATION

from .kmock_emulator import Emulator
from .operator_testlib import ROOT, agent_status_doc, strip_for_draft4

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

NS = "telephony"
CONNECTORS = kmock.resource("sipstack.com", "v1alpha1", "asteriskconnectors")
SECRETS = kmock.resource("", "v1", "secrets")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
PVCS = kmock.resource("", "v1", "persistentvolumeclaims")
SERVICEMONITORS = kmock.resource("monitoring.coreos.com", "v1", "servicemonitors")
EVENTS = kmock.resource("", "v1", "events")

API_KEY = "sk_0123456789abcdef0123456789abcdef"
DB_PASSWORD = "s3cret-db-pass"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, data: dict[str, str], *, labelled: bool = True) -> dict[str, Any]:
    """A Secret; `labelled`: with the opt-in label the operator's allow-list asks for."""
    labels = {"sipstack.com/connector-secret": "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "type": "Opaque",
        "data": {k: b64(v) for k, v in data.items()},
    }


def connector(name: str = "pbx-east", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "sipstack.com/v1alpha1",
        "kind": "AsteriskConnector",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "region": "us1",
            "apiKeySecretRef": {"name": "sipstack-api", "key": "api-key"},
            "customerId": 4711,
            "database": {
                "type": "postgresql",
                "host": "pg.example.com",
                "name": "asteriskcdrdb",
                "user": "sipstack_ro",
                "passwordSecretRef": {"name": "pbx-db", "key": "password"},
            },
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture()
async def cluster(kmock: Emulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    kmock.resources.load_bundled()
    kmock.resources[CONNECTORS] = kmock.ResourceInfo(
        kind="AsteriskConnector",
        singular="asteriskconnector",
        namespaced=True,
        shortnames={"astconn"},
        verbs={"list", "watch", "get", "create", "patch", "delete"},
        subresources={"status"},
    )
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
        "current-context": "kmock",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return kmock


def with_service_monitors(cluster: Emulator) -> None:
    cluster.resources[SERVICEMONITORS] = cluster.ResourceInfo(
        kind="ServiceMonitor",
        namespaced=True,
        verbs={"list", "watch", "get", "create", "patch", "delete"},
    )


@pytest.fixture()
async def agent_status(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """A stand-in for the agents' /status endpoints; the test edits the dict."""
    doc = agent_status_doc(
        backlog={"outbox_depth": 7},
        shipper={"last_success_at": "2026-11-25T21:00:00+00:00", "last_error": None},
    )

    async def handle(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(doc)

    app = aiohttp.web.Application()
    app.router.add_get("/{namespace}/{name}/status", handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = OperatorConfig.from_env()
    monkeypatch.setattr(
        handlers,
        "CONFIG",
        OperatorConfig(
            default_image=config.default_image,
            status_interval=config.status_interval,
            agent_status_url=f"http://127.0.0.1:{port}/{{namespace}}/{{name}}/status",
            agent_status_timeout=1.0,
            retry_base=config.retry_base,
            retry_cap=config.retry_cap,
        ),
    )
    yield doc
    await runner.cleanup()


@contextlib.asynccontextmanager
async def operator(*extra: str) -> AsyncIterator[KopfRunner]:
    runner = KopfRunner(
        ["run", "--standalone", "--namespace", NS, "-m", "sipstack_operator.handlers", *extra],
        timeout=30,
    )
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    assert runner.exception is None, runner.output


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (KeyError, IndexError, TypeError, ValueError):
            last = None
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


# --------------------------------------------------------------------------- API helpers


def obj(cluster: Emulator, resource: Any, name: str) -> dict[str, Any] | None:
    key = (resource, NS, name)
    if key not in cluster.objects or cluster.objects[key].deleted:
        return None
    return copy.deepcopy(cluster.objects[key].raw)


def names(cluster: Emulator, resource: Any) -> list[str]:
    return sorted(
        n
        for (r, ns, n), o in cluster.objects.items()
        if r == resource and ns == NS and not o.deleted
    )


def condition(cluster: Emulator, name: str, kind: str) -> dict[str, Any] | None:
    body = obj(cluster, CONNECTORS, name) or {}
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def pod_hash(cluster: Emulator, name: str) -> str | None:
    dep = obj(cluster, DEPLOYMENTS, f"{name}-agent")
    if dep is None:
        return None
    return dep["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]


async def create(cluster: Emulator, body: dict[str, Any]) -> None:
    group = body["apiVersion"].rsplit("/", 1)[0] if "/" in body["apiVersion"] else ""
    plural = {"Secret": "secrets", "AsteriskConnector": "asteriskconnectors"}[body["kind"]]
    base = f"/apis/{body['apiVersion']}" if group else f"/api/{body['apiVersion']}"
    async with cluster.post(f"{base}/namespaces/{NS}/{plural}", json=body) as resp:
        assert resp.status < 300, await resp.text()


async def patch(cluster: Emulator, path: str, body: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.patch(path, data=json.dumps(body), headers=headers) as resp:
        assert resp.status < 300, await resp.text()


async def delete(cluster: Emulator, path: str) -> None:
    async with cluster.delete(path) as resp:
        assert resp.status < 300, await resp.text()


CR_PATH = f"/apis/sipstack.com/v1alpha1/namespaces/{NS}/asteriskconnectors"
SECRET_PATH = f"/api/v1/namespaces/{NS}/secrets"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"


async def make_ready(cluster: Emulator, name: str) -> None:
    """No controllers in kmock: play the Deployment controller (once the operator has
    applied the Deployment: its other children, e.g. the control Secret, come first)."""
    await eventually(
        lambda: obj(cluster, DEPLOYMENTS, f"{name}-agent"), timeout=30, what="the Deployment"
    )
    await patch(
        cluster,
        f"{DEPLOYMENT_PATH}/{name}-agent/status",
        {"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}},
    )


async def seed(cluster: Emulator) -> None:
    await create(cluster, secret("sipstack-api", {"api-key": API_KEY}))
    await create(cluster, secret("pbx-db", {"password": DB_PASSWORD}))


def assert_no_secret_values(cluster: Emulator, *values: str) -> None:
    """No value in a CR, an event or any child (the operator's Secrets decoded too):
    the credentials stay in the user's Secrets, which the agent mounts."""
    texts: list[str] = []
    for (resource, _ns, _name), o in cluster.objects.items():
        if o.deleted:
            continue
        managed = (o.raw.get("metadata") or {}).get("labels", {}).get(
            "app.kubernetes.io/managed-by"
        ) == "sipstack-operator"
        if resource == SECRETS and not managed:
            continue  # the user's own Secrets
        texts.append(json.dumps(o.raw))
        if resource == SECRETS:
            texts += [base64.b64decode(v).decode() for v in (o.raw.get("data") or {}).values()]
    assert texts
    for value in values:
        assert all(value not in text for text in texts)


# --------------------------------------------------------------------------- scenarios


async def test_create_yields_owned_children_and_status(
    cluster: Emulator, agent_status: dict[str, Any], crd_schema: dict[str, Any]
) -> None:
    with_service_monitors(cluster)
    await seed(cluster)
    await create(
        cluster,
        connector(monitoring={"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}),
    )
    async with operator():
        await eventually(lambda: obj(cluster, SERVICEMONITORS, "pbx-east-agent"), what="children")
        cr = obj(cluster, CONNECTORS, "pbx-east")
        assert cr is not None
        uid = cr["metadata"]["uid"]
        for resource, child in [
            (SECRETS, "pbx-east-agent-env"),
            (DEPLOYMENTS, "pbx-east-agent"),
            (PVCS, "pbx-east-state"),
            (SERVICES, "pbx-east-metrics"),
            (SERVICEMONITORS, "pbx-east-agent"),
        ]:
            child_obj = obj(cluster, resource, child)
            assert child_obj is not None, child
            if resource == PVCS:  # retained by default: test_operator_delete_kmock.py
                assert "ownerReferences" not in child_obj["metadata"]
                continue
            refs = child_obj["metadata"]["ownerReferences"]
            assert refs == [
                {
                    "apiVersion": "sipstack.com/v1alpha1",
                    "kind": "AsteriskConnector",
                    "name": "pbx-east",
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        env = obj(cluster, SECRETS, "pbx-east-agent-env")
        assert env is not None
        assert "API_KEY" not in env["data"]  # a mounted file of the user's Secret
        assert base64.b64decode(env["data"]["API_KEY_FILE"]).decode() == (
            "/etc/sipstack/secrets/api-key"
        )
        assert base64.b64decode(env["data"]["CONNECTOR_ID"]).decode() == f"{NS}/pbx-east"

        await eventually(
            lambda: condition(cluster, "pbx-east", "SecretsResolved")["status"] == "True"
        )
        assert condition(cluster, "pbx-east", "AgentAvailable")["status"] == "False"
        assert condition(cluster, "pbx-east", "Ready")["status"] == "False"
        assert condition(cluster, "pbx-east", "MonitoringConfigured")["status"] == "True"

        # The Deployment becomes ready: the timer picks it up, and the agent's /status.
        await make_ready(cluster, "pbx-east")
        await eventually(lambda: condition(cluster, "pbx-east", "Ready")["status"] == "True")
        status = await eventually(
            lambda: (
                (obj(cluster, CONNECTORS, "pbx-east") or {})["status"].get("backlog") == 7
                and obj(cluster, CONNECTORS, "pbx-east")["status"]
            )
        )
        assert status["lastShippedAt"] == "2026-11-25T21:00:00Z"
        assert status["agent"]["readyReplicas"] == 1
        assert status["observedGeneration"] == cr["metadata"]["generation"]
        ready = condition(cluster, "pbx-east", "Ready")
        await asyncio.sleep(0.8)  # a few timer rounds: no transition, so no new time
        assert condition(cluster, "pbx-east", "Ready") == ready

        agent_status["shipper"]["last_error"] = f"401 from API with key {API_KEY}"
        await eventually(
            lambda: (
                obj(cluster, CONNECTORS, "pbx-east")["status"]
                .get("lastError", "")
                .startswith("401")
            )
        )
        # The status the operator wrote is valid for the CRD's status schema.
        full = obj(cluster, CONNECTORS, "pbx-east")
        full.pop("metadata")
        jsonschema.Draft4Validator(strip_for_draft4(crd_schema)).validate(full)
        # Events for the transitions, never a secret value anywhere.
        events = [o.raw for k, o in cluster.objects.items() if k[0] == EVENTS]
        assert any(e.get("reason") == "AgentReady" for e in events)
        assert_no_secret_values(cluster, API_KEY, DB_PASSWORD)


async def test_spec_change_changes_the_hash(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        before = await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 100}}})
        after = await eventually(
            lambda: (h := pod_hash(cluster, "pbx-east")) != before and h, what="new hash"
        )
        assert after != before
        env = obj(cluster, SECRETS, "pbx-east-agent-env")
        assert base64.b64decode(env["data"]["CDR_BATCH_SIZE"]).decode() == "100"


async def test_rotating_a_secret_rolls_the_agent(
    cluster: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await seed(cluster)
    await create(cluster, connector())
    async with operator("--debug"):
        before = await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await patch(cluster, f"{SECRET_PATH}/pbx-db", {"data": {"password": b64("rotated!")}})
        await eventually(lambda: pod_hash(cluster, "pbx-east") != before, what="new hash")
        assert_no_secret_values(cluster, "rotated!", API_KEY)
    # Not in the operator's logs either, even at DEBUG (kopf's included).
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    # Noticed by the status timer's read by name: the operator never watches Secrets.
    assert "Handler 'secret_changed'" not in logs
    assert any(r.levelno == logging.DEBUG and r.name.startswith("kopf") for r in caplog.records)
    for value in ("rotated!", DB_PASSWORD, API_KEY, b64("rotated!"), b64(API_KEY)):
        assert value not in logs


async def test_missing_key_then_fixed(cluster: Emulator) -> None:
    await create(cluster, secret("sipstack-api", {"wrong-key": API_KEY}))
    await create(cluster, secret("pbx-db", {"password": DB_PASSWORD}))
    await create(cluster, connector())
    async with operator():
        cond = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "SecretsResolved"))["status"] == "False" and c
            )
        )
        assert cond["reason"] == "SecretKeyNotFound"
        assert cond["message"] == "key 'api-key' not found in Secret 'sipstack-api'"
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is None
        requests_before = len(list(cluster))
        await asyncio.sleep(1.0)
        # Retries back off (0.5 s, 1 s, ...) plus the status timer: no busy loop.
        assert len(list(cluster)) - requests_before < 60
        await patch(cluster, f"{SECRET_PATH}/sipstack-api", {"data": {"api-key": b64(API_KEY)}})
        await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"), what="deployment")
        await eventually(
            lambda: condition(cluster, "pbx-east", "SecretsResolved")["status"] == "True"
        )


async def test_paused_scales_to_zero(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector(paused=True))
    async with operator():
        dep = await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"))
        assert dep["spec"]["replicas"] == 0
        cond = await eventually(lambda: condition(cluster, "pbx-east", "Ready"))
        assert (cond["status"], cond["reason"]) == ("False", "Paused")
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"paused": False}})
        await eventually(
            lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent")["spec"]["replicas"] == 1
        )


async def test_service_monitor_without_crd(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector(monitoring={"serviceMonitor": {"enabled": True}}))
    async with operator():
        cond = await eventually(lambda: condition(cluster, "pbx-east", "MonitoringConfigured"))
        assert (cond["status"], cond["reason"]) == ("False", "ServiceMonitorCRDMissing")
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is not None


async def test_delete_leaves_no_finalizer(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        cr = await eventually(
            lambda: (
                (o := obj(cluster, CONNECTORS, "pbx-east"))
                and o["metadata"].get("finalizers")
                and o
            )
        )
        assert cr["metadata"]["finalizers"] == ["sipstack.com/operator"]
        await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"))
        await delete(cluster, f"{CR_PATH}/pbx-east")
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")
        # Garbage collection (emulated) takes the children with it.
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is None
        assert obj(cluster, SECRETS, "pbx-east-agent-env") is None


async def test_restart_creates_no_duplicates(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    await create(cluster, connector("pbx-west"))
    async with operator():
        await eventually(lambda: pod_hash(cluster, "pbx-east") and pod_hash(cluster, "pbx-west"))
        await eventually(
            lambda: condition(cluster, "pbx-west", "SecretsResolved")["status"] == "True"
        )
    first = {
        r: {n: obj(cluster, r, n)["metadata"]["uid"] for n in names(cluster, r)}
        for r in (SECRETS, DEPLOYMENTS, PVCS, SERVICES)
    }
    rv = obj(cluster, DEPLOYMENTS, "pbx-east-agent")["metadata"]["resourceVersion"]
    async with operator():
        await asyncio.sleep(1.0)
        second = {
            r: {n: obj(cluster, r, n)["metadata"]["uid"] for n in names(cluster, r)}
            for r in (SECRETS, DEPLOYMENTS, PVCS, SERVICES)
        }
    assert second == first
    assert names(cluster, DEPLOYMENTS) == ["pbx-east-agent", "pbx-west-agent"]
    # Nothing changed, so the re-apply on resume did not even write the Deployment.
    assert obj(cluster, DEPLOYMENTS, "pbx-east-agent")["metadata"]["resourceVersion"] == rv


async def test_the_cli_runs_the_operator_with_a_liveness_endpoint(
    cluster: Emulator, unused_tcp_port: int
) -> None:
    """`sipstack-operator run` as a real process: reconciles, answers liveness, stops on SIGTERM."""
    await seed(cluster)
    await create(cluster, connector())
    liveness = f"http://127.0.0.1:{unused_tcp_port}/healthz"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sipstack_operator.cli",
        "run",
        "--standalone",  # peering: test_operator_peering_kmock.py
        "--namespace",
        NS,
        "--liveness",
        liveness,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: pod_hash(cluster, "pbx-east"), timeout=20, what="deployment")
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(liveness) as resp:
                        assert resp.status == 200
                        assert "connectors" in await resp.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("no liveness endpoint")
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    for value in (API_KEY, DB_PASSWORD):
        assert value not in stderr.decode()
