"""`check`'s "read-only user" line sees writes that reach the user through roles.

Real MariaDB and PostgreSQL: the SELECT-only user of the fixture gets a write
path the way a PBX admin would give it (a default role, a wildcard database
grant, PostgreSQL role membership); each must turn the line from "SELECT only"
into a WARN naming the privilege and the role (rules/checks.py: the agent only
SELECTs, so a writable user is a least-privilege caveat, not a FAIL). A role it
may SET but has not enabled hides its grants: a WARN too."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sipstack_agent.rules.checks import CheckResult, Status
from sipstack_agent.sources.grants import parse_mysql_grants
from sipstack_agent.sources.sql.check import inspect


def read_only_line(results: list[CheckResult], kind: str = "cel") -> CheckResult:
    return next(r for r in results if r.name == f"{kind} read-only user")


async def test_mariadb_default_role_and_settable_role(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    settings, writer = await make_pbx_db("mysql")
    tag = uuid.uuid4().hex[:8]
    writer_role, spare_role = f"writer_{tag}", f"spare_{tag}"
    users = [f"'{settings.user}'@'{h}'" for h in ("%", "localhost")]
    assert (
        read_only_line(await inspect(settings, live_wait=0)).status is Status.OK
    )  # SELECT only at first
    try:
        await writer.execute(f"CREATE ROLE {spare_role}")
        await writer.execute(f"GRANT DELETE ON `{settings.name}`.* TO {spare_role}")
        await writer.execute(f"CREATE ROLE {writer_role}")
        await writer.execute(f"GRANT INSERT ON `{settings.name}`.* TO {writer_role}")
        for u in users:
            await writer.execute(f"GRANT {spare_role} TO {u}")
        line = read_only_line(await inspect(settings, live_wait=0))
        # a role it may SET ROLE to, not enabled: its grants are invisible to the user
        assert (
            line.status is Status.WARN and "SET ROLE" in line.detail and spare_role in line.detail
        )
        for u in users:
            await writer.execute(f"GRANT {writer_role} TO {u}")
            await writer.execute(f"SET DEFAULT ROLE {writer_role} FOR {u}")
        line = read_only_line(await inspect(settings, live_wait=0))
        assert line.status is Status.WARN and f"INSERT (role {writer_role})" in line.detail, line
        assert "REVOKE" in line.hint
    finally:
        for u in users:
            await writer.execute(f"SET DEFAULT ROLE NONE FOR {u}")
        await writer.execute(f"DROP ROLE IF EXISTS {writer_role}")
        await writer.execute(f"DROP ROLE IF EXISTS {spare_role}")
    assert read_only_line(await inspect(settings, live_wait=0)).status is Status.OK


async def test_mariadb_wildcard_database_grant(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    settings, writer = await make_pbx_db("mysql")
    pattern = settings.name[:-4].replace("_", "\\_") + "%"  # `sipstack\_t\_abc%`.*
    users = [f"'{settings.user}'@'{h}'" for h in ("%", "localhost")]
    try:
        for u in users:
            await writer.execute(f"GRANT UPDATE ON `{pattern}`.* TO {u}")
        line = read_only_line(await inspect(settings, live_wait=0), "cdr")
        assert line.status is Status.WARN and "UPDATE" in line.detail
    finally:
        for u in users:
            await writer.execute(f"REVOKE UPDATE ON `{pattern}`.* FROM {u}")


async def test_postgresql_role_membership(make_pbx_db: Callable[..., Awaitable[Any]]) -> None:
    settings, writer = await make_pbx_db("postgresql")
    role = f"writer_{uuid.uuid4().hex[:8]}"
    try:
        await writer.execute(f'CREATE ROLE "{role}" NOLOGIN')
        await writer.execute(f'GRANT INSERT, DELETE ON "{settings.table_cel}" TO "{role}"')
        await writer.execute(f'GRANT "{role}" TO "{settings.user}"')
        line = read_only_line(await inspect(settings, live_wait=0))
        assert line.status is Status.WARN
        assert f"INSERT (role {role})" in line.detail and f"DELETE (role {role})" in line.detail
        assert (
            read_only_line(await inspect(settings, live_wait=0), "cdr").status is Status.OK
        )  # other table
    finally:
        await writer.execute(f'DROP OWNED BY "{role}"')
        await writer.execute(f'DROP ROLE "{role}"')


def test_show_grants_lines_are_matched_to_the_table() -> None:
    lines = [
        "GRANT USAGE ON *.* TO `u`@`%`",
        "GRANT SELECT, INSERT (`src`, `dst`) ON `asterisk`.`cdr` TO `u`@`%`",
        "GRANT UPDATE ON `asterisk`.`other` TO `u`@`%`",
        "GRANT DELETE ON `aster\\_isk`.* TO `r`",
        "GRANT ALL PRIVILEGES ON `ast%`.* TO `w`",
        "GRANT DROP ON `otherdb`.* TO `u`@`%`",
    ]
    assert parse_mysql_grants(lines, "asterisk", "cdr") == ["INSERT", "ALL PRIVILEGES (role w)"]
    assert parse_mysql_grants(lines, "aster_isk", "cel") == [
        "DELETE (role r)",
        "ALL PRIVILEGES (role w)",
    ]
    assert parse_mysql_grants(lines, "asterXisk", "cel") == ["ALL PRIVILEGES (role w)"]
