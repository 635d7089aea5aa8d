"""Typed, validated settings of the agent.

`load_settings()` reads the environment (and an optional .env file, see envfile.py,
and `*_FILE` variants) once at start-up and returns a frozen `Settings`; every bad
value is reported as one line naming its variable (`ConfigError.problems`).

- types.py: the frozen dataclasses, the contract every stage codes against;
- spec.py: a variable (`Var`), a section's `Table` of them, the parsers;
- reader.py: the environment / .env / `*_FILE` layers, aliases, the problems found;
- api, database, cel, calls, identity, recordings, runtime: one table and loader
  per section;
- load.py: `load_settings()` composes the sections; `unknown_variables()`.
"""

from .api import api_key_format
from .cel import CDR_ONLY_WARNING
from .load import KNOWN_VARIABLES, TABLES, load_settings, unknown_variables
from .reader import ConfigError
from .types import (
    AmiSettings,
    ApiSettings,
    CallSettings,
    CsvSettings,
    DatabaseSettings,
    DirectionSettings,
    Identity,
    RecordingSettings,
    Settings,
    TenantSettings,
)

__all__ = [
    "CDR_ONLY_WARNING",
    "KNOWN_VARIABLES",
    "TABLES",
    "AmiSettings",
    "ApiSettings",
    "CallSettings",
    "ConfigError",
    "CsvSettings",
    "DatabaseSettings",
    "DirectionSettings",
    "Identity",
    "RecordingSettings",
    "Settings",
    "TenantSettings",
    "api_key_format",
    "load_settings",
    "unknown_variables",
]
