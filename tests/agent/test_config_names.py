"""The variable names of the agent: the sections' tables (config/*.py `TABLE`) are what
`load_settings` reads and what docs/configuration.md documents, and
`unknown_variables` reports the rest."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from sipstack_agent.config import (
    KNOWN_VARIABLES,
    TABLES,
    ConfigError,
    load_settings,
    unknown_variables,
)
from sipstack_agent.config.reader import Reader
from sipstack_agent.oldvars import UNUSED

CONFIGURATION_MD = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BASE = {"API_KEY": "sk_" + "a" * 32, "DB_TYPE": "sqlite", "DB_NAME": "/tmp/pbx.db"}


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


def test_every_variable_of_the_tables_is_documented_and_every_documented_one_is_in_one() -> None:
    first, anywhere = documented()
    assert KNOWN_VARIABLES - anywhere == set(), "document these in docs/configuration.md"
    assert first - KNOWN_VARIABLES == set(), "documented but in no config table"


@pytest.mark.parametrize(
    "env",
    [{}, {**BASE, "CEL_MODE": "ami", "CALL_SHIPPING_MODE": "progressive"}],
    ids=["empty", "ami-progressive"],
)
def test_the_loader_reads_exactly_the_variables_of_the_tables(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: set[str] = set()
    raw = Reader.raw

    def spy(self: Reader, *names: str) -> tuple[str, str] | None:
        asked.update(names)
        return raw(self, *names)

    monkeypatch.setattr(Reader, "raw", spy)
    with contextlib.suppress(ConfigError):
        load_settings(env)
    assert asked == KNOWN_VARIABLES


def test_a_variable_is_in_one_table_only() -> None:
    names = [n for t in TABLES for n in t.names]
    repeated = {n for n in names if names.count(n) > 1}
    assert repeated == {"SHIP_INCOMPLETE_AFTER"}  # the old name of two phases (calls.py)
    assert not KNOWN_VARIABLES & set(UNUSED), "an old variable is either read or unused"


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
