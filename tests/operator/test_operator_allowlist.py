"""The allow-list's settings (allowlist.py): parsed once, errors name the variable."""

from __future__ import annotations

import pytest
from sipstack_agent.rules.api_urls import REGION_HOSTS as AGENT_REGION_HOSTS
from sipstack_operator.allowlist import AllowList, AllowListError, image_repository
from sipstack_operator.config import OperatorConfig
from sipstack_operator.spec import REGION_HOSTS, parse_spec

BASE = {
    "region": "us1",
    "apiKeySecretRef": {"name": "api", "key": "api-key"},
    "customerId": 1,
    "database": {"type": "mysql", "host": "10.0.0.5", "name": "cdr", "user": "ro"},
}


def test_the_default_api_hosts_are_the_agents_regional_hosts() -> None:
    assert dict(REGION_HOSTS) == AGENT_REGION_HOSTS
    allow = OperatorConfig.from_env({}).allow
    assert allow.api_hosts == frozenset(AGENT_REGION_HOSTS.values())


def test_defaults_follow_the_default_image() -> None:
    allow = OperatorConfig.from_env({"SIPSTACK_AGENT_IMAGE": "reg.example:5000/ops/agent:2"}).allow
    assert allow.image_repositories == ("reg.example:5000/ops/agent",)
    assert "hostPath" not in allow.volume_types and "nfs" not in allow.volume_types
    assert allow.secret_label == ("sipstack.com/connector-secret", "true")


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("sipstack/connector-asterisk:0.14.0", "sipstack/connector-asterisk"),
        ("reg.example:5000/a/b@sha256:" + "0" * 64, "reg.example:5000/a/b"),
        ("reg.example:5000/a/b", "reg.example:5000/a/b"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SIPSTACK_ALLOWED_API_HOSTS": "https://api.example.com/"}, "SIPSTACK_ALLOWED_API_HOSTS"),
        (
            {"SIPSTACK_ALLOWED_IMAGE_REPOSITORIES": "sipstack/agent:1"},
            "SIPSTACK_ALLOWED_IMAGE_REPOSITORIES",
        ),
        ({"SIPSTACK_ALLOWED_VOLUME_TYPES": "host-path"}, "SIPSTACK_ALLOWED_VOLUME_TYPES"),
        ({"SIPSTACK_SECRET_LABEL": "just-a-key"}, "SIPSTACK_SECRET_LABEL"),
        ({"SIPSTACK_ALLOW_INSECURE_HTTP": "yes"}, "SIPSTACK_ALLOW_INSECURE_HTTP"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(AllowListError, match=variable):
        OperatorConfig.from_env(env)


def test_rules_and_wildcards() -> None:
    allow = AllowList.from_env(
        {
            "SIPSTACK_ALLOWED_API_HOSTS": "collector.example.com:8443",
            "SIPSTACK_ALLOWED_IMAGE_REPOSITORIES": "reg.example/sipstack/",
            "SIPSTACK_ALLOWED_VOLUME_TYPES": "nfs",
            "SIPSTACK_SECRET_LABEL": "*",
        },
        default_image="sipstack/connector-asterisk:1",
    )
    ok = parse_spec(
        "a",
        "ns",
        {
            **BASE,
            "apiUrl": "https://collector.example.com:8443/v1/calls",
            "image": "reg.example/sipstack/agent:1",
            "recordings": {
                "enabled": True,
                "paths": ["/rec"],
                "volume": {"nfs": {"server": "nfs", "path": "/x"}},
            },
        },
    )
    assert allow.check_spec(ok) == []
    assert allow.check_secret({"metadata": {"name": "any"}}) is None
    region_only = parse_spec("a", "ns", BASE)
    (problem,) = allow.check_spec(region_only)  # us1's host is not in this list
    assert "api-us1.sipstack.com" in problem


PLAINTEXT = {
    **BASE,
    "apiUrl": "http://collector.internal:8080/v1/calls",
    "apiAllowInsecureHttp": True,
}
PLAINTEXT_HOST = {"SIPSTACK_ALLOWED_API_HOSTS": "collector.internal:8080"}


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({}, True),  # the default: refused
        ({"SIPSTACK_ALLOW_INSECURE_HTTP": "false"}, True),
        ({"SIPSTACK_ALLOW_INSECURE_HTTP": "true"}, False),
        ({"SIPSTACK_ALLOW_INSECURE_HTTP": "True"}, False),
    ],
)
def test_api_allow_insecure_http_needs_the_install(env: dict[str, str], refused: bool) -> None:
    allow = OperatorConfig.from_env({**PLAINTEXT_HOST, **env}).allow
    problems = allow.check_spec(parse_spec("a", "ns", PLAINTEXT))
    if refused:
        (problem,) = problems
        assert problem.startswith("spec.apiAllowInsecureHttp: ")
        assert "SIPSTACK_ALLOW_INSECURE_HTTP" in problem
    else:
        assert problems == []


def test_https_and_loopback_http_need_no_insecure_setting() -> None:
    allow = OperatorConfig.from_env({"SIPSTACK_ALLOWED_API_HOSTS": "*"}).allow
    assert allow.insecure_http is False
    for url in ("https://collector.internal/v1/calls", "http://127.0.0.1:8080/v1/calls"):
        assert allow.check_spec(parse_spec("a", "ns", {**BASE, "apiUrl": url})) == []
