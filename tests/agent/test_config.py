"""load_settings(): every variable, aliases, *_FILE, .env precedence, errors."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipstack_agent.config import (
    ConfigError,
    Settings,
    load_settings,
)
from sipstack_agent.envfile import parse_env_file
from sipstack_agent.rules.api_urls import REGION_HOSTS
from sipstack_agent.rules.redact import redact_key

KEY = "sk_" + "A1b2C3d4" * 4  # sk_ + 32 characters
BASE = {"API_KEY": KEY, "DB_TYPE": "postgresql", "DB_NAME": "asterisk"}


def load(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_settings({**BASE, **env})
    return ei.value.problems


# ------------------------------------------------------------------ defaults


def test_defaults() -> None:
    s = load()
    assert s.api.url == "https://api-us1.sipstack.com/v1/mqs/connectors/asterisk/calls"
    assert s.api.recording_url == "https://api-us1.sipstack.com/v1/mqs/recording"
    assert s.api.region == "us1"
    assert s.api.timeout == 30.0
    assert s.database.type == "postgresql"
    assert s.database.host == "localhost"
    assert s.database.port == 0
    assert s.database.user == "asterisk"
    assert s.database.table_cdr == "cdr" and s.database.table_cel == "cel"
    assert s.database.timezone == "auto"
    assert s.cel_mode == "none" and s.calls.cdr_only  # empty CEL_MODE = CDR only
    assert s.calls.idle_timeout == 30.0 and s.calls.max_age == 6 * 3600
    assert s.calls.shipping_mode == "complete"
    assert s.calls.long_call_update_interval == 600.0
    assert s.calls.ship_update_min_interval == 30.0
    assert s.start_from == "latest" and s.start_from_time is None
    assert s.state_dir == "/data"
    assert s.log_level == "INFO" and s.log_format == "text" and not s.log_numbers
    assert s.monitoring_port == 8000
    assert s.identity.customer_id == 0
    assert s.identity.connector_id  # defaults to the host name
    assert s.database_enabled
    assert s.warnings == ()


# ------------------------------------------------------------------ every variable

CASES: list[tuple[dict[str, str], str, object]] = [
    ({"REGION": "ca1"}, "api.url", "https://api-ca1.sipstack.com/v1/mqs/connectors/asterisk/calls"),
    ({"REGION": "CA1"}, "api.recording_url", "https://api-ca1.sipstack.com/v1/mqs/recording"),
    ({"REGION": "us2"}, "api.region", "us2"),
    ({"REGION": "dev"}, "api.url", "https://api-dev.sipstack.com/v1/mqs/connectors/asterisk/calls"),
    ({"API_URL": "https://h:8080/x/calls"}, "api.url", "https://h:8080/x/calls"),
    ({"API_URL": "https://h/v1/mqs/connectors/asterisk"}, "api.url",
     "https://h/v1/mqs/connectors/asterisk/calls"),
    ({"API_URL": "https://h/v1/mqs/connectors/asterisk/"}, "api.url",
     "https://h/v1/mqs/connectors/asterisk/calls"),
    ({"API_URL": "https://h:9/v1/mqs/connectors/asterisk"}, "api.recording_url",
     "https://h:9/v1/mqs/recording"),
    ({"API_URL": "https://a/v1/mqs/connectors/asterisk", "API_ENDPOINT": "https://b/c"},
     "api.url", "https://b/c"),
    ({"API_URL": "http://127.0.0.1:8080/x/calls"}, "api.url", "http://127.0.0.1:8080/x/calls"),
    ({"API_URL": "http://[::1]:8080/x/calls"}, "api.url", "http://[::1]:8080/x/calls"),
    ({"API_URL": "http://localhost:9/v1/mqs/connectors/asterisk"}, "api.recording_url",
     "http://localhost:9/v1/mqs/recording"),
    ({"API_URL": "http://h:8080/x/calls", "API_ALLOW_INSECURE_HTTP": "true"}, "api.url",
     "http://h:8080/x/calls"),
    ({"RECORDING_API_URL": "http://rec/up", "API_ALLOW_INSECURE_HTTP": "true"},
     "api.recording_url", "http://rec/up"),
    ({"API_ALLOW_INSECURE_HTTP": "true"}, "api.allow_insecure_http", True),
    ({"API_TIMEOUT": "12.5"}, "api.timeout", 12.5),
    ({"API_CONCURRENCY": "3"}, "api.concurrency", 3),
    ({"DB_TYPE": "postgres"}, "database.type", "postgresql"),
    ({"DB_TYPE": "PostgreSQL"}, "database.type", "postgresql"),
    ({"DB_TYPE": "mariadb"}, "database.type", "mysql"),
    ({"DB_TYPE": "mysql"}, "database.type", "mysql"),
    ({"DB_TYPE": "sqlite", "DB_NAME": "/var/lib/asterisk/master.db"}, "database.name",
     "/var/lib/asterisk/master.db"),
    ({"DB_HOST": "10.0.0.5"}, "database.host", "10.0.0.5"),
    ({"DB_PORT": "5433"}, "database.port", 5433),
    ({"DB_USER": "reader"}, "database.user", "reader"),
    ({"DB_PASSWORD": "p@ss word"}, "database.password", "p@ss word"),
    ({"DB_NAME": "pbxlogs"}, "database.name", "pbxlogs"),
    ({"DB_TABLE_CDR": "cdr_2025"}, "database.table_cdr", "cdr_2025"),
    ({"DB_TABLE_CEL": "asteriskcdrdb.cel"}, "database.table_cel", "asteriskcdrdb.cel"),
    ({"DB_TABLE_RECORDINGS": "recordings"}, "database.table_recordings", "recordings"),
    ({"DB_TIMEZONE": "America/Toronto"}, "database.timezone", "America/Toronto"),
    ({"DB_TIMEZONE": "America/Toronto"}, "calls.timezone", "America/Toronto"),
    ({"DB_TIMEZONE": "+05:30"}, "database.timezone", "+05:30"),
    ({"DB_TIMEZONE": "AUTO"}, "database.timezone", "auto"),
    ({"DB_SSLMODE": "verify-full"}, "database.sslmode", "verify-full"),
    ({"CEL_MODE": "db"}, "cel_mode", "db"),
    ({"CEL_MODE": "DB"}, "calls.cdr_only", False),
    ({"CEL_MODE": "none"}, "calls.cdr_only", True),
    ({"CEL_MODE": ""}, "cel_mode", "none"),
    ({"CEL_MODE": "csv"}, "cel_mode", "csv"),
    ({"CUSTOMER_ID": "42"}, "identity.customer_id", 42),
    ({"TENANT": "acme"}, "identity.tenant", "acme"),
    ({"TENANT": "acme"}, "calls.tenants.tenant", "acme"),
    ({"HOST_HOSTNAME": "pbx1.example.com"}, "identity.hostname", "pbx1.example.com"),
    ({"HOST_HOSTNAME": "pbx1.example.com"}, "identity.connector_id", "pbx1.example.com"),
    ({"CONNECTOR_ID": "pbx-7"}, "identity.connector_id", "pbx-7"),
    ({"CONNECTOR_ID": "tenants/pbx-7"}, "identity.connector_id", "tenants/pbx-7"),
    ({"CDR_POLL_INTERVAL": "5"}, "poll_interval", 5.0),
    ({"POLL_INTERVAL": "3"}, "poll_interval", 3.0),
    ({"POLL_INTERVAL": "3", "CDR_POLL_INTERVAL": "4"}, "poll_interval", 4.0),
    ({"CDR_BATCH_SIZE": "100"}, "batch_size", 100),
    ({"BATCH_SIZE": "50"}, "batch_size", 50),
    ({"BATCH_SIZE": "50", "CDR_BATCH_SIZE": "70"}, "batch_size", 70),
    ({"MAX_RECORDS_PER_POLL": "9000"}, "max_records_per_poll", 9000),
    ({"CALL_SHIPPING_MODE": "progressive"}, "calls.shipping_mode", "progressive"),
    ({"LONG_CALL_UPDATE_INTERVAL": "0"}, "calls.long_call_update_interval", 0.0),
    ({"SHIP_UPDATE_MIN_INTERVAL": "10"}, "calls.ship_update_min_interval", 10.0),
    ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
    ({"LOG_LEVEL": "warn"}, "log_level", "WARNING"),
    ({"LOG_FORMAT": "JSON"}, "log_format", "json"),
    ({"LOG_NUMBERS": "yes"}, "log_numbers", True),
    ({"MONITORING_PORT": "9100"}, "monitoring_port", 9100),
    ({"ASTERISK_EXT_MIN_LENGTH": "3"}, "calls.direction.ext_min_length", 3),
    ({"ASTERISK_EXT_MAX_LENGTH": "5"}, "calls.direction.ext_max_length", 5),
    ({"ASTERISK_INTL_PREFIXES": "011,00,+"}, "calls.direction.intl_prefixes", ("011", "00")),
    ({"KNOWN_TRUNKS": "pstn-in, pstn-out"}, "calls.direction.known_trunks",
     ("pstn-in", "pstn-out")),
    ({"DEFAULT_COUNTRY_CODE": "+1"}, "calls.direction.default_country_code", "1"),
    ({"STRIP_DIAL_PREFIXES": "*67,*82,9"}, "calls.direction.strip_dial_prefixes",
     ("*67", "*82", "9")),
    ({"DID_TENANT_MAP": "4155551000:acme, 4155551001:globex"}, "calls.tenants.did_map",
     (("4155551000", "acme"), ("4155551001", "globex"))),
    ({"DID_TENANT_MAP": '{"4155551000": "acme"}'}, "calls.tenants.did_map",
     (("4155551000", "acme"),)),
    ({"ACCOUNTCODE_TENANT_MAP": "100:a,200:b"}, "calls.tenants.accountcode_map",
     (("100", "a"), ("200", "b"))),
    ({"TENANT_CONTEXT_PATTERN": r"^from-(\w+)-"}, "calls.tenants.context_pattern",
     r"^from-(\w+)-"),
    ({"CEL_CSV_PATH": "/x/Master.csv"}, "csv.path", "/x/Master.csv"),
    ({"CEL_CSV_POLL_INTERVAL": "1.5"}, "csv.poll_interval", 1.5),
    ({"CEL_CSV_COLUMNS": "eventtype,eventtime,uniqueid,linkedid"}, "csv.columns",
     ("eventtype", "eventtime", "uniqueid", "linkedid")),
    ({"AMI_HOST": "pbx"}, "ami.host", "pbx"),
    ({"AMI_PORT": "5039"}, "ami.port", 5039),
    ({"AMI_USERNAME": "sipstack"}, "ami.username", "sipstack"),
    ({"AMI_PASSWORD": "secret"}, "ami.password", "secret"),
    ({"AMI_TLS": "true"}, "ami.tls", True),
    ({"RECORDING_PATHS": "/a,/b"}, "recordings.paths", ("/a", "/b")),
    ({"RECORDING_FILE_EXTENSIONS": ".wav,mp3"}, "recordings.extensions", ("wav", "mp3")),
    ({"RECORDING_STABILITY_CHECK_COUNT": "5"}, "recordings.stability_check_count", 5),
    ({"RECORDING_STABILITY_CHECK_INTERVAL": "0.5"}, "recordings.stability_check_interval", 0.5),
    ({"RECORDING_STABILITY_CHECK": "4"}, "recordings.stability_check_interval", 4.0),
    ({"RECORDING_UPLOAD": "1"}, "recordings.upload", True),
    ({"RECORDING_UPLOAD_CONCURRENCY": "4"}, "recordings.upload_concurrency", 4),
    ({"DELETE_RECORDINGS_AFTER_UPLOAD": "on"}, "recordings.delete_after_upload", True),
    ({"RECORDING_DELETE_AFTER_UPLOAD": "true"}, "recordings.delete_after_upload", True),
    ({"RECORDINGS_COLUMNS": "lid,uid,fname,path,ts"}, "recordings.columns",
     ("lid", "uid", "fname", "path", "ts")),
    ({"START_FROM": "beginning"}, "start_from", "beginning"),
    ({"START_FROM": "LATEST"}, "start_from", "latest"),
    ({"START_FROM": "2025-08-20T15:00:00+00:00"}, "start_from_time",
     datetime(2025, 8, 20, 15, 0, tzinfo=UTC)),
    ({"START_FROM": "2025-08-20T15:00:00Z"}, "start_from_time",
     datetime(2025, 8, 20, 15, 0, tzinfo=UTC)),
    ({"START_FROM": "2025-08-20 11:00:00", "DB_TIMEZONE": "America/Toronto"}, "start_from_time",
     datetime(2025, 8, 20, 15, 0, tzinfo=UTC)),
    ({"START_FROM": "2025-08-20 11:00:00", "DB_TIMEZONE": "-04:00"}, "start_from_time",
     datetime(2025, 8, 20, 15, 0, tzinfo=UTC)),
    # auto: a time without offset waits for the zone found at start-up
    ({"START_FROM": "2025-08-20 11:00:00"}, "start_from_time", None),
    ({"START_FROM": "2025-08-20 11:00:00"}, "start_from", "2025-08-20T11:00:00"),
    ({"CALL_IDLE_TIMEOUT": "10"}, "calls.idle_timeout", 10.0),
    ({"CALL_MAX_AGE": "7200"}, "calls.max_age", 7200.0),
    ({"STATE_DIR": "/var/lib/sipstack"}, "state_dir", "/var/lib/sipstack"),
    ({"SHUTDOWN_GRACE": "5"}, "shutdown_grace", 5.0),
]  # fmt: skip


def _get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("env", "path", "want"), CASES, ids=lambda v: str(v)[:40])
def test_variable(env: dict[str, str], path: str, want: object) -> None:
    assert _get(load(**env), path) == want


def test_every_region_has_urls() -> None:
    for region, host in REGION_HOSTS.items():
        s = load(REGION=region)
        assert s.api.url == f"https://{host}/v1/mqs/connectors/asterisk/calls"
        assert s.api.recording_url == f"https://{host}/v1/mqs/recording"


def test_whitespace_is_stripped_and_empty_means_unset() -> None:
    s = load(REGION="  ca1 ", DB_PORT="", CDR_POLL_INTERVAL=" 3 ")
    assert s.api.region == "ca1" and s.database.port == 0 and s.poll_interval == 3.0


def test_cel_only_install_without_database() -> None:
    s = load_settings({"API_KEY": KEY, "CEL_MODE": "csv"})
    assert not s.database_enabled and s.cel_mode == "csv"
    assert not s.calls.cdr_only


def test_db_type_defaults_to_mysql_like_the_old_connector() -> None:
    s = load_settings({"API_KEY": KEY, "DB_NAME": "asterisk"})
    assert s.database.type == "mysql"


def test_malformed_key_is_a_warning_not_an_error() -> None:
    s = load(API_KEY="sk_short")
    assert any(w.startswith("API_KEY:") for w in s.warnings)
    assert "sk_short" not in " ".join(s.warnings)


@pytest.mark.parametrize("key", ["sk_t0_" + "a" * 40, "sk_t4_c123_" + "x" * 24, KEY])
def test_wellformed_keys_give_no_warning(key: str) -> None:
    assert load(API_KEY=key).warnings == ()


def test_unknown_csv_column_is_a_warning() -> None:
    s = load(CEL_CSV_COLUMNS="eventtype,eventtime,uniqueid,bogus")
    assert s.csv.columns[-1] == "bogus"
    assert any(w.startswith("CEL_CSV_COLUMNS:") for w in s.warnings)


def test_redact_key() -> None:
    assert redact_key(KEY) == "sk_…" + KEY[-4:]
    assert KEY not in redact_key(KEY)


# ------------------------------------------------------------------ errors name their variable

BAD: list[tuple[str, str]] = [
    ("REGION", "eu9"),
    ("API_URL", "ftp://x/y"),
    ("API_URL", "not a url"),
    ("API_ENDPOINT", "http://"),
    ("API_URL", "http://api.example.com/v1/mqs/connectors/asterisk/calls"),
    ("API_ENDPOINT", "http://10.1.2.3:8080/calls"),
    ("RECORDING_API_URL", "http://10.1.2.3/v1/mqs/recording"),
    ("API_ALLOW_INSECURE_HTTP", "maybe"),
    ("API_TIMEOUT", "0"),
    ("API_TIMEOUT", "abc"),
    ("DB_TYPE", "oracle"),
    ("DB_PORT", "70000"),
    ("DB_PORT", "x"),
    ("DB_TABLE_CDR", "cdr; drop table x"),
    ("DB_TABLE_CEL", "1cel"),
    ("DB_TABLE_RECORDINGS", "rec-ordings"),
    ("DB_TIMEZONE", "Mars/Olympus"),
    ("DB_TIMEZONE", "+25:00"),
    ("DB_SSLMODE", "maybe"),
    ("DB_SSLROOTCERT", "/nonexistent/ca.pem"),
    ("CEL_MODE", "kafka"),
    ("CUSTOMER_ID", "-1"),
    ("CUSTOMER_ID", "12a"),
    ("CONNECTOR_ID", "a b"),
    ("CONNECTOR_ID", "a:b"),
    ("CDR_POLL_INTERVAL", "nan"),
    ("POLL_INTERVAL", "-1"),
    ("CDR_BATCH_SIZE", "0"),
    ("BATCH_SIZE", "1.5"),
    ("MAX_RECORDS_PER_POLL", "0"),
    ("CALL_SHIPPING_MODE", "sometimes"),
    ("LONG_CALL_UPDATE_INTERVAL", "-5"),
    ("SHIP_UPDATE_MIN_INTERVAL", "inf"),
    ("LOG_LEVEL", "LOUD"),
    ("LOG_FORMAT", "xml"),
    ("MONITORING_PORT", "65536"),
    ("ASTERISK_EXT_MIN_LENGTH", "0"),
    ("ASTERISK_EXT_MAX_LENGTH", "99"),
    ("ASTERISK_INTL_PREFIXES", "011,abc"),
    ("DEFAULT_COUNTRY_CODE", "1234"),
    ("STRIP_DIAL_PREFIXES", "9,x"),
    ("DID_TENANT_MAP", "4155551000"),
    ("ACCOUNTCODE_TENANT_MAP", "{bad json"),
    ("TENANT_CONTEXT_PATTERN", "(unclosed"),
    ("TENANT_CONTEXT_PATTERN", "no-group"),
    ("CEL_CSV_POLL_INTERVAL", "0"),
    ("CEL_CSV_COLUMNS", "eventtype,eventtime,linkedid"),
    ("AMI_PORT", "0"),
    ("AMI_TLS", "perhaps"),
    ("RECORDING_PATHS", "relative/dir"),
    ("RECORDING_FILE_EXTENSIONS", "wav,m p3"),
    ("RECORDING_STABILITY_CHECK_COUNT", "0"),
    ("RECORDING_STABILITY_CHECK_INTERVAL", "-1"),
    ("RECORDING_UPLOAD", "2"),
    ("RECORDING_UPLOAD_CONCURRENCY", "0"),
    ("DELETE_RECORDINGS_AFTER_UPLOAD", "maybe"),
    ("RECORDINGS_COLUMNS", "a,b c"),
    ("START_FROM", "yesterday"),
    ("CALL_IDLE_TIMEOUT", "0"),
    ("CALL_MAX_AGE", "x"),
    ("SHUTDOWN_GRACE", "-1"),
]


@pytest.mark.parametrize(("var", "value"), BAD)
def test_error_names_its_variable(var: str, value: str) -> None:
    probs = problems(**{var: value})
    assert probs and all(p.startswith(f"{var}:") for p in probs), probs
    assert all("\n" not in p for p in probs)


def test_required_variables() -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings({})
    names = {p.split(":")[0] for p in ei.value.problems}
    assert {"API_KEY", "DB_NAME"} <= names


def test_all_problems_are_reported_at_once() -> None:
    probs = problems(REGION="xx", DB_PORT="x", LOG_LEVEL="LOUD", CALL_SHIPPING_MODE="?")
    assert [p.split(":")[0] for p in probs] == ["REGION", "DB_PORT", "CALL_SHIPPING_MODE",
                                                "LOG_LEVEL"]  # fmt: skip


def test_min_above_max_extension_length() -> None:
    probs = problems(ASTERISK_EXT_MIN_LENGTH="6", ASTERISK_EXT_MAX_LENGTH="4")
    assert probs[0].startswith("ASTERISK_EXT_MIN_LENGTH:")


def test_max_age_must_exceed_idle_timeout() -> None:
    assert problems(CALL_IDLE_TIMEOUT="100", CALL_MAX_AGE="50")[0].startswith("CALL_MAX_AGE:")


def test_ami_mode_needs_credentials() -> None:
    probs = problems(CEL_MODE="ami")
    assert [p.split(":")[0] for p in probs] == ["AMI_USERNAME", "AMI_PASSWORD"]


def test_api_key_with_whitespace_is_an_error_without_its_value() -> None:
    probs = problems(API_KEY="sk_abc def123456789")
    assert probs[0].startswith("API_KEY:")
    assert "abc def" not in probs[0]


def test_secrets_never_in_messages(tmp_path: Path) -> None:
    secret_key = "sk_SECRETSECRETSECRETSECRETSECRET12"
    env = {
        "API_KEY": secret_key,
        "DB_PASSWORD": "hunter2-db",
        "AMI_PASSWORD": "hunter2-ami",
        "CEL_MODE": "ami",
        "REGION": "nowhere",
        "DB_TYPE": "nope",
    }
    with pytest.raises(ConfigError) as ei:
        load_settings(env)
    text = str(ei.value) + "\n".join(ei.value.problems)
    for secret in ("SECRETSECRET", "hunter2-db", "hunter2-ami"):
        assert secret not in text
    s = load_settings({**BASE, **{k: v for k, v in env.items() if k in ("API_KEY", "DB_PASSWORD")}})
    assert "hunter2" not in repr(s) and secret_key not in repr(s)


# ------------------------------------------------------------------ *_FILE variants


@pytest.mark.parametrize(
    ("var", "path"),
    [
        ("API_KEY", "api.api_key"),
        ("DB_PASSWORD", "database.password"),
        ("AMI_PASSWORD", "ami.password"),
    ],
)
def test_file_variants(tmp_path: Path, var: str, path: str) -> None:
    f = tmp_path / "secret"
    value = KEY if var == "API_KEY" else "s3cr3t"
    f.write_text(f"  {value}\n")
    env = {**BASE, f"{var}_FILE": str(f)}
    if var == "API_KEY":
        del env["API_KEY"]
    assert _get(load_settings(env), path) == value


def test_file_variant_missing_file(tmp_path: Path) -> None:
    env = {k: v for k, v in BASE.items() if k != "API_KEY"}
    env["API_KEY_FILE"] = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as ei:
        load_settings(env)
    assert ei.value.problems[0].startswith("API_KEY_FILE:")


def test_file_variant_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("\n")
    assert problems(DB_PASSWORD_FILE=str(f))[0].startswith("DB_PASSWORD_FILE:")


def test_both_value_and_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("file-secret-x")
    probs = problems(DB_PASSWORD="env-secret-y", DB_PASSWORD_FILE=str(f))
    assert probs[0].startswith("DB_PASSWORD:")
    assert "secret" not in " ".join(probs)


def test_environment_file_variant_beats_dotenv_value(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file")
    envf = tmp_path / ".env"
    envf.write_text("DB_PASSWORD=from-dotenv\n")
    s = load_settings({**BASE, "DB_PASSWORD_FILE": str(f)}, env_file=str(envf))
    assert s.database.password == "from-file"


@pytest.mark.parametrize(
    ("var", "path"),
    [("DID_TENANT_MAP", "calls.tenants.did_map"),
     ("ACCOUNTCODE_TENANT_MAP", "calls.tenants.accountcode_map")],
)  # fmt: skip
def test_tenant_map_file_variants(tmp_path: Path, var: str, path: str) -> None:
    """A map larger than one exec string (128 KiB) arrives whole from its file."""
    entries = {f"+1415555{i:05d}": f"tenant-{i % 97}" for i in range(12_000)}
    f = tmp_path / "map.json"
    f.write_text(json.dumps(entries))
    assert f.stat().st_size > 128 * 1024
    assert _get(load_settings({**BASE, f"{var}_FILE": str(f)}), path) == tuple(entries.items())


def test_tenant_map_file_limits(tmp_path: Path) -> None:
    f = tmp_path / "map.json"
    f.write_text("x" * (1024 * 1024 + 1))
    (problem,) = problems(DID_TENANT_MAP_FILE=str(f))
    assert problem.startswith("DID_TENANT_MAP_FILE:") and "larger than 1024 KiB" in problem
    f.write_text('{"100": "acme"}')
    (problem,) = problems(DID_TENANT_MAP_FILE=str(f), DID_TENANT_MAP="200:globex")
    assert problem.startswith("DID_TENANT_MAP:") and "set only one" in problem
    f.write_text('{"100": ')
    (problem,) = problems(ACCOUNTCODE_TENANT_MAP_FILE=str(f))
    assert problem.startswith("ACCOUNTCODE_TENANT_MAP:") and "does not parse" in problem


# ------------------------------------------------------------------ .env


def test_dotenv_and_precedence(tmp_path: Path) -> None:
    envf = tmp_path / ".env"
    envf.write_text(
        "# comment\n"
        "export REGION=ca1\n"
        "TENANT='acme corp'  \n"
        'HOST_HOSTNAME="pbx \\"one\\""\n'
        "DB_HOST = db.local # inline comment\n"
        "CUSTOMER_ID=7\n"
        "\n"
    )
    s = load_settings({**BASE, "CUSTOMER_ID": "9"}, env_file=str(envf))
    assert s.api.region == "ca1"
    assert s.identity.tenant == "acme corp"
    assert s.identity.hostname == 'pbx "one"'
    assert s.database.host == "db.local"
    assert s.identity.customer_id == 9  # the environment wins


def test_dotenv_bad_line_names_env_file(tmp_path: Path) -> None:
    envf = tmp_path / ".env"
    envf.write_text("this is not an assignment\nOK=1\n")
    with pytest.raises(ConfigError) as ei:
        load_settings(BASE, env_file=str(envf))
    assert ei.value.problems[0].startswith("ENV_FILE:")
    assert "line 1" in ei.value.problems[0]


def test_dotenv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(BASE, env_file=str(tmp_path / "none.env"))
    assert ei.value.problems[0].startswith("ENV_FILE:")


def test_parse_env_file_quotes() -> None:
    vals, probs = parse_env_file("A='x # y'\nB=\"a\\nb\"\nC=plain # c\nD=\nE='unterminated\n")
    assert vals == {"A": "x # y", "B": "a\nb", "C": "plain", "D": ""}
    assert len(probs) == 1 and probs[0].startswith("ENV_FILE:")


# ------------------------------------------------------------------ never another exception

VARS = sorted(
    {v for env, _, _ in CASES for v in env} | {v for v, _ in BAD}
    | {"API_KEY", "API_KEY_FILE", "DB_PASSWORD_FILE", "AMI_PASSWORD_FILE", "DB_NAME"}
)  # fmt: skip
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(string.printable),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(VARS), _text, max_size=8))
def test_any_environment_gives_settings_or_config_error(env: dict[str, str]) -> None:
    try:
        s = load_settings({**BASE, **env})
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.split(":")[0].isupper() or p.startswith("ENV_FILE")
            assert "\n" not in p.strip() or "line" in p
    else:
        assert isinstance(s, Settings)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_dotenv_text_parses_or_reports(text: str) -> None:
    vals, probs = parse_env_file(text)
    assert isinstance(vals, dict)
    assert all(p.startswith("ENV_FILE:") for p in probs)


def test_state_synchronous_full_by_default_for_ami_only() -> None:
    assert load().state_synchronous == "NORMAL"
    ami = load(CEL_MODE="ami", AMI_USERNAME="u", AMI_PASSWORD="p")
    assert ami.state_synchronous == "FULL"
    assert load(CEL_MODE="ami", AMI_USERNAME="u", AMI_PASSWORD="p",
                STATE_SYNCHRONOUS="normal").state_synchronous == "NORMAL"  # fmt: skip
    assert load(STATE_SYNCHRONOUS="FULL").state_synchronous == "FULL"


def test_state_synchronous_error_names_the_variable() -> None:
    probs = problems(STATE_SYNCHRONOUS="extra-safe")
    assert len(probs) == 1 and probs[0].startswith("STATE_SYNCHRONOUS:"), probs
    assert "normal, full" in probs[0]


def test_state_fault_settings() -> None:
    s = load()
    assert (s.state_recovery_lookback, s.state_tombstone_retention) == (86400.0, 7 * 86400.0)
    s = load(STATE_RECOVERY_LOOKBACK="3600", STATE_TOMBSTONE_RETENTION="0")
    assert (s.state_recovery_lookback, s.state_tombstone_retention) == (3600.0, 0.0)
    for var in ("STATE_RECOVERY_LOOKBACK", "STATE_TOMBSTONE_RETENTION"):
        assert problems(**{var: "a week"})[0].startswith(f"{var}:")
