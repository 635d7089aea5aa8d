"""The CEL feed: `CEL_MODE` and its two non-database sources, the cel_custom CSV file
(`CsvSettings`) and the AMI connection (`AmiSettings`)."""

from __future__ import annotations

from ..model import CEL_COLUMNS, CEL_REQUIRED_COLUMNS
from .reader import Reader
from .spec import (
    Invalid,
    Notes,
    Table,
    boolean,
    choice,
    existing_file,
    integer,
    items,
    seconds,
    show,
    text,
)
from .types import AmiSettings, CsvSettings

CEL_MODES: tuple[str, ...] = ("db", "csv", "ami", "none")
_CDR_ONLY_WORDS = ("off", "disabled", "cdr", "cdr-only", "cdr_only")
CDR_ONLY_WARNING = (
    "CEL_MODE is empty/none: CDR only; transfers, queues and MixMonitor recordings need CEL "
    "(set CEL_MODE=db, csv or ami)"
)


def _cel_mode(value: str, notes: Notes) -> str:
    v = value.lower()
    if v in CEL_MODES:
        return v
    if v in _CDR_ONLY_WORDS:
        return "none"
    raise Invalid(f"must be one of db, csv, ami, none (or empty = CDR only); got {show(value)}")


def _csv_columns(value: str, notes: Notes) -> tuple[str, ...]:
    cols = tuple(c.lower() for c in items(value, notes))
    known = set(CEL_COLUMNS) | {"id", "-", "_"}
    unknown = [c for c in cols if c not in known]
    if unknown:
        # The CSV reader skips columns it does not know; say so, it may be a typo.
        notes.warning(
            f"{', '.join(map(show, unknown[:5]))} not cel column(s); those CSV fields are ignored"
        )
    missing = [c for c in CEL_REQUIRED_COLUMNS if c not in cols]
    if missing:
        notes.problem(f"must include {', '.join(missing)}")
    return cols


_CSV = CsvSettings()
_AMI = AmiSettings()

TABLE = Table("cel")
CEL_MODE = TABLE.var("CEL_MODE", _cel_mode, "none")  # empty = CDR only
CEL_CSV_COLUMNS = TABLE.var("CEL_CSV_COLUMNS", _csv_columns, _CSV.columns)
CEL_CSV_PATH = TABLE.var("CEL_CSV_PATH", text, _CSV.path)
CEL_CSV_POLL_INTERVAL = TABLE.var("CEL_CSV_POLL_INTERVAL", seconds(hi=3600), _CSV.poll_interval)
AMI_PASSWORD = TABLE.secret("AMI_PASSWORD")
AMI_HOST = TABLE.var("AMI_HOST", text, _AMI.host)
AMI_PORT = TABLE.var("AMI_PORT", integer(1, 65535), _AMI.port)
AMI_USERNAME = TABLE.var("AMI_USERNAME", text, _AMI.username)
AMI_TLS = TABLE.var("AMI_TLS", boolean, _AMI.tls)
AMI_PING_INTERVAL = TABLE.var("AMI_PING_INTERVAL", seconds(hi=3600), _AMI.ping_interval)
AMI_EVENTS = TABLE.var("AMI_EVENTS", text, _AMI.events)
AMI_TLS_VERIFY = TABLE.var("AMI_TLS_VERIFY", boolean, _AMI.tls_verify)
AMI_AUTH = TABLE.var("AMI_AUTH", choice(("auto", "md5", "plain")), _AMI.auth)
AMI_CONNECT_TIMEOUT = TABLE.var("AMI_CONNECT_TIMEOUT", seconds(hi=600), _AMI.connect_timeout)
AMI_TLS_CA_FILE = TABLE.var("AMI_TLS_CA_FILE", existing_file, _AMI.tls_ca_file)


def load_csv(r: Reader) -> CsvSettings:
    columns = r.get(CEL_CSV_COLUMNS)
    return CsvSettings(
        path=r.get(CEL_CSV_PATH),
        poll_interval=r.get(CEL_CSV_POLL_INTERVAL),
        columns=columns,
    )


def load_ami(r: Reader, cel_mode: str, password: str) -> AmiSettings:
    host, port, username = r.get(AMI_HOST), r.get(AMI_PORT), r.get(AMI_USERNAME)
    tls, ping_interval, events = r.get(AMI_TLS), r.get(AMI_PING_INTERVAL), r.get(AMI_EVENTS)
    tls_verify, auth = r.get(AMI_TLS_VERIFY), r.get(AMI_AUTH)
    connect_timeout = r.get(AMI_CONNECT_TIMEOUT)
    ami = AmiSettings(
        host=host,
        port=port,
        username=username,
        password=password,
        tls=tls,
        ping_interval=ping_interval,
        events=events,
        tls_verify=tls_verify,
        tls_ca_file=r.get(AMI_TLS_CA_FILE),
        auth=auth,
        connect_timeout=connect_timeout,
    )
    if cel_mode == "ami":
        if not ami.username:
            r.bad(AMI_USERNAME.name, "required with CEL_MODE=ami (the manager.conf section name)")
        if not ami.password:
            r.bad(AMI_PASSWORD.name, "required with CEL_MODE=ami (or AMI_PASSWORD_FILE)")
    return ami
