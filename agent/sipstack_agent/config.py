"""Typed, validated settings of the agent.

Stdlib only (and the stdlib-only `zones`, `envfile`, `oldvars`). `load_settings()` reads
the environment (and an optional .env file, see envfile.py, and `*_FILE` variants) once at
start-up and returns a frozen `Settings`; every bad value is reported as one line naming its
variable (`ConfigError.problems`).

The dataclasses below are the contract every stage codes against; tests build
them directly with keyword arguments.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

from . import __version__
from .envfile import RawEnv, parse_env_file
from .model import CEL_COLUMNS, CEL_REQUIRED_COLUMNS
from .oldvars import alias_conflict, same_value, unused_warning
from .rules import api_urls
from .rules.api_urls import REGION_HOSTS
from .rules.mixmonitor import MONITOR_DIR
from .rules.redact import redact_key
from .zones import AUTO, configured, tzinfo_of


class ConfigError(Exception):
    """One or more configuration problems; each names its variable."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DatabaseSettings:
    type: str = "sqlite"  # postgresql | mysql | sqlite
    host: str = "localhost"
    port: int = 0  # 0 = the driver's default (5432 / 3306)
    user: str = ""
    password: str = field(default="", repr=False)
    name: str = ""  # sqlite: the file path (opened read-only)
    table_cdr: str = "cdr"
    table_cel: str = "cel"
    table_recordings: str = ""  # optional recordings table
    timezone: str = "auto"  # zone of naive PBX times: auto | IANA name | fixed offset +05:30
    sslmode: str = ""  # disable | allow | prefer | require | verify-ca | verify-full
    sslrootcert: str = ""
    pool_size: int = 4
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class ApiSettings:
    url: str = api_urls.DEFAULT_CALLS_URL
    recording_url: str = api_urls.DEFAULT_RECORDING_URL
    api_key: str = field(default="", repr=False)
    region: str = "us1"
    timeout: float = 30.0
    concurrency: int = 8
    retry_horizon: float = 48 * 3600.0  # seconds before a retrying document is dead-lettered
    backoff_initial: float = 1.0
    backoff_cap: float = 300.0
    allow_insecure_http: bool = False  # API_ALLOW_INSECURE_HTTP: http:// to a non-loopback host


@dataclass(frozen=True)
class DirectionSettings:
    ext_min_length: int = 2
    ext_max_length: int = 7
    intl_prefixes: tuple[str, ...] = ("011", "00")
    known_trunks: tuple[str, ...] = ()
    default_country_code: str = ""  # e.g. "1"; empty = never expand national numbers
    strip_dial_prefixes: tuple[str, ...] = ()
    e164: bool = True  # ASTERISK_E164_ENABLED: rewrite external numbers to E.164 when unambiguous


@dataclass(frozen=True)
class TenantSettings:
    tenant: str = ""  # fixed tenant (wins)
    did_map: tuple[tuple[str, str], ...] = ()  # (did, tenant)
    accountcode_map: tuple[tuple[str, str], ...] = ()  # (accountcode, tenant)
    context_pattern: str = ""  # optional regex with one group, applied to contexts/channels


@dataclass(frozen=True)
class CallSettings:
    """What the pure call core needs: completion and shipping phases."""

    idle_timeout: float = 30.0  # CALL_IDLE_TIMEOUT
    max_age: float = 6 * 3600.0  # CALL_MAX_AGE
    shipping_mode: str = "complete"  # complete | progressive
    long_call_update_interval: float = 600.0  # 0 = never
    ship_update_min_interval: float = 30.0
    ship_complete_after: float = 0.0  # SHIP_COMPLETE_AFTER: settle delay after the call's end
    cdr_only: bool = False  # no CEL source: a call is its CDR rows
    timezone: str = "UTC"  # reported in documents (the resolved zones.PbxZone)
    timezone_source: str = "configured"  # how it was found: zones.FOUND
    # Seconds a call CEL says has ended waits for CDR rows fetched by lookup (0 = no wait);
    # the app sets it from CDR_LOOKUP_WAIT while the CDR table is read without ids.
    cdr_wait: float = 0.0
    direction: DirectionSettings = field(default_factory=DirectionSettings)
    tenants: TenantSettings = field(default_factory=TenantSettings)
    # Where relative MixMonitor / recordingfile names live: RECORDING_PATHS[0] (rules.mixmonitor)
    monitor_dir: str = MONITOR_DIR


@dataclass(frozen=True)
class Identity:
    """Fields stamped on every document and used in Idempotency-Key."""

    customer_id: int = 0
    tenant: str = ""
    hostname: str = ""
    connector_id: str = ""  # stable id of this agent (defaults to hostname)
    version: str = __version__


@dataclass(frozen=True)
class CsvSettings:
    path: str = "/var/log/asterisk/cel-custom/Master.csv"
    poll_interval: float = 2.0
    columns: tuple[str, ...] = ()  # empty = the default cel_custom order


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ping_interval: float = 20.0
    # cel_manager raises CEL with EVENT_FLAG_CALL,
    # so the login event mask must include "call" (manager.conf read=call).
    events: str = "call"
    tls_verify: bool = True  # AMI_TLS_VERIFY
    tls_ca_file: str = ""  # AMI_TLS_CA_FILE
    auth: str = "auto"  # AMI_AUTH: auto (MD5 challenge when offered) | md5 | plain
    connect_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_cap: float = 60.0


@dataclass(frozen=True)
class RecordingSettings:
    paths: tuple[str, ...] = (MONITOR_DIR,)
    extensions: tuple[str, ...] = ("wav", "mp3", "gsm", "ogg", "WAV")
    stability_check_count: int = 3
    stability_check_interval: float = 2.0
    upload: bool = False
    upload_concurrency: int = 2
    delete_after_upload: bool = False
    columns: tuple[str, ...] = ("linkedid", "uniqueid", "filename", "file_path", "created_at")
    scan_budget: int = 2000  # directory entries looked at per filesystem scan
    # Added for recordings/ (docs/recordings.md):
    poll_interval: float = 5.0  # RECORDING_POLL_INTERVAL: seconds between detection passes
    fs_index_window: float = 2 * 86400.0  # RECORDING_INDEX_WINDOW: index dirs changed within it
    known_call_window: float = 3600.0  # RECORDING_KNOWN_CALL_WINDOW: watch a call after it ends
    known_call_max: int = 5_000  # RECORDING_KNOWN_CALL_MAX: calls watched at once (LRU)


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    calls: CallSettings = field(default_factory=CallSettings)
    identity: Identity = field(default_factory=Identity)
    csv: CsvSettings = field(default_factory=CsvSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    recordings: RecordingSettings = field(default_factory=RecordingSettings)
    cel_mode: str = "db"  # db | csv | ami | none (CDR only)
    poll_interval: float = 2.0  # CDR_POLL_INTERVAL / POLL_INTERVAL
    batch_size: int = 500  # CDR_BATCH_SIZE / BATCH_SIZE: rows per query
    max_records_per_poll: int = 5000
    overlap_ids: int = 200  # re-read window below the id checkpoint
    lookback_seconds: float = 120.0  # for tables without an id column
    cdr_max_call_duration: float = 14400.0  # CDR_MAX_CALL_DURATION: id-less CDR end sweeps
    cdr_lookup_wait: float = 15.0  # CDR_LOOKUP_WAIT: an ended call waits this for its CDR rows
    start_from: str = "latest"  # latest | beginning | ISO time
    start_from_time: datetime | None = None
    state_dir: str = "/data"
    # STATE_SYNCHRONOUS: SQLite's synchronous of the state store. FULL (fsync per commit)
    # by default for CEL_MODE=ami: AMI events cannot be re-read after a power cut.
    state_synchronous: str = "NORMAL"
    # STATE_RECOVERY_LOOKBACK: after a corrupt state file, re-read the PBX this far back.
    state_recovery_lookback: float = 86400.0
    # STATE_TOMBSTONE_RETENTION: how long a pruned, delivered call is remembered (re-reads).
    state_tombstone_retention: float = 7 * 86400.0
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    log_numbers: bool = False  # phone numbers at INFO
    monitoring_port: int = 8000
    monitoring_host: str = "0.0.0.0"  # noqa: S104 - metrics must be scrapeable
    shutdown_grace: float = 10.0
    # False: a database-less install (CEL from CSV/AMI only).
    database_enabled: bool = True
    run_as: tuple[int, int] | None = None  # PUID/PGID: (uid, gid) when started as root
    # Non-fatal findings of load_settings (malformed-looking API key, ...), logged at start.
    warnings: tuple[str, ...] = ()
    # CONTROL_TOKEN(_FILE): the bearer token of POST /control/* ("" = control disabled)
    control_token: str = field(default="", repr=False)


# ---------------------------------------------------------------------------
# load_settings(): environment / .env / *_FILE  ->  Settings
# ---------------------------------------------------------------------------

SECRET_VARS: tuple[str, ...] = ("API_KEY", "DB_PASSWORD", "AMI_PASSWORD", "CONTROL_TOKEN")
"""Variables whose values are never printed; each also has a `<NAME>_FILE` variant."""

TENANT_MAP_VARS: tuple[str, ...] = ("DID_TENANT_MAP", "ACCOUNTCODE_TENANT_MAP")
"""Tenant maps; each also has a `<NAME>_FILE` variant (large maps: exec limits an
environment string to 128 KiB, so the operator mounts them as files)."""

FILE_VARS: tuple[str, ...] = SECRET_VARS + TENANT_MAP_VARS
"""Every variable with a `<NAME>_FILE` variant (one of the two may be set)."""


DB_TYPE_ALIASES: dict[str, str] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "pgsql": "postgresql",
    "pg": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
}
CEL_MODES: tuple[str, ...] = ("db", "csv", "ami", "none")
CDR_ONLY_WARNING = (
    "CEL_MODE is empty/none: CDR only; transfers, queues and MixMonitor recordings need CEL "
    "(set CEL_MODE=db, csv or ami)"
)
SHIPPING_MODES: tuple[str, ...] = ("complete", "progressive")
LOG_LEVELS: dict[str, str] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
SSL_MODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

_TRUE = frozenset({"1", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "off"})
_BOOL_WORDS = frozenset({"true", "yes", "on", "false", "no", "off"})  # not digits: 0, 1 dial
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_KEY_STANDARD_RE = re.compile(r"^sk_[A-Za-z0-9]{32}$")
_KEY_TIERED_RE = re.compile(r"^sk_t[0-4]_[A-Za-z0-9_]{8,}$")
_CONNECTOR_ID_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._/@-]{0,127}$"
)  # no ":" (Idempotency-Key separator)
_MAX_SECRET_FILE = 64 * 1024
MAX_TENANT_MAP_FILE = 1024 * 1024  # a ConfigMap holds at most 1 MiB

T = TypeVar("T")


def api_key_format(key: str) -> str:
    """'standard', 'tiered' or 'unknown' (the API is the authority on validity)."""
    if _KEY_STANDARD_RE.match(key):
        return "standard"
    if _KEY_TIERED_RE.match(key):
        return "tiered"
    return "unknown"


class _Reader:
    """Reads variables from the merged view, collects problems and warnings."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.names: set[str] = set()  # every variable looked at (see unknown_variables)

    # -- raw access ---------------------------------------------------------
    def raw(self, *names: str) -> tuple[str, str] | None:
        """First of `names` that is set to a non-empty value: (name, stripped value).
        The later names are aliases or old names; one set to another value is a warning."""
        self.names.update(names)
        found: tuple[str, str] | None = None
        for name in names:
            v = self.env.get(name)
            if v is None or v.strip() == "":
                continue
            if found is None:
                found = (name, v.strip())
            elif not same_value(found[1], v.strip()):
                msg = alias_conflict(found[0], name)
                if msg not in self.warnings:
                    self.warnings.append(msg)
        return found

    def str_(self, *names: str, default: str = "") -> str:
        got = self.raw(*names)
        return got[1] if got else default

    def bad(self, name: str, msg: str) -> None:
        self.problems.append(f"{name}: {msg}")

    @staticmethod
    def show(value: str) -> str:
        v = value if len(value) <= 60 else value[:57] + "..."
        return repr(v)

    # -- typed --------------------------------------------------------------
    def int_(self, *names: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        got = self.raw(*names)
        if got is None:
            return default
        name, value = got
        try:
            n = int(value, 10)
        except (ValueError, OverflowError):
            self.bad(name, f"an integer expected, got {self.show(value)}")
            return default
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            self.bad(
                name,
                f"must be between {lo} and {hi}, got {n}"
                if hi is not None
                else f"must be at least {lo}, got {n}",
            )
            return default
        return n

    def float_(
        self,
        *names: str,
        default: float,
        lo: float = 0.0,
        hi: float = 1e9,
        lo_inclusive: bool = False,
    ) -> float:
        got = self.raw(*names)
        if got is None:
            return default
        name, value = got
        try:
            f = float(value)
        except (ValueError, OverflowError):
            self.bad(name, f"a number of seconds expected, got {self.show(value)}")
            return default
        if not math.isfinite(f):
            self.bad(name, f"a finite number expected, got {self.show(value)}")
            return default
        too_low = f < lo if lo_inclusive else f <= lo
        if too_low or f > hi:
            rel = ">=" if lo_inclusive else ">"
            self.bad(name, f"must be {rel} {lo:g} and <= {hi:g}, got {f:g}")
            return default
        return f

    def bool_(self, *names: str, default: bool) -> bool:
        got = self.raw(*names)
        if got is None:
            return default
        name, value = got
        v = value.lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        self.bad(name, f"true or false expected, got {self.show(value)}")
        return default

    def choice(
        self,
        name: str,
        default: str,
        choices: Mapping[str, str] | tuple[str, ...],
        upper: bool = False,
    ) -> str:
        got = self.raw(name)
        if got is None:
            return default
        _, value = got
        mapping = choices if isinstance(choices, Mapping) else {c: c for c in choices}
        key = value.upper() if upper else value.lower()
        if key in mapping:
            return mapping[key]
        allowed = ", ".join(dict.fromkeys(mapping))
        self.bad(name, f"must be one of {allowed}; got {self.show(value)}")
        return default

    def list_(self, *names: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        got = self.raw(*names)
        if got is None:
            return default
        return tuple(p.strip() for p in got[1].split(",") if p.strip())

    def ident(self, name: str, default: str) -> str:
        got = self.raw(name)
        if got is None:
            return default
        value = got[1]
        if not _IDENT_RE.match(value) or len(value) > 128:
            self.bad(
                name, f"must be a plain table name (letters, digits, _), got {self.show(value)}"
            )
            return default
        return value


def _read_secret_file(
    r: _Reader, var: str, path: str, limit: int = _MAX_SECRET_FILE, what: str = "a single secret"
) -> str | None:
    fname = f"{var}_FILE"
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        r.bad(fname, f"file {r.show(path)} does not exist")
        return None
    except IsADirectoryError:
        r.bad(fname, f"{r.show(path)} is a directory, not a file")
        return None
    except PermissionError:
        r.bad(fname, f"file {r.show(path)} is not readable (permission denied)")
        return None
    except (OSError, ValueError) as exc:
        r.bad(fname, f"cannot read {r.show(path)} ({type(exc).__name__})")
        return None
    if len(data) > limit:
        r.bad(fname, f"file {r.show(path)} is larger than {limit // 1024} KiB; expected {what}")
        return None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        r.bad(fname, f"file {r.show(path)} is not UTF-8 text")
        return None
    if not text:
        r.bad(fname, f"file {r.show(path)} is empty")
        return None
    return text


def _merge_layers(
    environ: Mapping[str, str], dotenv: Mapping[str, str], r: _Reader
) -> dict[str, str]:
    """Environment wins over .env. For secrets the pair VAR / VAR_FILE is resolved per
    layer: whatever the environment says about a secret (either form) wins over .env;
    both forms in the same layer is an error."""
    merged: dict[str, str] = {k: v for k, v in dotenv.items()}
    merged.update({k: v for k, v in environ.items() if isinstance(v, str)})

    def _set(m: Mapping[str, str], k: str) -> bool:
        v = m.get(k)
        return v is not None and v.strip() != ""

    for var in FILE_VARS:
        fvar = f"{var}_FILE"
        for layer, label in ((environ, "environment"), (dotenv, ".env file")):
            if _set(layer, var) and _set(layer, fvar):
                r.bad(var, f"both {var} and {fvar} are set in the {label}; set only one")
        if _set(environ, var) or _set(environ, fvar):
            # The environment decides; drop the .env forms it does not use.
            for k in (var, fvar):
                if _set(environ, k):
                    merged[k] = environ[k]
                else:
                    merged.pop(k, None)
    return merged


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_plain_http(r: _Reader, name: str, value: str, allow: bool) -> bool:
    """http:// (key and calls in cleartext) only to loopback or with API_ALLOW_INSECURE_HTTP."""
    parts = urlsplit(value)
    if allow or parts.scheme.lower() != "http" or _is_loopback(parts.hostname):
        return False
    r.bad(
        name,
        f"http:// sends the API key and every call in cleartext to {parts.hostname}; use "
        "https://, or set API_ALLOW_INSECURE_HTTP=true for a trusted network",
    )
    return True


def _api_urls(r: _Reader, region: str, allow_http: bool = False) -> tuple[str, str]:
    region = region if region in REGION_HOSTS else api_urls.DEFAULT_REGION  # bad() already said
    calls_url = api_urls.region_urls(region)[0]
    recording_url = ""
    got = r.raw("API_ENDPOINT", "API_URL")
    if got is not None:
        name, value = got
        ok = True
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            ok = False
            parts = urlsplit("")
        if not ok or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            r.bad(name, f"must be an http:// or https:// URL with a host, got {r.show(value)}")
        elif parts.username or parts.password:
            r.bad(name, "must not contain credentials; the key goes in API_KEY")
        elif any(c.isspace() for c in value):
            r.bad(name, "must not contain whitespace")
        elif _refuse_plain_http(r, name, value, allow_http):
            pass
        else:
            calls_url = api_urls.with_calls_path(value)
    got = r.raw("RECORDING_API_URL")
    if got is not None:
        name, value = got
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            r.bad(name, f"must be an http:// or https:// URL with a host, got {r.show(value)}")
        elif not _refuse_plain_http(r, name, value, allow_http):
            recording_url = value
    return calls_url, api_urls.recording_url(calls_url, recording_url, region)


def _pairs(r: _Reader, name: str) -> tuple[tuple[str, str], ...]:
    """`key:value,key2:value2` or a JSON object, from `name` or the file `name`_FILE."""
    got_file = r.raw(f"{name}_FILE")
    got = r.raw(name)
    if got_file is not None:
        text = _read_secret_file(r, name, got_file[1], MAX_TENANT_MAP_FILE, "a tenant map")
        got = None if text is None else (name, text)
    if got is None:
        return ()
    value = got[1]
    out: list[tuple[str, str]] = []
    if value.startswith("{"):
        try:
            obj = json.loads(value)
        except ValueError:
            r.bad(name, "looks like JSON but does not parse; use key:tenant,key2:tenant2")
            return ()
        if not isinstance(obj, dict) or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in obj.values()
        ):
            r.bad(name, "JSON must be an object of key -> tenant strings")
            return ()
        for k, v in obj.items():
            if str(k).strip() and str(v).strip():
                out.append((str(k).strip(), str(v).strip()))
        return tuple(out)
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        k, sep, v = item.partition(":")
        if not sep or not k.strip() or not v.strip():
            r.bad(name, f"entries must look like key:tenant, got {r.show(item)}")
            continue
        out.append((k.strip(), v.strip()))
    return tuple(out)


def _hostname() -> str:
    try:
        return os.uname().nodename or "asterisk"
    except OSError:
        return "asterisk"


def _default_connector_id(hostname: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", hostname).strip("-._")[:128]
    return cleaned or "asterisk"


CONTROL_TOKEN_MIN = 16


def _control_token(r: _Reader, token: str) -> str:
    if token and (len(token) < CONTROL_TOKEN_MIN or not token.isprintable() or " " in token):
        r.bad("CONTROL_TOKEN", f"at least {CONTROL_TOKEN_MIN} printable characters, no spaces")
    return token


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | None = None,
    *,
    read: set[str] | None = None,
) -> Settings:
    """Read the settings once at start-up.

    `environ` defaults to `os.environ`. `env_file` is read only when given (the CLI
    passes `--env-file`, or `./.env` when it exists); the environment wins over it.
    Raises `ConfigError` listing every problem, one line per problem, each starting
    with the variable's name; secret values never appear in a message. `read`, when
    given, receives the name of every variable the loader looked at.
    """
    env_in: Mapping[str, str] = os.environ if environ is None else environ
    r0 = _Reader({})
    dotenv: dict[str, str] = {}
    if env_file is not None:
        try:
            with open(env_file, encoding="utf-8") as fh:
                text = fh.read(4 * 1024 * 1024)
        except UnicodeDecodeError:
            r0.bad("ENV_FILE", f"{r0.show(env_file)} is not UTF-8 text")
            text = ""
        except (OSError, ValueError) as exc:
            r0.bad("ENV_FILE", f"cannot read {r0.show(env_file)} ({type(exc).__name__})")
            text = ""
        dotenv, env_problems = parse_env_file(text, env_file)
        r0.problems.extend(env_problems)
    merged = RawEnv(_merge_layers(env_in, dotenv, r0), env_in)
    r = _Reader(merged)
    r.problems.extend(r0.problems)

    # -- secrets ------------------------------------------------------------
    secrets: dict[str, str] = {}
    for var in SECRET_VARS:
        r.names.add(var)
        got_file = r.raw(f"{var}_FILE")
        if got_file is not None:
            secrets[var] = _read_secret_file(r, var, got_file[1]) or ""
        else:
            raw = merged.get(var)
            secrets[var] = raw.strip() if raw is not None else ""

    # -- API ----------------------------------------------------------------
    region = r.str_("REGION", default="us1").lower()
    if region not in REGION_HOSTS:
        r.bad("REGION", f"unknown region {r.show(region)}; one of {', '.join(REGION_HOSTS)}")
    allow_http = r.bool_("API_ALLOW_INSECURE_HTTP", default=False)
    calls_url, recording_url = _api_urls(r, region, allow_http)
    api_key = secrets["API_KEY"]
    if not api_key:
        r.bad("API_KEY", "required (or API_KEY_FILE): the SIPSTACK API key, sk_...")
    elif any(not (c in string.printable and not c.isspace()) for c in api_key):
        r.bad(
            "API_KEY",
            "contains whitespace, control or non-ASCII characters; "
            "it cannot be sent in an HTTP header (value not shown)",
        )
    elif api_key_format(api_key) == "unknown":
        r.warnings.append(
            f"API_KEY: {redact_key(api_key)} does not look like sk_ + 32 characters or a tiered "
            "sk_t<0-4>_ key; using it anyway (the API decides; run `sipstack-agent check`)"
        )
    api = ApiSettings(
        url=calls_url,
        recording_url=recording_url,
        api_key=api_key,
        region=region,
        timeout=r.float_("API_TIMEOUT", default=30.0, hi=600),
        concurrency=r.int_("API_CONCURRENCY", default=8, lo=1, hi=256),
        retry_horizon=r.float_("API_RETRY_HORIZON", default=48 * 3600.0, hi=30 * 86400),
        allow_insecure_http=allow_http,
    )

    # -- CEL mode and database ---------------------------------------------
    r.names.add("CEL_MODE")
    cel_raw = merged.get("CEL_MODE")
    cel_mode = "none"
    if cel_raw is not None and cel_raw.strip():
        v = cel_raw.strip().lower()
        if v in CEL_MODES:
            cel_mode = v
        elif v in ("off", "disabled", "cdr", "cdr-only", "cdr_only"):
            cel_mode = "none"
        else:
            r.bad(
                "CEL_MODE",
                f"must be one of db, csv, ami, none (or empty = CDR only); "
                f"got {r.show(cel_raw.strip())}",
            )

    db_type_raw = r.raw("DB_TYPE")
    db_name = r.str_("DB_NAME")
    database_enabled = True
    if db_type_raw is None:
        if cel_mode in ("csv", "ami") and not db_name and r.raw("DB_HOST") is None:
            database_enabled = False  # CEL-only install: no CDR table to read
            db_type = "sqlite"
        else:
            db_type = "mysql"  # the old connector's default
    else:
        db_type = DB_TYPE_ALIASES.get(db_type_raw[1].lower(), "")
        if not db_type:
            r.bad(
                "DB_TYPE",
                f"must be postgresql (postgres), mysql (mariadb) or sqlite; "
                f"got {r.show(db_type_raw[1])}",
            )
            db_type = "mysql"
    if cel_mode == "db" and not database_enabled:
        database_enabled = True
    if database_enabled and not db_name:
        what = "the SQLite file path" if db_type == "sqlite" else "the database name, e.g. asterisk"
        r.bad("DB_NAME", f"required: {what}")
    if not database_enabled and cel_mode == "none":
        r.bad("DB_TYPE", "no database and no CEL source: set DB_TYPE/DB_NAME or CEL_MODE")

    db_tz = r.str_("DB_TIMEZONE", default=AUTO)
    if db_tz.lower() == AUTO:
        db_tz = AUTO
    else:
        try:
            tzinfo_of(db_tz)
        except ValueError:
            r.bad(
                "DB_TIMEZONE",
                f"auto, an IANA time zone (UTC, America/Toronto) or an offset (+05:30) "
                f"expected, got {r.show(db_tz)}",
            )
            db_tz = AUTO

    sslmode = ""
    got = r.raw("DB_SSLMODE")
    if got is not None:
        sslmode = got[1].lower()
        if sslmode not in SSL_MODES:
            r.bad("DB_SSLMODE", f"must be one of {', '.join(SSL_MODES)}; got {r.show(got[1])}")
            sslmode = ""
    sslrootcert = r.str_("DB_SSLROOTCERT")
    if sslrootcert and not os.path.isfile(sslrootcert):
        r.bad("DB_SSLROOTCERT", f"file {r.show(sslrootcert)} does not exist")
    if (sslmode or sslrootcert) and db_type == "sqlite":
        r.warnings.append("DB_SSLMODE/DB_SSLROOTCERT: ignored for DB_TYPE=sqlite")

    db_host = r.str_("DB_HOST", default="localhost")
    if any(c.isspace() or c == "/" for c in db_host) and db_type != "sqlite":
        r.bad("DB_HOST", f"must be a host name or IP address, got {r.show(db_host)}")
    database = DatabaseSettings(
        type=db_type,
        host=db_host,
        port=r.int_("DB_PORT", default=0, lo=0, hi=65535),
        user=r.str_("DB_USER", default="asterisk" if db_type != "sqlite" else ""),
        password=secrets["DB_PASSWORD"],
        name=db_name,
        table_cdr=r.ident("DB_TABLE_CDR", "cdr"),
        table_cel=r.ident("DB_TABLE_CEL", "cel"),
        table_recordings=r.ident("DB_TABLE_RECORDINGS", ""),
        timezone=db_tz,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        pool_size=r.int_("DB_POOL_SIZE", default=4, lo=1, hi=64),
        connect_timeout=r.float_("DB_CONNECT_TIMEOUT", default=10.0, hi=600),
    )

    # -- calls ----------------------------------------------------------------
    ext_min = r.int_("ASTERISK_EXT_MIN_LENGTH", default=2, lo=1, hi=20)
    ext_max = r.int_("ASTERISK_EXT_MAX_LENGTH", default=7, lo=1, hi=20)
    if ext_min > ext_max:
        r.bad(
            "ASTERISK_EXT_MIN_LENGTH",
            f"({ext_min}) must not exceed ASTERISK_EXT_MAX_LENGTH ({ext_max})",
        )
    intl: list[str] = []
    for p in r.list_("ASTERISK_INTL_PREFIXES", default=("011", "00")):
        if p == "+":
            continue  # "+" is always international
        if not p.isascii() or not p.isdigit() or len(p) > 6:
            r.bad("ASTERISK_INTL_PREFIXES", f"entries must be digits like 011,00; got {r.show(p)}")
        else:
            intl.append(p)
    cc = r.str_("DEFAULT_COUNTRY_CODE").lstrip("+")
    if cc and (not cc.isascii() or not cc.isdigit() or len(cc) > 3):
        r.bad("DEFAULT_COUNTRY_CODE", f"1 to 3 digits expected (e.g. 1, 44), got {r.show(cc)}")
        cc = ""
    strip_prefixes: list[str] = []
    strip_items = r.list_("STRIP_DIAL_PREFIXES")
    if len(strip_items) == 1 and strip_items[0].lower() in _BOOL_WORDS:
        # The old .env.example's STRIP_DIAL_PREFIXES=true named no prefix: none was stripped.
        if strip_items[0].lower() in _TRUE:
            r.warnings.append(
                f"STRIP_DIAL_PREFIXES: {r.show(strip_items[0])} names no prefix, so none is "
                "stripped (as by the old connector); list them, e.g. *67,*82"
            )
        strip_items = ()
    for p in strip_items:
        if not re.fullmatch(r"[0-9*#+]{1,8}", p):
            r.bad(
                "STRIP_DIAL_PREFIXES",
                f"entries must be dial prefixes like *67,*82,9; got {r.show(p)}",
            )
        else:
            strip_prefixes.append(p)
    direction = DirectionSettings(
        ext_min_length=ext_min,
        ext_max_length=ext_max,
        intl_prefixes=tuple(intl),
        known_trunks=r.list_("KNOWN_TRUNKS"),
        default_country_code=cc,
        strip_dial_prefixes=tuple(strip_prefixes),
        e164=r.bool_("ASTERISK_E164_ENABLED", default=True),
    )
    pattern = r.str_("TENANT_CONTEXT_PATTERN")
    if pattern:
        try:
            if re.compile(pattern).groups < 1:
                r.bad("TENANT_CONTEXT_PATTERN", "needs one capturing group, e.g. ^from-(\\w+)-")
                pattern = ""
        except (re.error, RecursionError, OverflowError):
            r.bad("TENANT_CONTEXT_PATTERN", f"not a valid regular expression: {r.show(pattern)}")
            pattern = ""
    tenant = r.str_("TENANT")
    tenants = TenantSettings(
        tenant=tenant,
        did_map=_pairs(r, "DID_TENANT_MAP"),
        accountcode_map=_pairs(r, "ACCOUNTCODE_TENANT_MAP"),
        context_pattern=pattern,
    )
    idle = r.float_("CALL_IDLE_TIMEOUT", default=30.0, hi=86400)
    max_age = r.float_("CALL_MAX_AGE", default=6 * 3600.0, hi=30 * 86400)
    if max_age <= idle:
        r.bad("CALL_MAX_AGE", f"({max_age:g} s) must exceed CALL_IDLE_TIMEOUT ({idle:g} s)")
    shipping_mode = r.choice("CALL_SHIPPING_MODE", "complete", SHIPPING_MODES)
    # The old SHIP_INCOMPLETE_AFTER: when a call still running is shipped (docs/migration.md).
    old_incomplete = ("SHIP_INCOMPLETE_AFTER",)
    progressive = shipping_mode == "progressive"
    settle = r.float_("SHIP_COMPLETE_AFTER", default=0.0, hi=86400, lo_inclusive=True)
    if settle >= max_age:
        r.bad("SHIP_COMPLETE_AFTER", f"({settle:g} s) must be below CALL_MAX_AGE ({max_age:g} s)")
        settle = 0.0
    calls = CallSettings(
        idle_timeout=idle,
        max_age=max_age,
        shipping_mode=shipping_mode,
        long_call_update_interval=r.float_(
            "LONG_CALL_UPDATE_INTERVAL",
            *(() if progressive else old_incomplete),
            default=600.0,
            hi=86400,
            lo_inclusive=True,
        ),
        ship_update_min_interval=r.float_(
            "SHIP_UPDATE_MIN_INTERVAL",
            *(old_incomplete if progressive else ()),
            default=30.0,
            hi=86400,
            lo_inclusive=True,
        ),
        ship_complete_after=settle,
        cdr_only=cel_mode == "none",
        timezone=db_tz,
        direction=direction,
        tenants=tenants,
    )

    # -- identity -------------------------------------------------------------
    hostname = r.str_("HOST_HOSTNAME") or _hostname()
    connector_id = r.str_("CONNECTOR_ID")
    if connector_id and not _CONNECTOR_ID_RE.match(connector_id):
        r.bad(
            "CONNECTOR_ID",
            f"letters, digits, . _ - / @ only (max 128), got {r.show(connector_id)}",
        )
        connector_id = ""
    identity = Identity(
        customer_id=r.int_("CUSTOMER_ID", default=0, lo=0, hi=2**63 - 1),
        tenant=tenant,
        hostname=hostname,
        connector_id=connector_id or _default_connector_id(hostname),
        version=__version__,
    )

    # -- CEL feeds --------------------------------------------------------------
    csv_cols = tuple(c.lower() for c in r.list_("CEL_CSV_COLUMNS"))
    if csv_cols:
        known = set(CEL_COLUMNS) | {"id", "-", "_"}
        unknown = [c for c in csv_cols if c not in known]
        if unknown:
            # The CSV reader skips columns it does not know; say so, it may be a typo.
            r.warnings.append(
                f"CEL_CSV_COLUMNS: {', '.join(map(r.show, unknown[:5]))} not cel column(s); "
                "those CSV fields are ignored"
            )
        missing = [c for c in CEL_REQUIRED_COLUMNS if c not in csv_cols]
        if missing:
            r.bad("CEL_CSV_COLUMNS", f"must include {', '.join(missing)}")
    csv = CsvSettings(
        path=r.str_("CEL_CSV_PATH", default=CsvSettings.path),
        poll_interval=r.float_("CEL_CSV_POLL_INTERVAL", default=2.0, hi=3600),
        columns=csv_cols,
    )
    ami = AmiSettings(
        host=r.str_("AMI_HOST", default="127.0.0.1"),
        port=r.int_("AMI_PORT", default=5038, lo=1, hi=65535),
        username=r.str_("AMI_USERNAME"),
        password=secrets["AMI_PASSWORD"],
        tls=r.bool_("AMI_TLS", default=False),
        ping_interval=r.float_("AMI_PING_INTERVAL", default=20.0, hi=3600),
        events=r.str_("AMI_EVENTS", default="call"),
        tls_verify=r.bool_("AMI_TLS_VERIFY", default=True),
        tls_ca_file=r.str_("AMI_TLS_CA_FILE"),
        auth=r.choice("AMI_AUTH", "auto", ("auto", "md5", "plain")),
        connect_timeout=r.float_("AMI_CONNECT_TIMEOUT", default=10.0, hi=600),
    )
    if ami.tls_ca_file and not os.path.isfile(ami.tls_ca_file):
        r.bad("AMI_TLS_CA_FILE", f"file {r.show(ami.tls_ca_file)} does not exist")
    if cel_mode == "ami":
        if not ami.username:
            r.bad("AMI_USERNAME", "required with CEL_MODE=ami (the manager.conf section name)")
        if not ami.password:
            r.bad("AMI_PASSWORD", "required with CEL_MODE=ami (or AMI_PASSWORD_FILE)")

    # -- recordings -----------------------------------------------------------
    rec_cols = r.list_("RECORDINGS_COLUMNS", default=RecordingSettings.columns)
    for c in rec_cols:
        if not _IDENT_RE.match(c):
            r.bad("RECORDINGS_COLUMNS", f"column names must be plain identifiers, got {r.show(c)}")
            rec_cols = RecordingSettings.columns
            break
    exts = tuple(
        x.lstrip(".")
        for x in r.list_("RECORDING_FILE_EXTENSIONS", default=RecordingSettings.extensions)
    )
    for x in exts:
        if not re.fullmatch(r"[A-Za-z0-9]{1,10}", x):
            r.bad("RECORDING_FILE_EXTENSIONS", f"extensions like wav,mp3 expected, got {r.show(x)}")
            exts = RecordingSettings.extensions
            break
    rec_paths = r.list_("RECORDING_PATHS", default=RecordingSettings.paths)
    if [p.lower() for p in rec_paths] == ["none"]:
        rec_paths = ()  # no recording directories: recordings are not looked for in files
    for p in rec_paths:
        if not p.startswith("/"):
            r.bad("RECORDING_PATHS", f"paths must be absolute, got {r.show(p)}")
            break
    recordings = RecordingSettings(
        paths=rec_paths,
        extensions=exts,
        stability_check_count=r.int_("RECORDING_STABILITY_CHECK_COUNT", default=3, lo=1, hi=100),
        stability_check_interval=r.float_(
            "RECORDING_STABILITY_CHECK_INTERVAL", "RECORDING_STABILITY_CHECK", default=2.0, hi=3600
        ),
        upload=r.bool_("RECORDING_UPLOAD", default=False),
        upload_concurrency=r.int_(
            "RECORDING_UPLOAD_CONCURRENCY",
            "RECORDING_BATCH_SIZE",
            "RECORDING_UPLOAD_BATCH_SIZE",
            default=2,
            lo=1,
            hi=64,
        ),
        delete_after_upload=r.bool_(
            "DELETE_RECORDINGS_AFTER_UPLOAD", "RECORDING_DELETE_AFTER_UPLOAD", default=False
        ),
        columns=rec_cols,
        scan_budget=r.int_("RECORDING_SCAN_BUDGET", default=2000, lo=10, hi=10_000_000),
        poll_interval=r.float_("RECORDING_POLL_INTERVAL", default=5.0, hi=3600),
        fs_index_window=r.float_("RECORDING_INDEX_WINDOW", default=2 * 86400.0, hi=365 * 86400),
        known_call_window=r.float_("RECORDING_KNOWN_CALL_WINDOW", default=3600.0, hi=30 * 86400),
        known_call_max=r.int_("RECORDING_KNOWN_CALL_MAX", default=5_000, lo=100, hi=10_000_000),
    )
    if rec_paths:  # documents name relative MixMonitor files where the uploader finds them
        calls = replace(calls, monitor_dir=rec_paths[0])

    # -- reading, state, logging, monitoring -------------------------------------
    start_raw = r.str_("START_FROM", default="latest")
    start_from = start_raw.lower()
    start_from_time: datetime | None = None
    if start_from not in ("latest", "beginning"):
        try:
            t = datetime.fromisoformat(
                start_raw.replace("Z", "+00:00") if start_raw.endswith("Z") else start_raw
            )
            if t.tzinfo is not None or db_tz != AUTO:
                # naive = PBX time, like the tables (with auto: once the zone is found)
                start_from_time = t.astimezone(UTC) if t.tzinfo else configured(db_tz).local(t)
                start_from = start_from_time.isoformat()
            else:
                start_from = t.isoformat()
        except (ValueError, OverflowError):
            r.bad(
                "START_FROM",
                f"latest, beginning or an ISO time (2025-08-20T15:00:00+00:00) "
                f"expected, got {r.show(start_raw)}",
            )
            start_from = "latest"
    batch_size = r.int_("CDR_BATCH_SIZE", "BATCH_SIZE", default=500, lo=1, hi=100_000)
    max_per_poll = r.int_("MAX_RECORDS_PER_POLL", default=5000, lo=1, hi=10_000_000)
    if max_per_poll < batch_size and r.raw("MAX_RECORDS_PER_POLL") is not None:
        r.warnings.append(
            f"MAX_RECORDS_PER_POLL ({max_per_poll}) is below CDR_BATCH_SIZE ({batch_size}); "
            "a poll reads at most MAX_RECORDS_PER_POLL rows"
        )
    state_dir = r.str_("STATE_DIR", default="/data")
    state_synchronous = r.choice(
        "STATE_SYNCHRONOUS",
        "FULL" if cel_mode == "ami" else "NORMAL",
        {"normal": "NORMAL", "full": "FULL"},
    )
    puid = r.int_("PUID", default=-1, lo=0, hi=2**31 - 1)
    pgid = r.int_("PGID", default=-1, lo=0, hi=2**31 - 1)
    if pgid >= 0 and puid < 0:
        r.bad("PGID", "set PUID too: the uid the agent runs as when started as root")
    if (unused := unused_warning(merged)) is not None:
        r.warnings.append(unused)
    log_format = r.choice("LOG_FORMAT", "text", ("text", "json"))
    settings = Settings(
        database=database,
        api=api,
        calls=calls,
        identity=identity,
        csv=csv,
        ami=ami,
        recordings=recordings,
        cel_mode=cel_mode,
        poll_interval=r.float_(
            "CDR_POLL_INTERVAL", "POLL_INTERVAL", default=2.0, lo=0.01, hi=3600, lo_inclusive=True
        ),
        batch_size=batch_size,
        max_records_per_poll=max_per_poll,
        overlap_ids=r.int_("POLL_OVERLAP_IDS", default=200, lo=0, hi=1_000_000),
        lookback_seconds=r.float_(
            "POLL_LOOKBACK_SECONDS", default=120.0, hi=86400, lo_inclusive=True
        ),
        cdr_max_call_duration=r.float_(
            "CDR_MAX_CALL_DURATION", default=14400.0, lo=60, hi=7 * 86400, lo_inclusive=True
        ),
        cdr_lookup_wait=r.float_("CDR_LOOKUP_WAIT", default=15.0, hi=3600, lo_inclusive=True),
        start_from=start_from,
        start_from_time=start_from_time,
        state_dir=state_dir,
        state_synchronous=state_synchronous,
        state_recovery_lookback=r.float_(
            "STATE_RECOVERY_LOOKBACK", default=86400.0, hi=90 * 86400, lo_inclusive=True
        ),
        state_tombstone_retention=r.float_(
            "STATE_TOMBSTONE_RETENTION", default=7 * 86400.0, hi=365 * 86400, lo_inclusive=True
        ),
        log_level=r.choice("LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
        log_format=log_format,
        log_numbers=r.bool_("LOG_NUMBERS", default=False),
        monitoring_port=r.int_("MONITORING_PORT", default=8000, lo=0, hi=65535),
        monitoring_host=r.str_("MONITORING_HOST", default="0.0.0.0"),  # noqa: S104
        shutdown_grace=r.float_("SHUTDOWN_GRACE", default=10.0, hi=3600),
        database_enabled=database_enabled,
        run_as=(puid, pgid if pgid >= 0 else puid) if puid >= 0 else None,
        warnings=tuple(r.warnings),
        control_token=_control_token(r, secrets["CONTROL_TOKEN"]),
    )
    if read is not None:
        read.update(r.names)
    if (comments := merged.warning()) is not None:
        settings = replace(settings, warnings=(comments, *settings.warnings))
    if r.problems:
        # One line per problem, stable order, no duplicates.
        raise ConfigError(list(dict.fromkeys(r.problems)))
    return settings


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Names in `environ` that `load_settings(environ)` does not read, sorted.

    A typo, a stale name, or a variable of a feature that is off in this
    configuration (the loader reads what the settings need, nothing else).
    """
    read: set[str] = set()
    with contextlib.suppress(ConfigError):  # the names are collected all the same
        load_settings(environ, read=read)
    return sorted(set(environ) - read)
