"""Bench: the real operator (`sipstack-operator run`, a subprocess) reconciling
N AsteriskConnectors against kmock (the in-memory API of tests/operator/kmock_emulator.py).

    .venv/bin/python bench/operator_reconcile.py [--count 200]

Phases, each timed until every connector is done:
  1. start: N connectors exist; the operator starts, applies 4 children each
     and writes SecretsResolved=True;
  2. rotate: the API-key Secret all of them share is rotated; every agent's
     config hash must change (the secret index fans one event out to N).
Prints seconds per phase and the operator process's RSS (peak of samples).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import kmock
import psutil
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))
sys.path.insert(0, str(ROOT / "operator"))

from kmock_emulator import Emulator  # noqa: E402


class BenchEmulator(Emulator):
    request_log_limit = 20


NS = "bench"
CONNECTORS = kmock.resource("sipstack.com", "v1alpha1", "asteriskconnectors")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
HASH = "sipstack.com/config-hash"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def connector(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "sipstack.com/v1alpha1",
        "kind": "AsteriskConnector",
        "metadata": {"name": f"pbx-{i:04d}", "namespace": NS},
        "spec": {
            "region": "us1",
            "apiKeySecretRef": {"name": "sipstack-api"},
            "customerId": 1000 + i,
            "database": {
                "type": "postgresql",
                "host": f"db-{i}.example.com",
                "name": "asteriskcdrdb",
                "user": "ro",
                "passwordSecretRef": {"name": "pbx-db"},
            },
        },
    }


def start_operator(env: dict[str, str], log: str | None) -> subprocess.Popen[bytes]:
    stderr = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the child
    return subprocess.Popen(
        [sys.executable, "-m", "sipstack_operator.cli", "run", "--standalone", "--namespace", NS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


async def post(server: Emulator, path: str, body: dict[str, Any]) -> None:
    async with server.post(path, json=body) as resp:
        assert resp.status < 300, await resp.text()


def hashes(server: Emulator, count: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(count):
        key = (DEPLOYMENTS, NS, f"pbx-{i:04d}-agent")
        if key in server.objects and not server.objects[key].deleted:
            raw = server.objects[key].raw
            out[key[2]] = raw["spec"]["template"]["metadata"]["annotations"][HASH]
    return out


def resolved(server: Emulator, count: int) -> int:
    done = 0
    for i in range(count):
        key = (CONNECTORS, NS, f"pbx-{i:04d}")
        if key not in server.objects:
            continue
        for cond in (server.objects[key].raw.get("status") or {}).get("conditions") or []:
            if cond["type"] == "SecretsResolved" and cond["status"] == "True":
                done += 1
    return done


async def wait(predicate: Any, proc: psutil.Process, peak: list[int], timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout}s")
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.NoSuchProcess:
            raise SystemExit("the operator died") from None
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def main(count: int, timeout: float, log: str | None) -> None:
    async with BenchEmulator() as server, kmock.Server(server):
        server.resources.load_bundled()
        server.resources[CONNECTORS] = kmock.ResourceInfo(
            kind="AsteriskConnector",
            namespaced=True,
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources={"status"},
        )
        secrets = f"/api/v1/namespaces/{NS}/secrets"
        for name, data in (
            ("sipstack-api", {"api-key": "sk_" + "a" * 32}),
            ("pbx-db", {"password": "pw"}),
        ):
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "data": {k: b64(v) for k, v in data.items()},
            }
            await post(server, secrets, body)
        for i in range(count):
            await post(
                server,
                f"/apis/sipstack.com/v1alpha1/namespaces/{NS}/asteriskconnectors",
                connector(i),
            )

        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = pathlib.Path(tmp) / "kubeconfig"
            kubeconfig.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [
                            {"name": "k", "cluster": {"server": str(server.url).rstrip("/")}}
                        ],
                        "users": [{"name": "u", "user": {"token": "t"}}],
                        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}],
                        "current-context": "k",
                    }
                )
            )
            env = {
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "PYTHONPATH": str(ROOT / "operator"),
                "SIPSTACK_STATUS_INTERVAL": "30",
            }
            started = time.monotonic()
            child = start_operator(env, log)
            proc = psutil.Process(child.pid)
            peak = [0]
            try:
                await wait(
                    lambda: (
                        len(hashes(server, count)) == count and resolved(server, count) == count
                    ),
                    proc,
                    peak,
                    timeout,
                )
                t_start = time.monotonic() - started
                before = hashes(server, count)
                t0 = time.monotonic()
                headers = {"Content-Type": "application/merge-patch+json"}
                patch = json.dumps({"data": {"api-key": b64("sk_" + "b" * 32)}})
                async with server.patch(
                    f"{secrets}/sipstack-api", data=patch, headers=headers
                ) as resp:
                    assert resp.status < 300
                await wait(
                    lambda: all(h != before[n] for n, h in hashes(server, count).items()),
                    proc,
                    peak,
                    timeout,
                )
                t_rotate = time.monotonic() - t0
                rss_now = proc.memory_info().rss
                cpu = proc.cpu_times()
                operator_cpu = cpu.user + cpu.system
                own = psutil.Process().cpu_times()
                kmock_cpu = own.user + own.system
            finally:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
    print(f"connectors: {count}")
    print(f"start + reconcile all: {t_start:.2f} s ({count / t_start:.0f} connectors/s)")
    print(f"rotate shared secret -> all rolled: {t_rotate:.2f} s")
    print(f"operator RSS: {rss_now / 2**20:.1f} MiB (peak sampled {peak[0] / 2**20:.1f} MiB)")
    print(f"CPU: operator {operator_cpu:.1f} s, kmock + bench {kmock_cpu:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--log", help="write the operator's log to this file")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.timeout, args.log))
