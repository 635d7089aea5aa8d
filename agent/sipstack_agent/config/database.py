"""The database section: the PBX's CDR/CEL database (`DatabaseSettings`), and whether
there is one at all (a CEL-only install reads CSV or AMI and no table)."""

from __future__ import annotations

from ..zones import AUTO, tzinfo_of
from .reader import Reader
from .spec import (
    Invalid,
    Notes,
    Table,
    choice,
    existing_file,
    ident,
    integer,
    seconds,
    show,
    text,
)
from .types import DatabaseSettings

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
SSL_MODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_DB_TYPE = "mysql"  # the old connector's default


def _db_type(value: str, notes: Notes) -> str:
    db_type = DB_TYPE_ALIASES.get(value.lower())
    if db_type is None:
        raise Invalid(
            f"must be postgresql (postgres), mysql (mariadb) or sqlite; got {show(value)}"
        )
    return db_type


def _timezone(value: str, notes: Notes) -> str:
    if value.lower() == AUTO:
        return AUTO
    try:
        tzinfo_of(value)
    except ValueError:
        raise Invalid(
            f"auto, an IANA time zone (UTC, America/Toronto) or an offset (+05:30) "
            f"expected, got {show(value)}"
        ) from None
    return value


_D = DatabaseSettings()

TABLE = Table("database")
DB_PASSWORD = TABLE.secret("DB_PASSWORD")
DB_TYPE = TABLE.var("DB_TYPE", _db_type, "")  # "" = not set (or bad)
DB_NAME = TABLE.var("DB_NAME", text, _D.name)
DB_TIMEZONE = TABLE.var("DB_TIMEZONE", _timezone, _D.timezone)
DB_SSLMODE = TABLE.var("DB_SSLMODE", choice(SSL_MODES), _D.sslmode)
DB_SSLROOTCERT = TABLE.var("DB_SSLROOTCERT", existing_file, _D.sslrootcert)
DB_HOST = TABLE.var("DB_HOST", text, _D.host)
DB_PORT = TABLE.var("DB_PORT", integer(0, 65535), _D.port)
DB_USER = TABLE.var("DB_USER", text, "asterisk")  # "" for sqlite (load)
DB_TABLE_CDR = TABLE.var("DB_TABLE_CDR", ident, _D.table_cdr)
DB_TABLE_CEL = TABLE.var("DB_TABLE_CEL", ident, _D.table_cel)
DB_TABLE_RECORDINGS = TABLE.var("DB_TABLE_RECORDINGS", ident, _D.table_recordings)
DB_POOL_SIZE = TABLE.var("DB_POOL_SIZE", integer(1, 64), _D.pool_size)
DB_CONNECT_TIMEOUT = TABLE.var("DB_CONNECT_TIMEOUT", seconds(hi=600), _D.connect_timeout)


def _kind(r: Reader, cel_mode: str, db_name: str) -> tuple[str, bool]:
    """(DB_TYPE, whether a database is read)."""
    db_type = r.get(DB_TYPE)
    if db_type:
        return db_type, True
    if r.is_set(DB_TYPE):  # bad, already reported
        return DEFAULT_DB_TYPE, True
    if cel_mode in ("csv", "ami") and not db_name and not r.is_set(DB_HOST):
        return "sqlite", False  # CEL-only install: no CDR table to read
    return DEFAULT_DB_TYPE, True


def load(r: Reader, cel_mode: str, password: str) -> tuple[DatabaseSettings, bool]:
    """(the database settings, whether a database is read at all)."""
    db_name = r.get(DB_NAME)
    db_type, enabled = _kind(r, cel_mode, db_name)
    if enabled and not db_name:
        what = "the SQLite file path" if db_type == "sqlite" else "the database name, e.g. asterisk"
        r.bad(DB_NAME.name, f"required: {what}")
    if not enabled and cel_mode == "none":
        r.bad(DB_TYPE.name, "no database and no CEL source: set DB_TYPE/DB_NAME or CEL_MODE")
    db_tz = r.get(DB_TIMEZONE)
    sslmode = r.get(DB_SSLMODE)
    sslrootcert = r.get(DB_SSLROOTCERT)
    if (sslmode or sslrootcert) and db_type == "sqlite":
        r.warn(f"{DB_SSLMODE.name}/{DB_SSLROOTCERT.name}: ignored for DB_TYPE=sqlite")
    db_host = r.get(DB_HOST)
    if any(c.isspace() or c == "/" for c in db_host) and db_type != "sqlite":
        r.bad(DB_HOST.name, f"must be a host name or IP address, got {show(db_host)}")
    database = DatabaseSettings(
        type=db_type,
        host=db_host,
        port=r.get(DB_PORT),
        user=r.get(DB_USER.with_default("asterisk" if db_type != "sqlite" else "")),
        password=password,
        name=db_name,
        table_cdr=r.get(DB_TABLE_CDR),
        table_cel=r.get(DB_TABLE_CEL),
        table_recordings=r.get(DB_TABLE_RECORDINGS),
        timezone=db_tz,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        pool_size=r.get(DB_POOL_SIZE),
        connect_timeout=r.get(DB_CONNECT_TIMEOUT),
    )
    return database, enabled
