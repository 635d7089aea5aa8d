"""requirements/*.lock (tools/lock-deps.py) and the Dockerfiles that install from them.

Parsed as text (no Docker engine, no network): every dependency pyproject.toml names
is pinned with sha256 hashes, the lock is closed under the packages' own requirements
(read from the tested venv's metadata), the pins are the versions the tests ran with,
and the images install with --require-hashes from a base image pinned by digest."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .chartlib import ROOT
from .test_images import IMAGES, stages

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"Dockerfile.agent": "agent", "Dockerfile.operator": "operator"}
EXTRAS = {"agent": (), "operator": ("operator",)}
IMAGE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.8",
                "sys_platform": "linux", "platform_system": "Linux",
                "platform_machine": "x86_64", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "os_name": "posix"}  # fmt: skip
DIGEST = re.compile(r"^python:3\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}$")


def read_lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, [sha256, ...])}; fails on a line that is not a pin."""
    text = re.sub(r"\\\n", " ", (ROOT / "requirements" / f"{name}.lock").read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)\s*", line)
        assert m, f"{name}.lock: not a hashed pin: {line!r}"
        out[canonicalize_name(m[1])] = (m[2], re.findall(r"sha256:([0-9a-f]{64})", m[3]))
    return out


def top_level(image: str) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in EXTRAS[image]:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_every_dependency_is_pinned_with_a_hash(image: str) -> None:
    lock = read_lock(image)
    for req in top_level(image):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject.toml) missing from {image}.lock"
        version, hashes = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} vs {req}"
        assert hashes, name


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_the_lock_is_closed_and_is_what_the_tests_ran(image: str) -> None:
    lock = read_lock(image)
    env = {**default_environment(), **IMAGE_PYTHON}
    for name, (version, _) in lock.items():
        assert md.version(name) == version, f"{name}: locked {version}, tested {md.version(name)}"
        for raw in md.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                dep = canonicalize_name(req.name)
                assert dep in lock, f"{name} needs {req}, not in {image}.lock"
                assert req.specifier.contains(lock[dep][0], prereleases=True), (name, req)
    assert canonicalize_name(PYPROJECT["project"]["name"]) not in lock


def test_the_build_tools_are_locked() -> None:
    lock = read_lock("build")
    for raw in PYPROJECT["build-system"]["requires"]:
        req = Requirement(raw)
        assert req.specifier.contains(lock[canonicalize_name(req.name)][0])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_install_only_hashed_pins(name: str) -> None:
    text = (ROOT / name).read_text()
    args = dict(re.findall(r"^ARG ([A-Z_]+)=(\S+)$", text.split("\nFROM ", 1)[0], re.M))
    all_stages = stages(text)
    for stage in all_stages:
        base = stage[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
        assert DIGEST.match(base), f"{name}: base image {base!r} is not pinned by digest"
    builder, final = all_stages[0], all_stages[-1]
    lock = LOCKS[name]
    build = " ".join(" ".join(a.split()) for i, a in builder if i == "RUN")
    assert "--require-hashes --no-deps -r requirements/build.lock" in build
    assert re.search(rf"pip download --require-hashes --no-deps .*-r requirements/{lock}\.lock",
                     build)  # fmt: skip
    assert "--no-build-isolation" in build, "no unpinned build tools fetched for the wheel"
    runs = " ".join(" ".join(a.split()) for i, a in final if i == "RUN")
    assert "--require-hashes --no-deps -r /wheels/requirements.lock" in runs
    assert f"cp requirements/{lock}.lock /wheels/requirements.lock" in build
    assert "pip check" in runs, "the lock covers every requirement"
    assert "!requirements/" in (ROOT / ".dockerignore").read_text().splitlines()  # in the context
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert all("--no-index" in i for i in installs), installs


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_the_sbom_lists_the_lock(image: str) -> None:
    """sbom/<image>.cdx.json (tools/sbom.sh, cyclonedx-py) names every locked wheel."""
    bom = json.loads((ROOT / "sbom" / f"{image}.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX"
    listed = {
        canonicalize_name(c["name"]): (
            c["version"],
            sorted(h["content"] for r in c.get("externalReferences", []) for h in r["hashes"]),
        )
        for c in bom["components"]
    }
    want = {name: (v, sorted(h)) for name, (v, h) in read_lock(image).items()}
    assert listed == want, "sbom is stale: run tools/sbom.sh"
    assert all(c["purl"].startswith("pkg:pypi/") for c in bom["components"])


def test_both_images_share_one_base_image() -> None:
    """One base image for the agent and the operator: a bump changes both or the test fails."""
    bases = {
        name: re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / name).read_text(), re.M)
        for name in sorted(IMAGES)
    }
    assert all(len(b) == 1 for b in bases.values()), bases
    assert len({b[0] for b in bases.values()}) == 1, bases
