"""The old Docker connector's configuration, unchanged, in the new agent.

`data/old-readme.env` is the `.env` block of the old README (v0.13.x, "Edit `.env`
with your settings"), byte for byte: every line carries an inline comment, e.g.
`TENANT=   # Optional tenant identifier`. It is fed both ways the old README
runs it: as a `.env` file the agent reads, and as `docker run --env-file` passes
it (each line verbatim into the environment, no quote or comment processing).
`data/old-env-example.env` is the old connector's `.env.example` (v0.13.22), the
file its users copied to `.env`. Then every old variable, table-driven: kept,
renamed, mapped, or given its old meaning (docs/migration.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent import cli
from sipstack_agent.calls import numbers
from sipstack_agent.config import (
    CDR_ONLY_WARNING,
    ConfigError,
    Settings,
    load_settings,
)
from sipstack_agent.envfile import parse_env_file, strip_inline_comment
from sipstack_agent.oldvars import UNUSED

DATA = Path(__file__).parent / "data"
OLD_README_ENV = DATA / "old-readme.env"
MIGRATION = Path(__file__).resolve().parents[2] / "docs" / "migration.md"
AGENT_DIR = str(Path(cli.__file__).resolve().parent.parent)
KEY = "sk_" + "A1b2C3d4" * 4
BASE = {"API_KEY": KEY, "DB_TYPE": "postgresql", "DB_NAME": "asterisk"}


def docker_env_file(text: str) -> dict[str, str]:
    """What `docker run --env-file` puts in the environment (docker's opts/envfile.go):
    leading whitespace trimmed, blank and `#` lines skipped, `KEY=VALUE` verbatim."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:  # a bare KEY is copied from the host's environment: none here
            env[key] = value
    return env


def commented_keys(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^([A-Z_]+)=.*\s#", text, re.M)]


def attr(settings: Settings, path: str) -> Any:
    obj: Any = settings
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def assert_old_readme_settings(s: Settings) -> None:
    assert s.api.api_key == "sk_" + "x" * 32 and s.api.region == "us1"
    db = s.database
    assert (db.type, db.host, db.port, db.user) == ("mysql", "localhost", 3306, "asterisk")
    assert (db.password, db.name) == ("your_db_password", "asterisk")
    assert (db.table_cdr, db.table_cel, db.table_recordings) == ("cdr", "cel", "")
    assert s.cel_mode == "db"
    assert s.csv.path == "/var/log/asterisk/cel-custom/Master.csv"
    assert s.recordings.paths == ("/var/spool/asterisk/monitor",)
    assert s.poll_interval == 5.0 and s.batch_size == 100
    assert s.identity.customer_id == 1
    assert s.identity.tenant == "" and s.calls.tenants.tenant == ""
    assert not s.identity.hostname.startswith("#")


def test_the_fixture_is_the_old_readme_block() -> None:
    text = OLD_README_ENV.read_text()
    keys = re.findall(r"^([A-Z_]+)=", text, re.M)
    assert len(keys) == 19 and commented_keys(text) == keys  # every line has its comment
    assert "TENANT=                                        # Optional tenant identifier" in text


def test_old_readme_env_as_the_agents_env_file() -> None:
    s = load_settings({}, env_file=str(OLD_README_ENV))
    assert_old_readme_settings(s)
    assert not any("inline '# comment'" in w for w in s.warnings)  # nothing to fix in a file


def test_old_readme_env_through_docker_run_env_file() -> None:
    text = OLD_README_ENV.read_text()
    env = docker_env_file(text)
    assert env["TENANT"] == "                                        # Optional tenant identifier"
    s = load_settings(env)
    assert_old_readme_settings(s)
    (warning,) = [w for w in s.warnings if "inline '# comment'" in w]
    named = warning.split(":")[0].split(", ")
    assert sorted(named) == sorted(commented_keys(text))
    assert "sk_" not in warning and "your_db_password" not in warning  # no values shown


def test_old_readme_env_through_docker_with_check() -> None:
    """The real CLI on that raw environment: no config error, one WARN naming them."""
    env = docker_env_file(OLD_README_ENV.read_text())
    env.update(PYTHONPATH=AGENT_DIR, PATH="/usr/bin:/bin", DB_HOST="127.0.0.1", DB_PORT="9")
    proc = subprocess.run(
        [sys.executable, "-m", "sipstack_agent.cli", "check", "--no-api"],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=DATA,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # the database is not there, config is fine
    assert "OK   config: all variables valid" in out
    (line,) = [ln for ln in out.splitlines() if "inline '# comment'" in ln]
    named = line.removeprefix("WARN config: ").split(":")[0].split(", ")
    overridden = {"DB_HOST", "DB_PORT"}
    assert sorted(named) == sorted(set(commented_keys(OLD_README_ENV.read_text())) - overridden)
    assert "FAIL config" not in out and "Traceback" not in out + proc.stderr


@pytest.mark.parametrize("how", ["env_file", "docker"])
def test_old_env_example_unchanged(how: str) -> None:
    """The old `.env.example` (v0.13.22) that users copied to `.env`, both ways."""
    path = DATA / "old-env-example.env"
    if how == "env_file":
        s = load_settings({}, env_file=str(path))
    else:
        s = load_settings(docker_env_file(path.read_text()))
    assert s.cel_mode == "db" and s.database.type == "mysql" and s.database.port == 3306
    assert s.recordings.paths == ("/var/spool/asterisk/monitor", "/var/spool/asterisk/recordings")
    assert s.recordings.upload_concurrency == 5  # RECORDING_UPLOAD_BATCH_SIZE=5
    assert s.calls.direction.strip_dial_prefixes == ()  # STRIP_DIAL_PREFIXES=true
    assert (s.batch_size, s.poll_interval, s.identity.customer_id) == (200, 5.0, 1)
    (unused,) = [w for w in s.warnings if "old connector variable" in w]
    for name in ("CDR_LOOKBACK_MINUTES", "MONITORING_ENABLED", "NORMALIZE_PHONE_NUMBERS"):
        assert name in unused.split(":")[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("us1                                     # API region", "us1"),
        ("                                        # Optional tenant identifier", ""),
        ("sk_abc  # key\t# more", "sk_abc"),
        ("pass\t# tab comment", "pass"),
        ("a#b", None),  # no whitespace before '#': part of the value
        ("#only", None),
        ("'quoted # kept'", None),
        ('"x" # docker keeps the quotes', None),
        ("plain", None),
        ("", None),
    ],
)
def test_strip_inline_comment(value: str, expected: str | None) -> None:
    assert strip_inline_comment(value) == expected


def test_env_file_values_keep_quoted_hashes(tmp_path: Path) -> None:
    envf = tmp_path / ".env"
    envf.write_text("DB_PASSWORD='pa ss #1'\nTENANT=acme  # the tenant\nREGION=ca1#x\n")
    s = load_settings({**BASE, "REGION": "ca1"}, env_file=str(envf))
    assert s.database.password == "pa ss #1" and s.identity.tenant == "acme"
    assert not any("inline" in w for w in s.warnings)


def test_python_dotenv_reports_bad_lines_by_number() -> None:
    vals, probs = parse_env_file("A=1\nexport B='two'\nnot a line\nC\nD='open\n", "x.env")
    assert vals == {"A": "1", "B": "two"}
    assert probs == [
        "ENV_FILE: x.env line 3: expected KEY=VALUE",
        "ENV_FILE: x.env line 4: C has no '='",
        "ENV_FILE: x.env line 5: bad quoting of D",
    ]


def test_no_interpolation_of_dollar_values(tmp_path: Path) -> None:
    envf = tmp_path / ".env"
    envf.write_text("DB_PASSWORD=a${HOME}b$c\n")
    assert load_settings(BASE, env_file=str(envf)).database.password == "a${HOME}b$c"


# ------------------------------------------------------------------ every old variable

# (environment, settings path, expected): the old variables of the README tables, the
# README's .env block and the old .env.example that still do a job.
OLD: list[tuple[str, dict[str, str], str, object]] = [
    # renamed or kept under the old name, same meaning
    ("POLL_INTERVAL", {"POLL_INTERVAL": "7"}, "poll_interval", 7.0),
    ("CDR_POLL_INTERVAL", {"CDR_POLL_INTERVAL": "5"}, "poll_interval", 5.0),
    ("BATCH_SIZE", {"BATCH_SIZE": "50"}, "batch_size", 50),
    ("CDR_BATCH_SIZE", {"CDR_BATCH_SIZE": "200"}, "batch_size", 200),
    ("MAX_RECORDS_PER_POLL", {"MAX_RECORDS_PER_POLL": "1000"}, "max_records_per_poll", 1000),
    ("API_ENDPOINT", {"API_ENDPOINT": "https://h/v1/mqs/connectors/asterisk"}, "api.url",
     "https://h/v1/mqs/connectors/asterisk/calls"),
    ("RECORDING_STABILITY_CHECK", {"RECORDING_STABILITY_CHECK": "4"},
     "recordings.stability_check_interval", 4.0),
    ("RECORDING_DELETE_AFTER_UPLOAD", {"RECORDING_DELETE_AFTER_UPLOAD": "true"},
     "recordings.delete_after_upload", True),
    ("CALL_SHIPPING_MODE", {"CALL_SHIPPING_MODE": "progressive"}, "calls.shipping_mode",
     "progressive"),
    ("LONG_CALL_UPDATE_INTERVAL", {"LONG_CALL_UPDATE_INTERVAL": "0"},
     "calls.long_call_update_interval", 0.0),
    ("ASTERISK_INTL_PREFIXES", {"ASTERISK_INTL_PREFIXES": "011,00,+"},
     "calls.direction.intl_prefixes", ("011", "00")),
    # mapped onto the setting that does the job now
    ("SHIP_INCOMPLETE_AFTER", {"SHIP_INCOMPLETE_AFTER": "30"},
     "calls.long_call_update_interval", 30.0),
    ("SHIP_INCOMPLETE_AFTER", {"SHIP_INCOMPLETE_AFTER": "45", "CALL_SHIPPING_MODE": "progressive"},
     "calls.ship_update_min_interval", 45.0),
    ("RECORDING_BATCH_SIZE", {"RECORDING_BATCH_SIZE": "10"}, "recordings.upload_concurrency", 10),
    ("RECORDING_UPLOAD_BATCH_SIZE", {"RECORDING_UPLOAD_BATCH_SIZE": "5"},
     "recordings.upload_concurrency", 5),
    # the old meaning, in the new design
    ("ASTERISK_E164_ENABLED", {"ASTERISK_E164_ENABLED": "false"}, "calls.direction.e164", False),
    ("ASTERISK_E164_ENABLED", {"ASTERISK_E164_ENABLED": "true"}, "calls.direction.e164", True),
    ("STRIP_DIAL_PREFIXES", {"STRIP_DIAL_PREFIXES": "true"},
     "calls.direction.strip_dial_prefixes", ()),
    ("STRIP_DIAL_PREFIXES", {"STRIP_DIAL_PREFIXES": "false"},
     "calls.direction.strip_dial_prefixes", ()),
    ("STRIP_DIAL_PREFIXES", {"STRIP_DIAL_PREFIXES": "*67,9"},
     "calls.direction.strip_dial_prefixes", ("*67", "9")),
    ("CEL_MODE", {"CEL_MODE": ""}, "cel_mode", "none"),
    ("PUID", {"PUID": "1000", "PGID": "1001"}, "run_as", (1000, 1001)),
    ("PUID", {"PUID": "1000"}, "run_as", (1000, 1000)),
]  # fmt: skip


@pytest.mark.parametrize(("old", "env", "path", "expected"), OLD, ids=[c[0] for c in OLD])
def test_old_variable(old: str, env: dict[str, str], path: str, expected: object) -> None:
    assert attr(load_settings({**BASE, **env}), path) == expected


# (old variable, its value, the new variable that wins, its value, settings path, result)
CONFLICTS: list[tuple[str, str, str, str, str, object]] = [
    ("SHIP_INCOMPLETE_AFTER", "30", "LONG_CALL_UPDATE_INTERVAL", "900",
     "calls.long_call_update_interval", 900.0),
    ("RECORDING_BATCH_SIZE", "10", "RECORDING_UPLOAD_CONCURRENCY", "3",
     "recordings.upload_concurrency", 3),
    ("POLL_INTERVAL", "5", "CDR_POLL_INTERVAL", "2", "poll_interval", 2.0),
    ("BATCH_SIZE", "100", "CDR_BATCH_SIZE", "500", "batch_size", 500),
    ("RECORDING_STABILITY_CHECK", "2", "RECORDING_STABILITY_CHECK_INTERVAL", "3",
     "recordings.stability_check_interval", 3.0),
]  # fmt: skip


@pytest.mark.parametrize(("old", "old_v", "new", "new_v", "path", "expected"), CONFLICTS)
def test_new_variable_wins_and_a_disagreement_warns(
    old: str, old_v: str, new: str, new_v: str, path: str, expected: object
) -> None:
    s = load_settings({**BASE, old: old_v, new: new_v})
    assert attr(s, path) == expected
    assert f"{new} and {old} are both set and disagree; {new} is used" in s.warnings
    agree = load_settings({**BASE, old: new_v, new: new_v})
    assert not any(old in w for w in agree.warnings)  # the same value twice is fine


def test_ship_incomplete_after_follows_the_shipping_mode() -> None:
    s = load_settings({**BASE, "SHIP_INCOMPLETE_AFTER": "45", "CALL_SHIPPING_MODE": "complete"})
    assert s.calls.long_call_update_interval == 45.0 and s.calls.ship_update_min_interval == 30.0
    p = load_settings({**BASE, "SHIP_INCOMPLETE_AFTER": "45", "CALL_SHIPPING_MODE": "progressive"})
    assert p.calls.long_call_update_interval == 600.0 and p.calls.ship_update_min_interval == 45.0


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"SHIP_INCOMPLETE_AFTER": "soon"}, "SHIP_INCOMPLETE_AFTER: a number of seconds"),
        ({"RECORDING_BATCH_SIZE": "100"}, "RECORDING_BATCH_SIZE: must be between 1 and 64"),
        ({"ASTERISK_E164_ENABLED": "maybe"}, "ASTERISK_E164_ENABLED: true or false expected"),
        ({"PGID": "1000"}, "PGID: set PUID too"),
        ({"PUID": "-1"}, "PUID: must be between 0"),
    ],
)
def test_bad_old_values_name_the_old_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings({**BASE, **env})
    assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems


def test_e164_disabled_ships_numbers_as_dialled() -> None:
    on = load_settings({**BASE, "DEFAULT_COUNTRY_CODE": "1"}).calls.direction
    off = load_settings(
        {**BASE, "DEFAULT_COUNTRY_CODE": "1", "ASTERISK_E164_ENABLED": "false"}
    ).calls.direction
    assert numbers.normalize("(416) 555-0123", on) == "+14165550123"
    assert numbers.normalize("01144207946000", on) == "+44207946000"
    assert numbers.normalize("(416) 555-0123", off) == "4165550123"
    assert numbers.normalize("01144207946000", off) == "01144207946000"
    assert numbers.normalize("+44 20 7946 000", off) == "+44207946000"
    assert numbers.is_external("4165550123", off)  # direction is unchanged


def test_strip_dial_prefixes_true_warns_that_it_names_none() -> None:
    s = load_settings({**BASE, "STRIP_DIAL_PREFIXES": "true"})
    assert any(w.startswith("STRIP_DIAL_PREFIXES: 'true' names no prefix") for w in s.warnings)


@pytest.mark.parametrize("name", sorted(UNUSED))
def test_unused_old_variable_is_one_warning(name: str) -> None:
    s = load_settings({**BASE, name: "true"})
    (w,) = [w for w in s.warnings if "old connector variable" in w]
    assert w.startswith(f"{name}: ")


def test_cdr_only_is_allowed_and_says_what_needs_cel() -> None:
    s = load_settings({**BASE, "CEL_MODE": ""})
    assert s.cel_mode == "none" and s.calls.cdr_only
    for word in ("transfers", "queues", "MixMonitor", "CEL_MODE=db"):
        assert word in CDR_ONLY_WARNING


# ------------------------------------------------------------------ docs/migration.md


def old_variables() -> list[str]:
    """Every variable of the old README (.env block and tables) and old .env.example."""
    return (DATA / "old-connector-variables.txt").read_text().split()


@pytest.mark.parametrize("name", old_variables())
def test_migration_guide_names_every_old_variable(name: str) -> None:
    rows = [ln for ln in MIGRATION.read_text().splitlines() if ln.startswith(f"| `{name}`")]
    assert len(rows) == 1, f"docs/migration.md: one row for {name}"
    verdict = rows[0].split("|")[2].strip()
    assert verdict.split()[0] in ("kept", "renamed", "mapped", "new", "unused", "ignored"), rows[0]


def test_old_variable_list_covers_the_old_files() -> None:
    names = set(old_variables())
    for f in (OLD_README_ENV, DATA / "old-env-example.env"):
        assert set(re.findall(r"^([A-Z_]+)=", f.read_text(), re.M)) <= names, f.name
    assert set(UNUSED) <= names and {o for o, *_ in OLD} <= names
