"""The declarative side of the settings: a variable (`Var`), the table of a section
(`Table`) and the parsers a variable names.

Pure: no environment, no files (except the `existing_file` check). A section module
declares its variables once, in its `TABLE`:

    _D = AmiSettings()
    TABLE = Table("ami")
    AMI_PORT = TABLE.var("AMI_PORT", integer(1, 65535), _D.port)

A default is the dataclass's own (types.py, one home) unless the loader's
differs, as `DB_USER`'s `asterisk` does.

`Reader.get(AMI_PORT)` (reader.py) then reads it, the first set of its name and
aliases, parses it and, on a bad value, records one problem naming the variable and
returns the default. `Table.names` are the variables the agent knows (see
`unknown_variables` and tests/agent/test_config_names.py).

A parser is `parse(value, notes) -> value`: it raises `Invalid(message)` for a bad
value (the default is used) or reports through `notes` and returns what is usable
(a list with one bad entry keeps the others).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")

TRUE = frozenset({"1", "true", "yes", "y", "on"})
FALSE = frozenset({"0", "false", "no", "n", "off"})
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class Invalid(ValueError):
    """A bad value; the message follows the variable's name ("NAME: message")."""


class Notes(Protocol):
    """Where a parser reports about the variable it parses (the name is prefixed)."""

    def problem(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


Parse = Callable[[str, Notes], T]


def show(value: str) -> str:
    """A value as shown in a message: quoted, cut at 60 characters."""
    v = value if len(value) <= 60 else value[:57] + "..."
    return repr(v)


@dataclass(frozen=True)
class FileVariant:
    """`<NAME>_FILE` names a file holding the value (one of the two may be set)."""

    limit: int  # bytes
    what: str  # "a single secret", in the too-large message


SECRET_FILE = FileVariant(64 * 1024, "a single secret")
MAX_TENANT_MAP_FILE = 1024 * 1024  # a ConfigMap holds at most 1 MiB
TENANT_MAP_FILE = FileVariant(MAX_TENANT_MAP_FILE, "a tenant map")


@dataclass(frozen=True)
class Var(Generic[T]):
    """One environment variable: its name, old names (aliases, the first set wins),
    parser (type and constraint), default, and an optional `<NAME>_FILE` variant."""

    name: str
    parse: Parse[T]
    default: T
    aliases: tuple[str, ...] = ()
    file: FileVariant | None = None
    secret: bool = False  # never printed; the value is not shown in messages

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this variable is read under."""
        extra = (f"{self.name}_FILE",) if self.file is not None else ()
        return (self.name, *self.aliases, *extra)

    def with_default(self, default: T) -> Var[T]:
        """The same variable with a default that depends on another setting."""
        return replace(self, default=default)

    def without_aliases(self) -> Var[T]:
        return replace(self, aliases=())


@dataclass(frozen=True)
class Known:
    """What the table keeps of a variable: its names and file variant."""

    name: str
    names: tuple[str, ...]
    file: FileVariant | None
    secret: bool


class Table:
    """The variables of one settings section, in reading order."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.vars: list[Known] = []

    def var(
        self,
        name: str,
        parse: Parse[T],
        default: T,
        *aliases: str,
        file: FileVariant | None = None,
        secret: bool = False,
    ) -> Var[T]:
        v = Var(name, parse, default, aliases, file, secret)
        self.vars.append(Known(name, v.names, file, secret))
        return v

    def secret(self, name: str) -> Var[str]:
        """A secret: `<NAME>` or `<NAME>_FILE`, never printed, default empty."""
        return self.var(name, text, "", file=SECRET_FILE, secret=True)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for v in self.vars for n in v.names)


# ---------------------------------------------------------------------------- parsers


def text(value: str, notes: Notes) -> str:
    return value


def lower(value: str, notes: Notes) -> str:
    return value.lower()


def items(value: str, notes: Notes) -> tuple[str, ...]:
    """A comma-separated list; empty entries dropped."""
    return tuple(p.strip() for p in value.split(",") if p.strip())


def boolean(value: str, notes: Notes) -> bool:
    v = value.lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise Invalid(f"true or false expected, got {show(value)}")


def integer(lo: int, hi: int | None = None) -> Parse[int]:
    def parse(value: str, notes: Notes) -> int:
        try:
            n = int(value, 10)
        except (ValueError, OverflowError):
            raise Invalid(f"an integer expected, got {show(value)}") from None
        if n < lo or (hi is not None and n > hi):
            raise Invalid(
                f"must be between {lo} and {hi}, got {n}"
                if hi is not None
                else f"must be at least {lo}, got {n}"
            )
        return n

    return parse


def auto_or(parse: Parse[T]) -> Parse[T | None]:
    """`auto` (any case) for None, anything else by `parse`."""

    def parse_auto(value: str, notes: Notes) -> T | None:
        return None if value.strip().lower() == "auto" else parse(value, notes)

    return parse_auto


def seconds(hi: float, lo: float = 0.0, lo_inclusive: bool = False) -> Parse[float]:
    """A finite number in (lo, hi] (or [lo, hi] with `lo_inclusive`)."""

    def parse(value: str, notes: Notes) -> float:
        try:
            f = float(value)
        except (ValueError, OverflowError):
            raise Invalid(f"a number of seconds expected, got {show(value)}") from None
        if not math.isfinite(f):
            raise Invalid(f"a finite number expected, got {show(value)}")
        too_low = f < lo if lo_inclusive else f <= lo
        if too_low or f > hi:
            rel = ">=" if lo_inclusive else ">"
            raise Invalid(f"must be {rel} {lo:g} and <= {hi:g}, got {f:g}")
        return f

    return parse


def choice(choices: Mapping[str, str] | tuple[str, ...], upper: bool = False) -> Parse[str]:
    """One of `choices` (case-insensitive); a mapping maps spellings to the value."""
    mapping = choices if isinstance(choices, Mapping) else {c: c for c in choices}

    def parse(value: str, notes: Notes) -> str:
        key = value.upper() if upper else value.lower()
        if key in mapping:
            return mapping[key]
        allowed = ", ".join(dict.fromkeys(mapping))
        raise Invalid(f"must be one of {allowed}; got {show(value)}")

    return parse


def ident(value: str, notes: Notes) -> str:
    """A plain (optionally schema-qualified) table name."""
    if not IDENT_RE.match(value) or len(value) > 128:
        raise Invalid(f"must be a plain table name (letters, digits, _), got {show(value)}")
    return value


def existing_file(value: str, notes: Notes) -> str:
    """A path to a file that exists (a CA bundle); a missing one is reported, kept."""
    if not os.path.isfile(value):
        notes.problem(f"file {show(value)} does not exist")
    return value
