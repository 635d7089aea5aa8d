"""rules.ids: the one order of call keys and the one linkedid grouping."""

from __future__ import annotations

import pytest
from sipstack_agent.rules.ids import group_pairs, linkedid_sort_key, smallest_linkedid


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("1795495160.10", (0, 1795495160, 10, "1795495160.10")),
        ("1795495160", (0, 1795495160, 0, "1795495160")),
        ("²", (1, 0, 0, "²")),  # str.isdigit() is True, int() would raise
        ("1.²", (1, 0, 0, "1.²")),
        ("١٢٣", (1, 0, 0, "١٢٣")),  # Arabic-Indic digits: not an Asterisk id
        ("١٢٣.١", (1, 0, 0, "١٢٣.١")),
        ("", (1, 0, 0, "")),
        ("abc", (1, 0, 0, "abc")),
        ("1.2.3", (1, 0, 0, "1.2.3")),
        ("1.", (1, 0, 0, "1.")),
    ],
)
def test_linkedid_sort_key_table(value: str, key: tuple[int, int, int, str]) -> None:
    assert linkedid_sort_key(value) == key


def test_numeric_ids_first_then_the_rest_by_text() -> None:
    ids = ["abc", "1795495160.10", "²", "", "1795495160.9", "١٢٣", "1795495159.100"]
    assert sorted(ids, key=linkedid_sort_key) == [
        "1795495159.100",
        "1795495160.9",
        "1795495160.10",
        "",
        "abc",
        "²",
        "١٢٣",
    ]
    assert smallest_linkedid(["²", "١٢٣", "7.7"]) == "7.7"
    assert smallest_linkedid([]) == ""


@pytest.mark.parametrize(
    ("pairs", "groups"),
    [
        ([], []),
        ([("1.1", "")], [{"1.1"}]),  # an empty uniqueid links nothing
        ([("1.1", ""), ("1.2", "")], [{"1.1"}, {"1.2"}]),
        ([("1.1", "u"), ("1.2", "u")], [{"1.1", "1.2"}]),
        (  # transitive: 1.1 ~ 1.3 (via b) ~ 1.5 (via d)
            [("1.1", "a"), ("1.1", "b"), ("1.3", "b"), ("1.3", "d"), ("1.5", "d"), ("2.1", "e")],
            [{"1.1", "1.3", "1.5"}, {"2.1"}],
        ),
        ([("²", "x"), ("10.1", "x"), ("9.1", "y")], [{"9.1"}, {"10.1", "²"}]),
        ([("", "x"), ("3.1", "x")], [{"", "3.1"}]),  # the store may hold an empty key
    ],
)
def test_group_pairs_table(pairs: list[tuple[str, str]], groups: list[set[str]]) -> None:
    assert group_pairs(pairs) == [frozenset(g) for g in groups]
