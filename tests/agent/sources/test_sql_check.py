"""sources.sql.check.inspect(): the database part of `sipstack-agent check`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings
from sipstack_agent.rules.checks import CheckResult, Status
from sipstack_agent.sources.sql.check import inspect


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


async def test_a_well_set_up_pbx_passes_every_check(pbx_db: Any) -> None:
    settings, writer = pbx_db
    await writer.load_sample()
    res = by_name(await inspect(settings, live_wait=0))
    assert set(res) == {
        "database reachable",
        "pbx time zone",
        "cdr times",
        "cel times",
        "cdr table and columns",
        "cdr read-only user",
        "cdr indexes",
        "cel table and columns",
        "cel read-only user",
        "cel indexes",
        "LINKEDID_END in CEL",
    }
    bad = [r for r in res.values() if r.status is not Status.OK]
    assert bad == []
    assert "5 in the newest 76 rows" in res["LINKEDID_END in CEL"].detail
    assert "id column 'id'" in res["cel table and columns"].detail


async def test_privileged_user_missing_indexes_and_no_linkedid_end(
    make_pbx_db: Callable[..., Awaitable[Any]], dialect: str, admin_db_settings: Any
) -> None:
    settings, writer = await make_pbx_db(dialect, with_id=False)
    q = writer.quote
    for table, col in ((settings.table_cel, "linkedid"), (settings.table_cel, "eventtime")):
        idx = f"{table}_{col}_idx"
        if dialect == "mysql":
            await writer.execute(f"DROP INDEX {q(idx)} ON {q(table)}")
        else:
            await writer.execute(f"DROP INDEX {q(idx)}")
    await writer.insert_cel(
        [
            {
                "eventtype": "CHAN_START",
                "eventtime": "2026-01-01 00:00:00",
                "uniqueid": "1.1",
                "linkedid": "1.1",
                "channame": "SIP/1",
            }
        ]
    )
    user = admin_db_settings(settings)
    res = by_name(await inspect(user, live_wait=0))
    assert (
        res["cel table and columns"].status is Status.OK
        and "no id column" in res["cel table and columns"].detail
    )
    idx = res["cel indexes"]
    assert idx.status is Status.WARN and "linkedid" in idx.detail and "eventtime" in idx.detail
    assert "CREATE INDEX" in idx.hint
    # id-less CDR rows are looked up by uniqueid, which this table does not index
    assert res["cdr indexes"].status is Status.WARN and "uniqueid" in res["cdr indexes"].detail
    end = res["LINKEDID_END in CEL"]
    assert (
        end.status is Status.WARN and "CALL_IDLE_TIMEOUT" in end.detail and "cel.conf" in end.hint
    )
    ro = res["cel read-only user"]
    if dialect == "sqlite":
        assert ro.status is Status.OK  # the file is opened read-only whoever runs the agent
    else:
        assert ro.status is Status.WARN and ro.hint  # may write: WARN (rules/checks.py)
        assert "INSERT" in ro.detail.upper() or "ALL PRIVILEGES" in ro.detail.upper()
    others = [r for r in res.values() if "read-only" not in r.name]
    assert not any(r.failed for r in others)  # missing indexes, no LINKEDID_END: WARN


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_missing_table_and_columns_are_fatal_and_named(
    make_pbx_db: Callable[..., Awaitable[Any]], dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect)
    q = writer.quote
    broken = "brokencdr_" + settings.table_cdr[-6:]
    await writer.execute(f"CREATE TABLE {q(broken)} (calldate VARCHAR(30), src VARCHAR(80))")
    res = by_name(await inspect(replace(settings, table_cdr=broken, table_cel="nope_cel")))
    cdr, cel = res["cdr table and columns"], res["cel table and columns"]
    assert cdr.failed
    assert broken in cdr.detail and "uniqueid" in cdr.detail and "linkedid" in cdr.detail
    assert "DB_TABLE_CDR" in cdr.hint
    assert cel.failed and "nope_cel" in cel.detail and "DB_TABLE_CEL" in cel.hint


async def test_unreachable_database_is_one_fatal_line() -> None:
    res = await inspect(
        DatabaseSettings(
            type="mysql", host="127.0.0.1", port=1, user="x", name="x", connect_timeout=1
        )
    )
    assert len(res) == 1
    (r,) = res
    assert r.name == "database reachable" and r.failed and "DB_HOST" in r.hint


async def test_sqlite_file_missing_is_unreachable(tmp_path: Any) -> None:
    (r,) = await inspect(DatabaseSettings(type="sqlite", name=str(tmp_path / "absent.db")))
    assert r.failed
    assert not (tmp_path / "absent.db").exists()  # read-only: never created
