"""Small pure parts of reconcile.py and handlers.py."""

from __future__ import annotations

import base64

from sipstack_operator.reconcile import OperatorConfig, _decode_secret


def test_retry_delay_backs_off_to_a_cap() -> None:
    config = OperatorConfig(retry_base=10, retry_cap=300)
    assert [config.retry_delay(r) for r in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert config.retry_delay(10_000) == 300


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {"SIPSTACK_AGENT_IMAGE": "registry/agent:1", "SIPSTACK_STATUS_INTERVAL": "12"}
    )
    assert config.default_image == "registry/agent:1"
    assert config.status_interval == 12.0
    assert config.agent_status_url == "http://{service}.{namespace}.svc:8000/status"


def test_decode_secret() -> None:
    obj = {
        "data": {"a": base64.b64encode(b"x").decode(), "bin": base64.b64encode(b"\xff").decode()},
        "stringData": {"b": "y"},
    }
    assert _decode_secret(obj) == {"a": "x", "bin": "", "b": "y"}
