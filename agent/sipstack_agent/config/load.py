"""`load_settings()`: the environment (and .env, `*_FILE`) read once, section by
section, into a frozen `Settings`; every problem is collected, one line each naming
its variable, and raised together as `ConfigError`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from . import api, calls, cel, database, identity, recordings, runtime
from .reader import ConfigError, Reader, environment
from .spec import Known, Table
from .types import Settings

TABLES: tuple[Table, ...] = (
    api.TABLE,
    database.TABLE,
    cel.TABLE,
    calls.TABLE,
    identity.TABLE,
    recordings.TABLE,
    runtime.TABLE,
)
"""Every section's table of variables, in reading order."""

KNOWN: tuple[Known, ...] = tuple(v for t in TABLES for v in t.vars)
KNOWN_VARIABLES: frozenset[str] = frozenset(n for t in TABLES for n in t.names)
"""Every variable name the agent reads (names, old-name aliases, `<NAME>_FILE`)."""


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | None = None
) -> Settings:
    """Read the settings once at start-up.

    `environ` defaults to `os.environ`. `env_file` is read only when given (the CLI
    passes `--env-file`, or `./.env` when it exists); the environment wins over it.
    Raises `ConfigError` listing every problem, one line per problem, each starting
    with the variable's name; secret values never appear in a message.
    """
    env, problems = environment(os.environ if environ is None else environ, env_file, KNOWN)
    r = Reader(env)
    r.problems.extend(problems)
    # The secrets first: a `*_FILE` that cannot be read is the first thing said.
    api_key, db_password, ami_password, control_token = (
        r.get(v)
        for v in (api.API_KEY, database.DB_PASSWORD, cel.AMI_PASSWORD, runtime.CONTROL_TOKEN)
    )
    api_settings = api.load(r, api_key)
    cel_mode = r.get(cel.CEL_MODE)
    db, database_enabled = database.load(r, cel_mode, db_password)
    call_settings = calls.load(r, cel_mode, db.timezone)
    ident = identity.load(r, call_settings.tenants.tenant)
    csv = cel.load_csv(r)
    ami = cel.load_ami(r, cel_mode, ami_password)
    rec = recordings.load(r)
    if rec.paths:  # documents name relative MixMonitor files where the uploader finds them
        call_settings = replace(call_settings, monitor_dir=rec.paths[0])
    settings = runtime.load(
        r,
        cel_mode=cel_mode,
        database=db,
        database_enabled=database_enabled,
        api=api_settings,
        calls=call_settings,
        identity=ident,
        csv=csv,
        ami=ami,
        recordings=rec,
        control_token=control_token,
    )
    if (comments := env.warning()) is not None:
        settings = replace(settings, warnings=(comments, *settings.warnings))
    if r.problems:
        # One line per problem, stable order, no duplicates.
        raise ConfigError(list(dict.fromkeys(r.problems)))
    return settings


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Names in `environ` the agent does not read (not in any section's table), sorted:
    a typo or a stale name."""
    return sorted(set(environ) - KNOWN_VARIABLES)
