"""spec.apiUrl: the CRD (pattern + CEL rule), spec.py and the agent's own loader
agree on a table of URLs. The CRD and spec.py give the same verdict on every
row; the CRD never takes a URL the agent refuses (a CR the API server accepts
must not stop the agent with a configuration error); the few URLs the agent
takes and the CRD refuses are marked STRICTER in the table.

The operator never imports the agent; this test imports both.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import jsonschema
import pytest
from sipstack_agent.config import ConfigError, load_settings
from sipstack_operator.spec import (
    API_URL_LOOPBACK_HTTP,
    API_URL_PATTERN,
    CLEARTEXT_API_URL,
    SpecError,
    parse_resource,
)

from .operator_testlib import strip_for_draft4
from .test_operator_agent_env import pods
from .test_operator_crd import evaluate, rules
from .test_operator_render import MINIMAL

OK, REFUSED, STRICTER = "ok", "refused", "stricter"  # STRICTER: agent ok, CRD refuses

# (URL, apiAllowInsecureHttp, verdict)
TABLE: list[tuple[str, bool, str]] = [
    ("https://api-us1.sipstack.com/v1/mqs/connectors/asterisk/calls", False, OK),
    ("https://ingest.example.com", False, OK),
    ("https://ingest.example.com:8443/x?y=1#z", False, OK),
    ("HTTPS://Ingest.Example.COM/calls", False, OK),
    ("https://ingest.example.com:", False, OK),
    ("https://ingest.example.com:65535/", False, OK),
    ("https://[2001:db8::1]:8443/calls", False, OK),
    ("https://10.0.0.7/calls", False, OK),
    # cleartext: only to loopback, or with the explicit setting
    ("http://ingest.example.com/calls", False, REFUSED),
    ("http://ingest.example.com/calls", True, OK),
    ("HTTP://ingest.example.com/", False, REFUSED),
    ("http://10.0.0.7:8080/calls", False, REFUSED),
    ("http://localhost:8080/v1/mqs/connectors/asterisk/calls", False, OK),
    ("http://LOCALHOST/calls", False, OK),
    ("http://receiver.localhost:9000/", False, OK),
    ("http://127.0.0.1:8080/calls", False, OK),
    ("http://127.255.10.1/calls", False, OK),
    ("http://[::1]:8080/calls", False, OK),
    ("http://localhost.evil.example/calls", False, REFUSED),
    ("http://127.0.0.1.evil.example/calls", False, REFUSED),
    ("http://localhost@evil.example/calls", False, REFUSED),
    ("http://128.0.0.1/calls", False, REFUSED),
    ("http://127.0.0.01/calls", False, REFUSED),
    ("http://127.1/calls", False, REFUSED),
    ("http://[::2]/calls", False, REFUSED),
    ("http://[0:0:0:0:0:0:0:1]/calls", False, STRICTER),  # one spelling of ::1 only
    # shapes the agent refuses whatever the scheme
    ("https://user:pw@ingest.example.com/calls", False, REFUSED),
    ("https://user@ingest.example.com/calls", True, REFUSED),
    ("https://ingest.example.com:65536/", False, REFUSED),
    ("https://ingest.example.com:80a/", False, REFUSED),
    ("https://ingest.example.com/a b", False, REFUSED),
    ("https:///calls", False, REFUSED),
    ("https://[::::]/calls", False, REFUSED),
    ("https://[::1/calls", False, REFUSED),
    ("ftp://ingest.example.com/", False, REFUSED),
    ("ingest.example.com/calls", False, REFUSED),
    ("https://ingest.exämple.com/", False, STRICTER),  # non-ASCII host: use punycode
    ("https://ingest.example.com/é", False, STRICTER),  # non-ASCII path: percent-encode
    ("https://ingest.example.com/a\u00a0b", False, REFUSED),  # Unicode whitespace
]


def _cr(url: str, allow: bool) -> dict[str, Any]:
    cr = copy.deepcopy(MINIMAL)
    cr["spec"]["apiUrl"] = url
    if allow:
        cr["spec"]["apiAllowInsecureHttp"] = True
    return cr


def crd_accepts(schema: dict[str, Any], cr: dict[str, Any]) -> bool:
    errors = list(jsonschema.Draft4Validator(strip_for_draft4(schema)).iter_errors(cr))
    return not errors and not evaluate(schema, cr)


def spec_accepts(cr: dict[str, Any]) -> bool:
    try:
        parse_resource(cr)
    except SpecError:
        return False
    return True


def agent_accepts(url: str, allow: bool, tmp_path: pathlib.Path) -> bool:
    """The agent's loader on the environment the operator renders, API_URL replaced."""
    (pod,) = pods([MINIMAL], tmp_path)
    env = {**pod.env, "API_URL": url}
    if allow:
        env["API_ALLOW_INSECURE_HTTP"] = "true"
    try:
        load_settings(env)
    except ConfigError as e:
        problems = [p for p in e.problems if not p.startswith("API_URL")]
        assert problems == [], "only API_URL may be wrong here"
        return False
    return True


@pytest.mark.parametrize(("url", "allow", "verdict"), TABLE)
def test_crd_spec_and_agent_agree_on_api_urls(
    url: str, allow: bool, verdict: str, crd_schema: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    cr = _cr(url, allow)
    crd = crd_accepts(crd_schema, cr)
    assert spec_accepts(cr) == crd, "spec.py and the CRD differ"
    assert agent_accepts(url, allow, tmp_path) == (verdict in (OK, STRICTER)), "agent"
    assert crd == (verdict == OK), "CRD"


def test_the_operator_passes_the_insecure_setting_to_the_agent(tmp_path: pathlib.Path) -> None:
    (pod,) = pods([_cr("http://ingest.example.com/calls", True)], tmp_path)
    assert pod.env["API_ALLOW_INSECURE_HTTP"] == "true"
    assert load_settings(pod.env).api.allow_insecure_http is True
    (pod,) = pods([MINIMAL], tmp_path / "default")
    assert "API_ALLOW_INSECURE_HTTP" not in pod.env


def test_the_messages_say_why(crd_schema: dict[str, Any]) -> None:
    cr = _cr("http://ingest.example.com/calls", False)
    assert evaluate(crd_schema, cr) == [CLEARTEXT_API_URL]
    with pytest.raises(SpecError) as err:
        parse_resource(cr)
    assert str(err.value) == CLEARTEXT_API_URL
    with pytest.raises(SpecError, match="no user or password"):
        parse_resource(_cr("https://u:p@ingest.example.com/", False))


def test_the_crd_carries_spec_pys_expressions(crd_schema: dict[str, Any]) -> None:
    spec = crd_schema["properties"]["spec"]
    assert spec["properties"]["apiUrl"]["pattern"] == API_URL_PATTERN
    (cleartext,) = [r for _, r in rules(spec) if "apiAllowInsecureHttp" in r["rule"]]
    assert f"r'{API_URL_LOOPBACK_HTTP}'" in cleartext["rule"]
    assert cleartext["message"] == CLEARTEXT_API_URL
