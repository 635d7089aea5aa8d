"""SHIP_COMPLETE_AFTER: the old connector's settle delay, parsed once into CallSettings."""

from __future__ import annotations

import pytest

from .test_config import load, problems


def test_default_is_no_extra_delay() -> None:
    assert load().calls.ship_complete_after == 0.0


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), ("0", 0.0), (" 300 ", 300.0)])
def test_seconds(value: str, seconds: float) -> None:
    assert load(SHIP_COMPLETE_AFTER=value).calls.ship_complete_after == seconds


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SHIP_COMPLETE_AFTER": "soon"}, "a number of seconds expected, got 'soon'"),
        ({"SHIP_COMPLETE_AFTER": "-1"}, "must be >= 0"),
        ({"SHIP_COMPLETE_AFTER": "7200", "CALL_MAX_AGE": "3600"}, "below CALL_MAX_AGE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    (problem,) = problems(**env)
    assert problem.startswith("SHIP_COMPLETE_AFTER:") and needle in problem
