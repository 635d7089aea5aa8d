"""rules.redact: one output for a key, whoever redacts (check, stored errors, logs)."""

from __future__ import annotations

import logging

import pytest
from sipstack_agent.logs import redact
from sipstack_agent.rules.redact import redact_key, redact_text


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("", "(empty)"),
        ("sk_1234", "sk_…"),  # short keys show nothing of the key
        ("abcd1234", "…"),
        ("sk_" + "a" * 28 + "WXYZ", "sk_…WXYZ"),
        ("sk_t2_" + "b" * 26 + "1234", "sk_…1234"),
        ("plainkey-9876", "…9876"),  # not sk_: no prefix, and none of its first characters
    ],
)
def test_redact_key_table(key: str, shown: str) -> None:
    assert redact_key(key) == shown


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("task_id=sk_id", "task_id=sk_id"),  # no key: identifiers stay
        ("key sk_" + "x" * 30 + "9999 rejected", "key sk_…9999 rejected"),
        ("Bearer sk_t1_" + "c" * 30, "Bearer sk_…cccc"),
    ],
)
def test_redact_text_table_is_what_logs_print(text: str, out: str) -> None:
    assert redact_text(text) == out
    assert redact(text, logging.DEBUG) == out  # logs use the same rule


def test_redact_key_keeps_only_the_last_four():
    key = "sk_" + "a" * 28 + "WXYZ"
    assert redact_key(key) == "sk_…WXYZ"
    assert redact_key("sk_t2_" + "b" * 26 + "1234") == "sk_…1234"
    assert "sk_1234" not in redact_key("sk_1234")  # short keys show nothing of the key
    text = f"rejected {key} and sk_t1_{'c' * 30}"
    red = redact_text(text, key)
    assert key not in red and "c" * 30 not in red
    assert red.count("sk_…") == 2
