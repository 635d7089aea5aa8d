"""Reading the environment: the layers (environment over .env), `<NAME>_FILE`
variants, aliases of the old connector's names, and the problems and warnings found.

`environment()` merges the process environment and the optional .env file (envfile.py)
into the view a `Reader` reads; `Reader.get(var)` reads one declared variable
(spec.py). Every problem starts with the name of its variable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..envfile import RawEnv, parse_env_file
from ..oldvars import alias_conflict, same_value, unused_warning
from .spec import FileVariant, Invalid, Known, T, Var, show

ENV_FILE = "ENV_FILE"  # the --env-file of the CLI; its problems name this
MAX_ENV_FILE = 4 * 1024 * 1024


class ConfigError(Exception):
    """One or more configuration problems; each names its variable."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _VarNotes:
    """`Notes` of one variable: messages prefixed with the name it was read under."""

    def __init__(self, reader: Reader, name: str) -> None:
        self._reader = reader
        self._name = name

    def problem(self, msg: str) -> None:
        self._reader.bad(self._name, msg)

    def warning(self, msg: str) -> None:
        self._reader.warn(f"{self._name}: {msg}")


class Reader:
    """Reads variables from the merged view, collects problems and warnings."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []
        self.warnings: list[str] = []

    # -- raw access ---------------------------------------------------------
    def raw(self, *names: str) -> tuple[str, str] | None:
        """First of `names` that is set to a non-empty value: (name, stripped value).
        The later names are aliases or old names; one set to another value is a warning."""
        found: tuple[str, str] | None = None
        for name in names:
            v = self.env.get(name)
            if v is None or v.strip() == "":
                continue
            if found is None:
                found = (name, v.strip())
            elif not same_value(found[1], v.strip()):
                self.warn(alias_conflict(found[0], name))
        return found

    def found(self, var: Var[T]) -> tuple[str, str] | None:
        """(name it was set under, text) of `var`: the `<NAME>_FILE` file's content when
        that is set, else the first of its name and aliases that is set."""
        if var.file is not None:
            got_file = self.raw(f"{var.name}_FILE")
            got = self.raw(var.name)
            if got_file is not None:
                content = self.read_file(var.name, got_file[1], var.file)
                return None if content is None else (var.name, content)
            return got
        return self.raw(var.name, *var.aliases)

    def is_set(self, var: Var[T]) -> bool:
        return self.found(var) is not None

    def get(self, var: Var[T]) -> T:
        """The parsed value of `var`, or its default when unset or bad (then a problem
        names the variable)."""
        got = self.found(var)
        if got is None:
            return var.default
        name, value = got
        try:
            return var.parse(value, _VarNotes(self, name))
        except Invalid as exc:
            self.bad(name, str(exc))
            return var.default

    # -- findings -----------------------------------------------------------
    def bad(self, name: str, msg: str) -> None:
        self.problems.append(f"{name}: {msg}")

    def warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)

    def warn_old_unused(self) -> None:
        """One warning naming the old connector's variables that are set but unused."""
        if (unused := unused_warning(self.env)) is not None:
            self.warn(unused)

    # -- files --------------------------------------------------------------
    def read_file(self, var: str, path: str, variant: FileVariant) -> str | None:
        """The stripped UTF-8 content of `<var>_FILE`'s file, or None (a problem)."""
        fname = f"{var}_FILE"
        try:
            with open(path, "rb") as fh:
                data = fh.read(variant.limit + 1)
        except FileNotFoundError:
            self.bad(fname, f"file {show(path)} does not exist")
            return None
        except IsADirectoryError:
            self.bad(fname, f"{show(path)} is a directory, not a file")
            return None
        except PermissionError:
            self.bad(fname, f"file {show(path)} is not readable (permission denied)")
            return None
        except (OSError, ValueError) as exc:
            self.bad(fname, f"cannot read {show(path)} ({type(exc).__name__})")
            return None
        if len(data) > variant.limit:
            self.bad(
                fname,
                f"file {show(path)} is larger than {variant.limit // 1024} KiB; "
                f"expected {variant.what}",
            )
            return None
        try:
            content = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.bad(fname, f"file {show(path)} is not UTF-8 text")
            return None
        if not content:
            self.bad(fname, f"file {show(path)} is empty")
            return None
        return content


def _read_env_file(path: str, problems: list[str]) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            content = fh.read(MAX_ENV_FILE)
    except UnicodeDecodeError:
        problems.append(f"{ENV_FILE}: {show(path)} is not UTF-8 text")
        content = ""
    except (OSError, ValueError) as exc:
        problems.append(f"{ENV_FILE}: cannot read {show(path)} ({type(exc).__name__})")
        content = ""
    values, env_problems = parse_env_file(content, path)
    problems.extend(env_problems)
    return values


def _is_set(m: Mapping[str, str], k: str) -> bool:
    v = m.get(k)
    return v is not None and v.strip() != ""


def merge_layers(
    environ: Mapping[str, str],
    dotenv: Mapping[str, str],
    file_vars: Sequence[str],
    problems: list[str],
) -> dict[str, str]:
    """Environment wins over .env. For the variables with a `<NAME>_FILE` variant the
    pair is resolved per layer: whatever the environment says about one (either form)
    wins over .env; both forms in the same layer is an error."""
    merged: dict[str, str] = dict(dotenv)
    merged.update({k: v for k, v in environ.items() if isinstance(v, str)})
    for var in file_vars:
        fvar = f"{var}_FILE"
        for layer, label in ((environ, "environment"), (dotenv, ".env file")):
            if _is_set(layer, var) and _is_set(layer, fvar):
                problems.append(
                    f"{var}: both {var} and {fvar} are set in the {label}; set only one"
                )
        if _is_set(environ, var) or _is_set(environ, fvar):
            # The environment decides; drop the .env forms it does not use.
            for k in (var, fvar):
                if _is_set(environ, k):
                    merged[k] = environ[k]
                else:
                    merged.pop(k, None)
    return merged


def file_variables(known: Sequence[Known]) -> tuple[str, ...]:
    """The variables with a `<NAME>_FILE` variant: the secrets first, then the rest."""
    with_file = [k for k in known if k.file is not None]
    return tuple(k.name for k in with_file if k.secret) + tuple(
        k.name for k in with_file if not k.secret
    )


def environment(
    environ: Mapping[str, str], env_file: str | None, known: Sequence[Known]
) -> tuple[RawEnv, list[str]]:
    """The environment merged with the .env file `env_file` (when given), and the
    problems of reading and merging them."""
    problems: list[str] = []
    dotenv = _read_env_file(env_file, problems) if env_file is not None else {}
    merged = merge_layers(environ, dotenv, file_variables(known), problems)
    return RawEnv(merged, environ), problems
