"""`sipstack-operator render` and the argument handling of `run`."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import pytest
import yaml
from sipstack_operator import cli

from .operator_testlib import EXAMPLES, GOLDEN, ROOT


def test_render_prints_the_golden_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "render",
            "-f",
            str(EXAMPLES / "pbx-east.yaml"),
            "--secrets",
            str(EXAMPLES / "secrets.yaml"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out == (GOLDEN / "pbx-east.yaml").read_text()
    assert out.err == ""


def test_render_needs_no_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --secrets (the default) the output is the operator's but for the hash."""
    assert cli.main(["render", "-f", str(EXAMPLES / "pbx-east.yaml")]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    golden = (GOLDEN / "pbx-east.yaml").read_text().splitlines()
    lines = out.out.splitlines()
    differ = [(a, b) for a, b in zip(golden, lines, strict=True) if a != b]
    assert [a.split(":")[0].strip() for a, _ in differ] == ["sipstack.com/config-hash"]


def test_render_names_a_key_missing_from_the_given_secrets(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: other}\nstringData: {a: b}\n")
    assert cli.main(["render", "-f", str(EXAMPLES / "pbx-csv.yaml"), "--secrets", str(path)]) == 0
    out = capsys.readouterr()
    kinds = [d["kind"] for d in yaml.safe_load_all(out.out)]
    assert kinds == ["Secret", "Secret", "PersistentVolumeClaim", "Deployment", "Service"]
    assert "key 'api-key' of Secret 'sipstack-api' not given" in out.err


def test_render_no_service_monitor_crd(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["render", "-f", str(EXAMPLES / "pbx-east.yaml"), "--no-service-monitor-crd"]
    assert cli.main(args) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert "ServiceMonitor" not in kinds


def test_render_rejects_an_invalid_spec(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cr = yaml.safe_load((EXAMPLES / "pbx-csv.yaml").read_text())
    del cr["spec"]["cel"]["csvPath"]
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(cr))
    assert cli.main(["render", "-f", str(path)]) == 2
    assert "csvPath is required" in capsys.readouterr().err


def test_render_needs_a_connector(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\n")
    assert cli.main(["render", "-f", str(path)]) == 2
    assert cli.main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2


def test_console_script_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sipstack_operator.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "operator")},
        check=False,
    )
    assert result.returncode == 0
    assert "sipstack-operator" in result.stdout


def _ns(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["run", *argv])


def test_run_namespace_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPSTACK_NAMESPACES", raising=False)
    monkeypatch.delenv("SIPSTACK_ALL_NAMESPACES", raising=False)
    assert cli._namespaces(_ns("-n", "a", "--namespace", "b")) == (False, ["a", "b"])
    assert cli._namespaces(_ns("--all-namespaces")) == (True, [])
    with pytest.raises(SystemExit):
        cli._namespaces(_ns("-n", "a", "-A"))
    with pytest.raises(SystemExit):
        cli._namespaces(_ns())
    monkeypatch.setenv("SIPSTACK_NAMESPACES", "x, y")
    assert cli._namespaces(_ns()) == (False, ["x", "y"])
    monkeypatch.delenv("SIPSTACK_NAMESPACES")
    monkeypatch.setenv("SIPSTACK_ALL_NAMESPACES", "true")
    assert cli._namespaces(_ns()) == (True, [])
    assert _ns("--liveness", "http://0.0.0.0:8080/healthz").liveness.endswith("/healthz")


def test_operator_never_imports_the_agent() -> None:
    for path in (ROOT / "operator" / "sipstack_operator").rglob("*.py"):
        assert "sipstack_agent" not in path.read_text(), path.name


def test_render_module_is_pure() -> None:
    text = (ROOT / "operator" / "sipstack_operator" / "render.py").read_text()
    for banned in (
        "import kopf",
        "import kubernetes",
        "from kubernetes",
        "import aiohttp",
        "open(",
    ):
        assert banned not in text
