"""`.env` files, and `.env` lines that reach the agent raw through the environment.

- `parse_env_file()` reads dotenv text with python-dotenv's parser: `KEY=value`,
  `export KEY=value`, `#` comment lines, `'single'` (literal) and `"double"` quotes
  (escapes), and ` # comment` after an unquoted value. A line it cannot parse is a
  problem naming `ENV_FILE` and the line. No `${VAR}` interpolation: a value (a
  password with a `$`) is taken as written.
- `RawEnv` is the merged view `load_settings()` reads. `docker run --env-file`
  passes each line verbatim, so the old README's `TENANT=   # Optional tenant
  identifier` arrives as the value `   # Optional tenant identifier`. A value that
  came from the process environment, is not quoted and ends in whitespace + `#...`
  has that comment removed when it is read (the rule python-dotenv applies to an
  unquoted value in a file); `warning()` names every variable that had one.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping

from dotenv.parser import parse_stream

_INLINE_COMMENT = re.compile(r"\s+#.*\Z", re.S)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_env_file(text: str, source: str = ".env") -> tuple[dict[str, str], list[str]]:
    """(values, problems) of dotenv `text`; later keys win, every problem names the line."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            key, sep, _ = binding.original.string.partition("=")
            key = key.strip().removeprefix("export").strip()
            if sep and _KEY.fullmatch(key):
                problems.append(f"ENV_FILE: {source} line {line}: bad quoting of {key}")
            else:
                problems.append(f"ENV_FILE: {source} line {line}: expected KEY=VALUE")
        elif binding.key is not None and binding.value is None:
            problems.append(f"ENV_FILE: {source} line {line}: {binding.key} has no '='")
        elif binding.key is not None and binding.value is not None:
            values[binding.key] = binding.value
    return values, problems


def strip_inline_comment(value: str) -> str | None:
    """`value` without a trailing whitespace + `#...` comment, or None when it has none
    (or is quoted, where a `#` belongs to the value)."""
    if value.lstrip()[:1] in ("'", '"'):
        return None
    m = _INLINE_COMMENT.search(value)
    if m is None:
        return None
    return value[: m.start()]


class RawEnv(Mapping[str, str]):
    """`merged` with inline comments removed from the values that came from `environ`."""

    def __init__(self, merged: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self._merged = merged
        self._environ = environ
        self._stripped: dict[str, None] = {}  # ordered set of the variables read with one

    def __getitem__(self, key: str) -> str:
        value = self._merged[key]
        if self._environ.get(key) != value:
            return value  # from the .env file: python-dotenv already decided
        cleaned = strip_inline_comment(value)
        if cleaned is None:
            return value
        self._stripped[key] = None
        return cleaned

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged)

    def __len__(self) -> int:
        return len(self._merged)

    def stripped(self) -> tuple[str, ...]:
        """The variables read so far whose value lost an inline comment."""
        return tuple(self._stripped)

    def warning(self) -> str | None:
        names = self.stripped()
        if not names:
            return None
        return (
            f"{', '.join(names)}: inline '# comment' removed from the value "
            "(docker run --env-file passes .env lines verbatim); remove the comments from "
            "the file, or quote a value whose ' #' is part of it and read the file with "
            "`sipstack-agent run --env-file` or docker compose env_file"
        )
