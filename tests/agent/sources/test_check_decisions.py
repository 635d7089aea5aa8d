"""FAIL or WARN where the sources' `check` copies disagreed, decided once (issue 12).

The rule is rules/checks.py's docstring: FAIL when the agent cannot do its job
until it is fixed, WARN when it runs worse or with a caveat. Before the one
result type, `sources/sql.py` (ok + fatal), `cel_csv.py` and `cel_ami.py`
((name, ok, detail, hint) tuples) and cli.py's adapter said different things:

| case | sql | csv | ami | now |
|---|---|---|---|---|
| no LINKEDID_END in the recent events | WARN | OK | - | WARN |
| no event yet (empty table / file, idle PBX) | WARN | OK | OK | WARN |
| the database user may write (least privilege, not a blocker) | WARN | - | - | WARN |
| a role the user may SET hides its grants | WARN | - | - | WARN |
| missing index | WARN | - | - | WARN |
| a fixed-offset zone (wrong after DST) | WARN | - | - | WARN |
| rows in the future for the zone read in | FAIL | FAIL | - | FAIL |
| lines whose column count is not the configured one | - | FAIL | - | FAIL |

The AMI row (an idle PBX) is tests/agent/sources/test_cel_ami.py::test_check_ami
(it needs the AMI simulator); the SET ROLE row is test_check_grants.py (MariaDB
roles). Each row below runs the real check against a real database or file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import CsvSettings
from sipstack_agent.model import CEL_COLUMNS
from sipstack_agent.rules.checks import CheckResult, Status
from sipstack_agent.sources.cel_csv import check_csv
from sipstack_agent.sources.sql.check import inspect, zone_line
from sipstack_agent.zones import PbxZone

Case = Callable[[Any, Path], Awaitable[list[CheckResult]]]


def _cel(eventtype: str, at: datetime, n: int = 1) -> dict[str, str]:
    t = at.strftime("%Y-%m-%d %H:%M:%S.%f")
    u = f"1795495200.{n}"
    return {
        "eventtype": eventtype,
        "eventtime": t,
        "uniqueid": u,
        "linkedid": u,
        "channame": "SIP/1",
    }


async def _sqlite(make_pbx_db: Any, *, rows: list[dict[str, str]]) -> Any:
    pbx = await make_pbx_db("sqlite")
    if rows:
        await pbx.writer.insert_cel(rows)
    return pbx.settings


async def sql_without_linkedid_end(make_pbx_db: Any, _: Path) -> list[CheckResult]:
    now = datetime.now(UTC)
    db = await _sqlite(make_pbx_db, rows=[_cel("CHAN_START", now), _cel("HANGUP", now)])
    return await inspect(db, live_wait=0)


async def sql_empty_table(make_pbx_db: Any, _: Path) -> list[CheckResult]:
    return await inspect(await _sqlite(make_pbx_db, rows=[]), live_wait=0)


async def sql_missing_index(make_pbx_db: Any, _: Path) -> list[CheckResult]:
    pbx = await make_pbx_db("sqlite")
    await pbx.writer.execute(
        f"DROP INDEX {pbx.writer.quote(pbx.settings.table_cel + '_linkedid_idx')}"
    )
    return await inspect(pbx.settings, live_wait=0)


async def sql_rows_in_the_future(make_pbx_db: Any, _: Path) -> list[CheckResult]:
    ahead = datetime.now(UTC) + timedelta(hours=9)
    return await inspect(await _sqlite(make_pbx_db, rows=[_cel("CHAN_START", ahead)]), live_wait=0)


async def sql_fixed_offset_zone(_m: Any, _p: Path) -> list[CheckResult]:
    return [zone_line(PbxZone("+05:30", "offset"))]


def _csv(path: Path, rows: list[dict[str, str]]) -> CsvSettings:
    lines = [",".join(f'"{({c: ""} | r).get(c, "")}"' for c in CEL_COLUMNS) for r in rows]
    path.write_text("".join(ln + "\n" for ln in lines))
    return CsvSettings(path=str(path))


async def csv_without_linkedid_end(_: Any, tmp: Path) -> list[CheckResult]:
    now = datetime.now(UTC)
    return await check_csv(_csv(tmp / "Master.csv", [_cel("CHAN_START", now), _cel("HANGUP", now)]))


async def csv_empty_file(_: Any, tmp: Path) -> list[CheckResult]:
    return await check_csv(_csv(tmp / "Master.csv", []))


async def csv_rows_in_the_future(_: Any, tmp: Path) -> list[CheckResult]:
    ahead = datetime.now(UTC) + timedelta(hours=9)
    return await check_csv(_csv(tmp / "Master.csv", [_cel("CHAN_START", ahead)]))


async def csv_column_count(_: Any, tmp: Path) -> list[CheckResult]:
    path = tmp / "Master.csv"
    path.write_text('"CHAN_START","2026-11-24 04:39:20.510110","1.1"\n')
    return await check_csv(CsvSettings(path=str(path)))


DECISIONS: list[tuple[Case, str, Status]] = [
    (sql_without_linkedid_end, "LINKEDID_END in CEL", Status.WARN),
    (csv_without_linkedid_end, "cel_csv linkedid_end", Status.WARN),
    (sql_empty_table, "LINKEDID_END in CEL", Status.WARN),
    (csv_empty_file, "cel_csv recent lines", Status.WARN),
    (sql_missing_index, "cel indexes", Status.WARN),
    (sql_fixed_offset_zone, "pbx time zone", Status.WARN),
    (sql_rows_in_the_future, "cel times", Status.FAIL),
    (csv_rows_in_the_future, "cel_csv timezone", Status.FAIL),
    (csv_column_count, "cel_csv column count", Status.FAIL),
]


@pytest.mark.parametrize(
    ("case", "line", "status"), DECISIONS, ids=[c.__name__ for c, _, _ in DECISIONS]
)
async def test_decision(
    case: Case,
    line: str,
    status: Status,
    make_pbx_db: Callable[..., Awaitable[Any]],
    tmp_path: Path,
) -> None:
    results = {r.name: r for r in await case(make_pbx_db, tmp_path)}
    assert results[line].status is status, results[line]


async def test_a_user_that_may_write_warns(
    make_pbx_db: Callable[..., Awaitable[Any]], admin_db_settings: Any
) -> None:
    """PostgreSQL, the admin user: it may INSERT/UPDATE/DELETE on the CEL table."""
    pbx = await make_pbx_db("postgresql")
    res = {r.name: r for r in await inspect(admin_db_settings(pbx.settings), live_wait=0)}
    assert res["cel read-only user"].status is Status.WARN
    assert "REVOKE" in res["cel read-only user"].hint
