"""Every `sipstack-agent ...` command shown in docs/operations.md and the README's
day-two section is one the real argument parser accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from sipstack_agent.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


COMMAND = r"sipstack-agent ((?:status|dead-letters|support-bundle|resend)[^|<>#]*)"


def commands(text: str) -> list[str]:
    """Command lines: every line of a ```sh block, the `$ ` lines of an output block."""
    out: list[str] = []
    for lang, block in re.findall(r"```(sh)?\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if not lang and not line.startswith("$ "):
                continue
            m = re.search(COMMAND, line)
            if m:
                out.append(m.group(1).strip())
    return out


DOCS = commands((ROOT / "docs" / "operations.md").read_text()) + commands(
    (ROOT / "README.md").read_text()
)


def test_the_pages_show_all_four_commands() -> None:
    assert {c.split()[0] for c in DOCS} == {"status", "dead-letters", "support-bundle", "resend"}


@pytest.mark.parametrize("line", DOCS)
def test_documented_command_parses(line: str) -> None:
    words = shlex.split(line)
    args = build_parser().parse_args(words)
    assert args.func.__name__.startswith("cmd_")
