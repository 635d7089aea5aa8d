"""What the PBX database user could change: the "read-only user" line of `check`.

The agent only ever reads, but a user that can write is a risk the PBX admin
should remove. Privileges reach a user in more ways than its own grants:

* PostgreSQL: `has_table_privilege` per role the user is a member of (inherited
  or reachable with SET ROLE, NOINHERIT included; PUBLIC and predefined roles
  such as pg_write_all_data count), column-level INSERT/UPDATE, superuser.
* MariaDB/MySQL: `SHOW GRANTS` (the user's grants and those of its enabled
  roles, the default role included), matched against the database and table,
  database-name wildcards included; roles the user could enable with SET ROLE
  but whose grants it cannot read are named, since they may write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Privileges", "parse_mysql_grants", "write_privileges"]

MYSQL_WRITES = frozenset(
    {"INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CREATE", "INDEX", "TRIGGER",
     "DELETE HISTORY", "ALL PRIVILEGES", "ALL"}
)  # fmt: skip

_GRANT = re.compile(
    r"^GRANT (?P<privs>.+?) ON (?:TABLE )?(?P<target>\S+) "
    r"TO (?P<to>`[^`]*`(?:@`[^`]*`)?|'[^']*'(?:@'[^']*')?)",
    re.I,
)
_UNUSED_ROLES = (
    "SELECT ROLE_NAME FROM information_schema.APPLICABLE_ROLES "
    "WHERE ROLE_NAME NOT IN (SELECT ROLE_NAME FROM information_schema.ENABLED_ROLES "
    "WHERE ROLE_NAME IS NOT NULL)"  # (one NULL row when no role is enabled)
)


class _Fetch(Protocol):
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Privileges:
    writes: tuple[str, ...]  # "INSERT", "DELETE (role writer)", "SUPERUSER"
    hidden_roles: tuple[str, ...] = ()  # roles the user may SET but whose grants are unreadable


def _text(v: Any) -> str:
    return bytes(v).decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)


def _unquote(part: str) -> str:
    return part.strip("`'\"").replace("``", "`")


def _like(pattern: str, value: str) -> bool:
    """A GRANT database name: `%` and `_` are wildcards, `\\_` / `\\%` literal."""
    rx = "".join(
        ".*" if t == "%" else "." if t == "_" else re.escape(t[-1])
        for t in re.findall(r"\\.|.", pattern)
    )
    return re.fullmatch(rx, value, re.S) is not None


def parse_mysql_grants(lines: Sequence[str], database: str, table: str) -> list[str]:
    """Write privileges in SHOW GRANTS lines that reach `database`.`table`."""
    out: list[str] = []
    for line in lines:
        m = _GRANT.match(line.strip())
        if not m:
            continue
        db_part, _, tbl_part = m["target"].partition(".")
        db_name, tbl_name = _unquote(db_part), _unquote(tbl_part)
        if db_name != "*" and not _like(db_name, database):
            continue
        if tbl_name != "*" and tbl_name.lower() != table.lower():
            continue
        to = m["to"]
        via = "" if "@" in to else f" (role {_unquote(to)})"
        privs = re.sub(r"\([^)]*\)", "", m["privs"])  # column lists
        for p in (x.strip().upper() for x in privs.split(",")):
            if p in MYSQL_WRITES:
                out.append(f"{p}{via}")
    return out


async def write_privileges(con: _Fetch, dialect: str, table: str) -> Privileges | None:
    """The write paths of the current user on `table` (None: SQLite, opened read-only)."""
    if dialect == "postgresql":
        rows = await con.fetch(_PG_WRITES, (table,))
        return Privileges(tuple(sorted({_text(r[0]) for r in rows})))
    if dialect != "mysql":
        return None
    schema, _, name = table.rpartition(".")
    database = schema or _text((await con.fetch("SELECT DATABASE()"))[0][0])
    lines = [_text(r[0]) for r in await con.fetch("SHOW GRANTS")]
    writes = sorted(set(parse_mysql_grants(lines, database, name)))
    try:
        hidden = sorted({_text(r[0]) for r in await con.fetch(_UNUSED_ROLES)})
    except Exception:  # MySQL before 8.0.19 / MariaDB before 10.0.5: no role tables
        hidden = []
    return Privileges(tuple(writes), tuple(hidden))


_PG_WRITES = (
    "SELECT p || CASE WHEN r.rolname = current_user THEN '' "
    "ELSE ' (role ' || r.rolname || ')' END "
    "FROM pg_roles r CROSS JOIN unnest(ARRAY['INSERT','UPDATE','DELETE','TRUNCATE']) AS p "
    "WHERE pg_has_role(current_user, r.oid, 'MEMBER') "
    "AND (r.rolname = current_user "
    "OR NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) "
    "AND (has_table_privilege(r.oid, $1, p) OR (p IN ('INSERT','UPDATE') "
    "AND has_any_column_privilege(r.oid, $1, p))) "
    "UNION ALL SELECT 'SUPERUSER' FROM pg_roles WHERE rolname = current_user AND rolsuper"
)
