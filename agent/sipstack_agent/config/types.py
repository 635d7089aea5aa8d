"""The frozen settings of the agent: `Settings` and its sections.

The contract every stage codes against; tests build them directly with keyword
arguments. `load_settings()` (config/load.py) fills them from the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .. import __version__
from ..rules import api_urls
from ..rules.mixmonitor import MONITOR_DIR


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
    # STATE_MIN_FREE_MB: room kept on the state disk for deliveries; None = auto (10 % of
    # the filesystem, 32-256 MB), 0 = none (state/room.py).
    state_min_free_mb: int | None = None
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
