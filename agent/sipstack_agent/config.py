"""Typed, validated settings of the agent.

Stdlib only. `load_settings()` reads the environment (and an optional .env file
and `*_FILE` variants) once at start-up and returns a frozen `Settings`; every
bad value is reported as one line naming its variable (`ConfigError.problems`).

The dataclasses below are the contract every stage codes against; tests build
them directly with keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class ConfigError(Exception):
    """One or more configuration problems; each names its variable."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


REGION_HOSTS: dict[str, str] = {
    "ca1": "api-ca1.sipstack.com",
    "us1": "api-us1.sipstack.com",
    "us2": "api-us2.sipstack.com",
    "dev": "api-dev.sipstack.com",
}


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
    timezone: str = "UTC"  # IANA zone of naive DB timestamps
    sslmode: str = ""  # disable | allow | prefer | require | verify-ca | verify-full
    sslrootcert: str = ""
    pool_size: int = 4
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class ApiSettings:
    url: str = "https://api-us1.sipstack.com/v1/mqs/connectors/asterisk/calls"
    recording_url: str = "https://api-us1.sipstack.com/v1/mqs/recording"
    api_key: str = field(default="", repr=False)
    region: str = "us1"
    timeout: float = 30.0
    concurrency: int = 8
    retry_horizon: float = 48 * 3600.0  # seconds before a retrying document is dead-lettered
    backoff_initial: float = 1.0
    backoff_cap: float = 300.0


@dataclass(frozen=True)
class DirectionSettings:
    ext_min_length: int = 2
    ext_max_length: int = 7
    intl_prefixes: tuple[str, ...] = ("011", "00")
    known_trunks: tuple[str, ...] = ()
    default_country_code: str = ""  # e.g. "1"; empty = never expand national numbers
    strip_dial_prefixes: tuple[str, ...] = ()


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
    cdr_only: bool = False  # no CEL source: a call is its CDR rows
    timezone: str = "UTC"  # reported in documents
    direction: DirectionSettings = field(default_factory=DirectionSettings)
    tenants: TenantSettings = field(default_factory=TenantSettings)


@dataclass(frozen=True)
class Identity:
    """Fields stamped on every document and used in Idempotency-Key."""

    customer_id: int = 0
    tenant: str = ""
    hostname: str = ""
    connector_id: str = ""  # stable id of this agent (defaults to hostname)
    version: str = "0.14.0"


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


@dataclass(frozen=True)
class RecordingSettings:
    paths: tuple[str, ...] = ("/var/spool/asterisk/monitor",)
    extensions: tuple[str, ...] = ("wav", "mp3", "gsm", "ogg", "WAV")
    stability_check_count: int = 3
    stability_check_interval: float = 2.0
    upload: bool = False
    upload_concurrency: int = 2
    delete_after_upload: bool = False
    columns: tuple[str, ...] = ("linkedid", "uniqueid", "filename", "file_path", "created_at")
    scan_budget: int = 2000  # directory entries looked at per filesystem scan


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
    start_from: str = "latest"  # latest | beginning | ISO time
    start_from_time: datetime | None = None
    state_dir: str = "/data"
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    log_numbers: bool = False  # phone numbers at INFO
    monitoring_port: int = 8000
    monitoring_host: str = "0.0.0.0"  # noqa: S104 - metrics must be scrapeable
    shutdown_grace: float = 10.0
