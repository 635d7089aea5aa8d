"""`helm uninstall`'s pre-delete hook against the real operator: the chart's cleanup
Job arguments, run by the real kubectl against kmock while the real operator
(KopfRunner) holds the connectors' finalizer.

- With the operator running, `kubectl delete ... --wait` returns once the
  operator has finished the deletion: the connector and its children are gone.
- Without it (Helm's own uninstall order deletes the operator first), the same
  command times out and the connector stays Terminating - the failure the hook
  exists to prevent, and the reason it has a timeout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .kmock_emulator import Emulator
from .operator_testlib import ROOT
from .test_operator_kmock import (
    CONNECTORS,
    DEPLOYMENTS,
    NS,
    create,
    eventually,
    obj,
    operator,
    seed,
)
from .test_operator_kmock import cluster as cluster  # the fixture, re-exported

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(300)]

RELEASE = "sipstack"
# kopf releases the finalizer once the connector's status timer has stopped; a timer
# caught mid-run is polled every settings.background.cancellation_polling (60 s).
OPERATOR_WAIT = "150s"
TOOLS = ROOT / ".tools" / "bin"
VALUES = {
    "operator": {"watchNamespaces": [NS]},
    "connectors": [
        {
            "name": name,
            "namespace": NS,
            "region": "us1",
            "customerId": 4711,
            "apiKeySecretRef": {"name": "sipstack-api", "key": "api-key"},
            "database": {
                "type": "postgresql",
                "host": "pg.example.com",
                "name": "asteriskcdrdb",
                "user": "sipstack_ro",
                "passwordSecretRef": {"name": "pbx-db", "key": "password"},
            },
        }
        for name in ("pbx-east", "pbx-west")
    ],
}


@pytest.fixture(scope="module")
def chart_objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`helm template` of the chart with two connectors (the real helm, tools/fetch-helm.sh)."""
    fetched = subprocess.run(
        ["bash", str(ROOT / "tools" / "fetch-helm.sh")], capture_output=True, text=True, check=False
    )
    if fetched.returncode != 0 or not (TOOLS / "kubectl").exists():
        message = f"tools/fetch-helm.sh failed: {fetched.stderr[-500:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("helm")
    values = home / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    out = subprocess.run(
        [
            str(TOOLS / "helm"),
            "template",
            RELEASE,
            str(ROOT / "charts" / "sipstack-connector"),
            "--namespace",
            "sipstack-system",
            "-f",
            str(values),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def cleanup_commands(objects: list[dict[str, Any]], timeout: str) -> list[list[str]]:
    (job,) = [
        o
        for o in objects
        if o["kind"] == "Job"
        and "pre-delete" in o["metadata"]["annotations"].get("helm.sh/hook", "")
    ]
    commands = []
    for container in job["spec"]["template"]["spec"]["containers"]:
        args = [
            a if not a.startswith("--timeout=") else f"--timeout={timeout}"
            for a in container["args"]
        ]
        commands.append([*container["command"], *args])
    return commands


async def run_kubectl(command: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    assert command[0] == "kubectl"
    return await asyncio.to_thread(
        subprocess.run,
        [str(TOOLS / "kubectl"), *command[1:]],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={
            "HOME": str(kubeconfig.parent),
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": str(kubeconfig),
        },
    )


async def connectors_from_the_chart(cluster: Emulator, objects: list[dict[str, Any]]) -> None:
    await seed(cluster)
    for body in objects:
        if body["kind"] == "AsteriskConnector":
            await create(cluster, body)


async def test_cleanup_job_deletes_connectors_through_the_running_operator(
    cluster: Emulator, chart_objects: list[dict[str, Any]]
) -> None:
    kubeconfig = Path(os.environ["KUBECONFIG"])  # written by the cluster fixture
    await connectors_from_the_chart(cluster, chart_objects)
    (command,) = cleanup_commands(chart_objects, OPERATOR_WAIT)
    assert command[command.index("--namespace=" + NS) + 1 :][:2] == ["pbx-east", "pbx-west"]
    async with operator():
        for name in ("pbx-east", "pbx-west"):
            await eventually(lambda n=name: obj(cluster, DEPLOYMENTS, f"{n}-agent"), what="agent")
            await eventually(
                lambda n=name: (obj(cluster, CONNECTORS, n) or {})["metadata"].get("finalizers")
            )
        result = await run_kubectl(command, kubeconfig)
        assert result.returncode == 0, result.stderr
        assert obj(cluster, CONNECTORS, "pbx-east") is None
        assert obj(cluster, CONNECTORS, "pbx-west") is None
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is None  # children collected
    # Run again (helm uninstall retried): nothing left, still success.
    again = await run_kubectl(command, kubeconfig)
    assert again.returncode == 0, again.stderr


async def test_without_the_operator_the_cleanup_times_out(
    cluster: Emulator, chart_objects: list[dict[str, Any]]
) -> None:
    kubeconfig = Path(os.environ["KUBECONFIG"])  # written by the cluster fixture
    await connectors_from_the_chart(cluster, chart_objects)
    async with operator():
        await eventually(
            lambda: (obj(cluster, CONNECTORS, "pbx-east") or {})["metadata"].get("finalizers")
        )
    (command,) = cleanup_commands(chart_objects, "3s")
    result = await run_kubectl(command, kubeconfig)
    assert result.returncode != 0
    left = obj(cluster, CONNECTORS, "pbx-east")
    assert left is not None and left["metadata"].get("deletionTimestamp")  # Terminating
    assert left["metadata"]["finalizers"] == ["sipstack.com/operator"]


async def test_the_cleanup_waits_for_the_operator_to_finish(
    cluster: Emulator, chart_objects: list[dict[str, Any]]
) -> None:
    """kubectl is already waiting (watching) when the operator starts and finishes the job."""
    kubeconfig = Path(os.environ["KUBECONFIG"])
    await connectors_from_the_chart(cluster, chart_objects)
    async with operator():
        await eventually(
            lambda: (obj(cluster, CONNECTORS, "pbx-west") or {})["metadata"].get("finalizers")
        )
    (command,) = cleanup_commands(chart_objects, OPERATOR_WAIT)
    waiting = asyncio.ensure_future(run_kubectl(command, kubeconfig))
    await eventually(
        lambda: (obj(cluster, CONNECTORS, "pbx-east") or {})["metadata"].get("deletionTimestamp"),
        timeout=30,
        what="pbx-east Terminating",
    )
    assert not waiting.done()
    async with operator():
        result = await waiting
    assert result.returncode == 0, result.stderr
    assert obj(cluster, CONNECTORS, "pbx-east") is None
    assert obj(cluster, CONNECTORS, "pbx-west") is None
