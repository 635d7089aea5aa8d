"""The variable names of the agent: what `load_settings` reads is what
docs/configuration.md documents, and `unknown_variables` reports the rest."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from sipstack_agent.config import ConfigError, load_settings, unknown_variables

CONFIGURATION_MD = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BASE = {"API_KEY": "sk_" + "a" * 32, "DB_TYPE": "sqlite", "DB_NAME": "/tmp/pbx.db"}


def names_read(env: dict[str, str]) -> set[str]:
    read: set[str] = set()
    with contextlib.suppress(ConfigError):
        load_settings(env, read=read)
    return read


def documented() -> tuple[set[str], set[str]]:
    """(names in the first column of the tables, every `NAME` in a table row)."""
    first: set[str] = set()
    anywhere: set[str] = set()
    for line in CONFIGURATION_MD.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        first.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", cell))
        anywhere.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line))
    return first, anywhere


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    first, anywhere = documented()
    read = names_read({})
    assert read - anywhere == set(), "document these in docs/configuration.md"
    assert first - read == set(), "documented but never read by load_settings"


def test_unknown_variables_are_the_ones_not_read() -> None:
    env = {**BASE, "DB_HOTS": "db", "CEL_MOD": "db", "RECORDING_PATHS": "/rec"}
    assert unknown_variables(env) == ["CEL_MOD", "DB_HOTS"]
    assert unknown_variables(BASE) == []


def test_unknown_variables_even_when_the_settings_are_bad() -> None:
    assert unknown_variables({"DB_PORT": "many", "DBPORT": "1"}) == ["DBPORT"]


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_recording_paths_none_means_no_directory(value: str) -> None:
    assert load_settings({**BASE, "RECORDING_PATHS": value}).recordings.paths == ()


def test_recording_paths_none_is_not_a_path_among_others() -> None:
    with pytest.raises(ConfigError, match="RECORDING_PATHS"):
        load_settings({**BASE, "RECORDING_PATHS": "/rec,none"})


def test_recording_paths_none_without_a_table_turns_recordings_off() -> None:
    from sipstack_agent.app import Agent

    off = load_settings({**BASE, "RECORDING_PATHS": "none"})
    assert Agent(off)._build_recordings(store=None) is None
    on = load_settings({**BASE, "RECORDING_PATHS": "/rec"})
    assert Agent(on)._build_recordings(store=None) is not None
