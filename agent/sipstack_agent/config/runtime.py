"""The top level of `Settings`: reading the CDR table (start, polling), the state
store, the process (PUID/PGID, shutdown), logging, monitoring and control."""

from __future__ import annotations

from datetime import UTC, datetime

from ..zones import AUTO, configured
from .reader import Reader
from .spec import Table, auto_or, boolean, choice, integer, seconds, show, text
from .types import (
    AmiSettings,
    ApiSettings,
    CallSettings,
    CsvSettings,
    DatabaseSettings,
    Identity,
    RecordingSettings,
    Settings,
)

LOG_LEVELS: dict[str, str] = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
CONTROL_TOKEN_MIN = 16
_UID = integer(0, 2**31 - 1)

_D = Settings()

TABLE = Table("runtime")
CONTROL_TOKEN = TABLE.secret("CONTROL_TOKEN")
START_FROM = TABLE.var("START_FROM", text, _D.start_from)  # latest | beginning | ISO time
CDR_BATCH_SIZE = TABLE.var("CDR_BATCH_SIZE", integer(1, 100_000), _D.batch_size, "BATCH_SIZE")
MAX_RECORDS_PER_POLL = TABLE.var(
    "MAX_RECORDS_PER_POLL", integer(1, 10_000_000), _D.max_records_per_poll
)
STATE_DIR = TABLE.var("STATE_DIR", text, _D.state_dir)
STATE_SYNCHRONOUS = TABLE.var(
    "STATE_SYNCHRONOUS", choice({"normal": "NORMAL", "full": "FULL"}), _D.state_synchronous
)
# MB the writes that grow the state store leave free for deliveries (state/room.py)
STATE_MIN_FREE_MB = TABLE.var(
    "STATE_MIN_FREE_MB", auto_or(integer(0, 1_000_000)), _D.state_min_free_mb
)
PUID = TABLE.var("PUID", _UID, -1)  # -1 = not set
PGID = TABLE.var("PGID", _UID, -1)
LOG_FORMAT = TABLE.var("LOG_FORMAT", choice(("text", "json")), _D.log_format)
CDR_POLL_INTERVAL = TABLE.var(
    "CDR_POLL_INTERVAL",
    seconds(lo=0.01, hi=3600, lo_inclusive=True),
    _D.poll_interval,
    "POLL_INTERVAL",
)
POLL_OVERLAP_IDS = TABLE.var("POLL_OVERLAP_IDS", integer(0, 1_000_000), _D.overlap_ids)
POLL_LOOKBACK_SECONDS = TABLE.var(
    "POLL_LOOKBACK_SECONDS", seconds(hi=86400, lo_inclusive=True), _D.lookback_seconds
)
CDR_MAX_CALL_DURATION = TABLE.var(
    "CDR_MAX_CALL_DURATION",
    seconds(lo=60, hi=7 * 86400, lo_inclusive=True),
    _D.cdr_max_call_duration,
)
CDR_LOOKUP_WAIT = TABLE.var(
    "CDR_LOOKUP_WAIT", seconds(hi=3600, lo_inclusive=True), _D.cdr_lookup_wait
)
STATE_RECOVERY_LOOKBACK = TABLE.var(
    "STATE_RECOVERY_LOOKBACK", seconds(hi=90 * 86400, lo_inclusive=True), _D.state_recovery_lookback
)
STATE_TOMBSTONE_RETENTION = TABLE.var(
    "STATE_TOMBSTONE_RETENTION",
    seconds(hi=365 * 86400, lo_inclusive=True),
    _D.state_tombstone_retention,
)
LOG_LEVEL = TABLE.var("LOG_LEVEL", choice(LOG_LEVELS, upper=True), _D.log_level)
LOG_NUMBERS = TABLE.var("LOG_NUMBERS", boolean, _D.log_numbers)
MONITORING_PORT = TABLE.var("MONITORING_PORT", integer(0, 65535), _D.monitoring_port)
MONITORING_HOST = TABLE.var("MONITORING_HOST", text, _D.monitoring_host)
SHUTDOWN_GRACE = TABLE.var("SHUTDOWN_GRACE", seconds(hi=3600), _D.shutdown_grace)


def _start_from(r: Reader, db_tz: str) -> tuple[str, datetime | None]:
    start_raw = r.get(START_FROM)
    start_from = start_raw.lower()
    if start_from in ("latest", "beginning"):
        return start_from, None
    try:
        t = datetime.fromisoformat(
            start_raw.replace("Z", "+00:00") if start_raw.endswith("Z") else start_raw
        )
        if t.tzinfo is None and db_tz == AUTO:
            return t.isoformat(), None
        # naive = PBX time, like the tables (with auto: once the zone is found)
        at = t.astimezone(UTC) if t.tzinfo else configured(db_tz).local(t)
    except (ValueError, OverflowError):
        r.bad(
            START_FROM.name,
            f"latest, beginning or an ISO time (2025-08-20T15:00:00+00:00) "
            f"expected, got {show(start_raw)}",
        )
        return "latest", None
    return at.isoformat(), at


def _control_token(r: Reader, token: str) -> str:
    if token and (len(token) < CONTROL_TOKEN_MIN or not token.isprintable() or " " in token):
        r.bad(CONTROL_TOKEN.name, f"at least {CONTROL_TOKEN_MIN} printable characters, no spaces")
    return token


def load(
    r: Reader,
    *,
    cel_mode: str,
    database: DatabaseSettings,
    database_enabled: bool,
    api: ApiSettings,
    calls: CallSettings,
    identity: Identity,
    csv: CsvSettings,
    ami: AmiSettings,
    recordings: RecordingSettings,
    control_token: str,
) -> Settings:
    """`Settings` of the sections read before, with the top-level variables."""
    start_from, start_from_time = _start_from(r, database.timezone)
    batch_size = r.get(CDR_BATCH_SIZE)
    max_per_poll = r.get(MAX_RECORDS_PER_POLL)
    if max_per_poll < batch_size and r.is_set(MAX_RECORDS_PER_POLL):
        r.warn(
            f"{MAX_RECORDS_PER_POLL.name} ({max_per_poll}) is below {CDR_BATCH_SIZE.name} "
            f"({batch_size}); a poll reads at most {MAX_RECORDS_PER_POLL.name} rows"
        )
    state_dir = r.get(STATE_DIR)
    # FULL (fsync per commit) by default for CEL_MODE=ami: AMI events cannot be re-read.
    state_synchronous = r.get(
        STATE_SYNCHRONOUS.with_default("FULL" if cel_mode == "ami" else "NORMAL")
    )
    puid, pgid = r.get(PUID), r.get(PGID)
    if pgid >= 0 and puid < 0:
        r.bad(PGID.name, f"set {PUID.name} too: the uid the agent runs as when started as root")
    r.warn_old_unused()
    log_format = r.get(LOG_FORMAT)
    return Settings(
        database=database,
        api=api,
        calls=calls,
        identity=identity,
        csv=csv,
        ami=ami,
        recordings=recordings,
        cel_mode=cel_mode,
        poll_interval=r.get(CDR_POLL_INTERVAL),
        batch_size=batch_size,
        max_records_per_poll=max_per_poll,
        overlap_ids=r.get(POLL_OVERLAP_IDS),
        lookback_seconds=r.get(POLL_LOOKBACK_SECONDS),
        cdr_max_call_duration=r.get(CDR_MAX_CALL_DURATION),
        cdr_lookup_wait=r.get(CDR_LOOKUP_WAIT),
        start_from=start_from,
        start_from_time=start_from_time,
        state_dir=state_dir,
        state_synchronous=state_synchronous,
        state_recovery_lookback=r.get(STATE_RECOVERY_LOOKBACK),
        state_tombstone_retention=r.get(STATE_TOMBSTONE_RETENTION),
        state_min_free_mb=r.get(STATE_MIN_FREE_MB),
        log_level=r.get(LOG_LEVEL),
        log_format=log_format,
        log_numbers=r.get(LOG_NUMBERS),
        monitoring_port=r.get(MONITORING_PORT),
        monitoring_host=r.get(MONITORING_HOST),
        shutdown_grace=r.get(SHUTDOWN_GRACE),
        database_enabled=database_enabled,
        run_as=(puid, pgid if pgid >= 0 else puid) if puid >= 0 else None,
        warnings=tuple(r.warnings),
        control_token=_control_token(r, control_token),
    )
