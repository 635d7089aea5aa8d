"""CONTROL_TOKEN / CONTROL_TOKEN_FILE: the control endpoint's token, parsed once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipstack_agent.admin.bundle import _redacted_tree
from sipstack_agent.config import ConfigError, load_settings

BASE = {"API_KEY": "sk_" + "A1b2C3d4" * 4, "DB_TYPE": "postgresql", "DB_NAME": "asterisk"}
TOKEN = "t0k3n-" + "x" * 26


def test_unset_means_control_disabled() -> None:
    assert load_settings(BASE).control_token == ""


def test_token_from_variable_and_from_file(tmp_path: Path) -> None:
    assert load_settings({**BASE, "CONTROL_TOKEN": TOKEN}).control_token == TOKEN
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    s = load_settings({**BASE, "CONTROL_TOKEN_FILE": str(f)})
    assert s.control_token == TOKEN
    assert TOKEN not in repr(s)
    assert _redacted_tree(s)["control_token"] == "<redacted>"  # type: ignore[index]


@pytest.mark.parametrize("bad", ["short", "x" * 20 + " y", "x" * 20 + "\x01"])
def test_a_weak_token_is_an_error_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings({**BASE, "CONTROL_TOKEN": bad})
    assert [p.split(":")[0] for p in ei.value.problems] == ["CONTROL_TOKEN"]
    assert bad not in str(ei.value)


def test_both_variable_and_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN)
    with pytest.raises(ConfigError) as ei:
        load_settings({**BASE, "CONTROL_TOKEN": TOKEN, "CONTROL_TOKEN_FILE": str(f)})
    assert any("CONTROL_TOKEN" in p for p in ei.value.problems)
