"""Dockerfiles, compose file and .env.example, checked as text (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from sipstack_agent.config import KNOWN_VARIABLES

from .chartlib import CHART, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
IMAGES = {
    "Dockerfile.agent": {
        "entrypoint": "sipstack-agent",
        "port": "8000",
        "health": '["sipstack-agent", "healthcheck"]',  # GET /healthz on MONITORING_PORT
    },
    "Dockerfile.operator": {
        "entrypoint": "sipstack-operator",
        "port": "8080",
        "health": "8080/healthz",
    },
}
PINNED_BASE = re.compile(r"^python:3\.(1[1-9]|[2-9]\d)\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
SECRET_NAME = re.compile(r"(KEY|PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL)", re.IGNORECASE)
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|rustc|cargo)\b")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr in instructions(text):
        if instr[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instr)
    return result


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile(name: str):
    expect = IMAGES[name]
    text = (ROOT / name).read_text()
    all_stages = stages(text)
    assert len(all_stages) >= 2, "multi-stage build expected"
    global_args = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text.split("\nFROM ", 1)[0], re.M))
    for stage in all_stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], stage[0][1].split()[0])
        assert PINNED_BASE.match(base), f"base image {base!r} is not an exact slim Python 3.11+"
    builder, final = all_stages[0], all_stages[-1]
    assert any(i == "RUN" and "pip wheel" in a for i, a in builder), "wheels built in the builder"
    final_runs = " ".join(a for i, a in final if i == "RUN")
    assert "--no-index" in final_runs, "the final stage installs the builder's wheels only"
    assert not COMPILERS.search(final_runs), "no compilers in the final stage"
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] == "10001", "fixed non-root uid 10001"
    assert "useradd" in final_runs and "--uid 10001" in final_runs
    assert [a for i, a in final if i == "EXPOSE"] == [expect["port"]]
    (healthcheck,) = [a for i, a in final if i == "HEALTHCHECK"]
    assert expect["health"] in healthcheck
    assert "python" not in healthcheck or "urllib.request" in healthcheck
    assert "curl" not in healthcheck
    (entrypoint,) = [a for i, a in final if i == "ENTRYPOINT"]
    assert entrypoint == f'["{expect["entrypoint"]}"]'
    assert expect["entrypoint"] in SCRIPTS, "the entrypoint is a console script of pyproject.toml"
    labels = " ".join(a for i, a in final if i == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert ("ARG", f"VERSION={PYPROJECT['project']['version']}") in final
    for instr, args in instructions(text):
        if instr in ("ENV", "ARG"):
            for key in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                assert not SECRET_NAME.search(key), f"{instr} {key}: secrets never go in images"
        if instr in ("COPY", "ADD"):
            assert ".env" not in args.split() and "id_rsa" not in args


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_entrypoint_targets_exist(name: str):
    script = IMAGES[name]["entrypoint"]
    module, _, function = SCRIPTS[script].partition(":")
    package = module.split(".")[0]
    folder = {"sipstack_agent": "agent", "sipstack_operator": "operator"}[package]
    path = ROOT / folder / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not written yet")
    assert re.search(rf"^(async )?def {function}\(", path.read_text(), re.M)


def test_agent_image_is_read_only_friendly():
    text = (ROOT / "Dockerfile.agent").read_text()
    assert "STATE_DIR=/data" in text and 'VOLUME ["/data"]' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text


def test_versions_agree():
    version = PYPROJECT["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"SIPSTACK_VERSION:-{version}" in compose


def test_dockerignore_keeps_secrets_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in lines and "**/.env" in lines


CONFIG_DOC = ROOT / "docs" / "configuration.md"


def known_agent_variables() -> dict[str, set[str]]:
    """Variable names per source: documented (configuration.md) and read (the tables of
    sipstack_agent.config)."""
    sources: dict[str, set[str]] = {}
    if CONFIG_DOC.exists():
        sources["docs/configuration.md"] = set(
            re.findall(r"`([A-Z][A-Z0-9_]{2,})`", CONFIG_DOC.read_text())
        )
    sources["sipstack_agent.config"] = set(KNOWN_VARIABLES)
    return sources


def env_example_variables() -> list[str]:
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M)


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    agent = compose["services"]["sipstack-connector"]
    assert agent["network_mode"] == "host"
    assert agent["env_file"] == [".env"]
    assert agent["restart"] == "unless-stopped"
    assert any(v.split(":")[1] == "/data" for v in agent["volumes"])
    assert agent["read_only"] is True and "/tmp" in agent["tmpfs"]
    assert agent["build"]["dockerfile"] == "Dockerfile.agent"
    assert agent["user"] == "${PUID:-10001}:${PGID:-10001}"
    for key in agent.get("environment", {}):
        assert not SECRET_NAME.search(key), "secrets belong in .env"


def test_env_example_lists_the_agent_variables():
    found = env_example_variables()
    required = {
        "API_KEY",
        "REGION",
        "DB_TYPE",
        "DB_HOST",
        "DB_PORT",
        "DB_USER",
        "DB_PASSWORD",
        "DB_NAME",
        "DB_TABLE_CDR",
        "DB_TABLE_CEL",
        "CEL_MODE",
        "CUSTOMER_ID",
        "TENANT",
        "HOST_HOSTNAME",
        "DB_TIMEZONE",
        "START_FROM",
        "CALL_SHIPPING_MODE",
        "RECORDING_PATHS",
    }
    assert required <= set(found)
    assert len(found) == len(set(found)), "a variable is listed twice"
    values = dict(
        re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
    )
    for key in ("API_KEY", "DB_PASSWORD"):
        assert values.get(key, "") == "", f"{key} must be empty in .env.example"


def test_compose_and_env_example_use_only_known_variables():
    sources = known_agent_variables()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    used = set(env_example_variables()) | set(
        compose["services"]["sipstack-connector"].get("environment", {})
    )
    for source, known in sources.items():
        unknown = used - known
        assert not unknown, f"not agent variables according to {source}: {sorted(unknown)}"


def test_env_example_uses_the_canonical_names():
    if not CONFIG_DOC.exists():
        pytest.skip("docs/configuration.md is not written yet")
    text = CONFIG_DOC.read_text()
    aliases = set(re.findall(r"Alias `([A-Z][A-Z0-9_]+)`", text))
    aliases |= set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|[^|]*\| Alias of ", text, re.M))
    assert aliases, "docs/configuration.md names no aliases any more: update this test"
    used = set(env_example_variables())
    assert not used & aliases, f"old names in .env.example: {sorted(used & aliases)}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_builder_copies_what_the_build_needs(name: str):
    builder = stages((ROOT / name).read_text())[0]
    copied = {part.rstrip("/") for i, a in builder if i == "COPY" for part in a.split()[:-1]}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    needed |= set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"])
    assert needed <= copied, f"{name} builder misses {needed - copied}"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in needed:
        assert f"!{path}" in ignore or f"!{path}/" in ignore, f".dockerignore drops {path}"
