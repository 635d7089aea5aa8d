"""The tables Asterisk writes, per dialect: cdr / cel DDL, FreePBX's id-less cdr.

The DDL mirrors what cdr_pgsql / cel_pgsql, cdr_adaptive_odbc / cel_odbc (MySQL)
and cdr_sqlite3_custom / cel_sqlite3_custom produce on real installs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..model import CDR_COLUMNS, CDR_OPTIONAL_COLUMNS
from .dialects import quote

CEL_DDL: dict[str, str] = {
    "postgresql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    eventtype VARCHAR(30) NOT NULL,
    eventtime TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    cid_name VARCHAR(80), cid_num VARCHAR(80), cid_ani VARCHAR(80),
    cid_rdnis VARCHAR(80), cid_dnid VARCHAR(80),
    exten VARCHAR(80), context VARCHAR(80), channame VARCHAR(80),
    appname VARCHAR(80), appdata VARCHAR(512), amaflags INTEGER,
    accountcode VARCHAR(32), uniqueid VARCHAR(150), linkedid VARCHAR(150),
    peer VARCHAR(80), userdeftype VARCHAR(255), extra VARCHAR(512)
)""",
    "mysql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    eventtype VARCHAR(30) NOT NULL,
    eventtime DATETIME NOT NULL,
    cid_name VARCHAR(80), cid_num VARCHAR(80), cid_ani VARCHAR(80),
    cid_rdnis VARCHAR(80), cid_dnid VARCHAR(80),
    exten VARCHAR(80), context VARCHAR(80), channame VARCHAR(80),
    appname VARCHAR(80), appdata VARCHAR(512), amaflags INT,
    accountcode VARCHAR(32), uniqueid VARCHAR(150), linkedid VARCHAR(150),
    peer VARCHAR(80), userdeftype VARCHAR(255), extra VARCHAR(512)
) DEFAULT CHARSET=latin1""",
    "sqlite": """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    eventtype TEXT NOT NULL, eventtime TEXT NOT NULL,
    cid_name TEXT, cid_num TEXT, cid_ani TEXT, cid_rdnis TEXT, cid_dnid TEXT,
    exten TEXT, context TEXT, channame TEXT, appname TEXT, appdata TEXT,
    amaflags INTEGER, accountcode TEXT, uniqueid TEXT, linkedid TEXT,
    peer TEXT, userdeftype TEXT, extra TEXT
)""",
}

CDR_DDL: dict[str, str] = {
    "postgresql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    calldate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    clid VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80),
    channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80),
    lastdata VARCHAR(80), duration INTEGER, billsec INTEGER,
    disposition VARCHAR(45), amaflags INTEGER, accountcode VARCHAR(20),
    uniqueid VARCHAR(150), userfield VARCHAR(255), linkedid VARCHAR(150),
    sequence INTEGER, peeraccount VARCHAR(20)
)""",
    "mysql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    calldate DATETIME NOT NULL,
    clid VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80),
    channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80),
    lastdata VARCHAR(80), duration INT, billsec INT,
    disposition VARCHAR(45), amaflags INT, accountcode VARCHAR(20),
    uniqueid VARCHAR(150), userfield VARCHAR(255), linkedid VARCHAR(150),
    sequence INT, peeraccount VARCHAR(20)
) DEFAULT CHARSET=latin1""",
    "sqlite": """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    calldate TEXT NOT NULL,
    clid TEXT, src TEXT, dst TEXT, dcontext TEXT, channel TEXT, dstchannel TEXT,
    lastapp TEXT, lastdata TEXT, duration INTEGER, billsec INTEGER,
    disposition TEXT, amaflags INTEGER, accountcode TEXT, uniqueid TEXT,
    userfield TEXT, linkedid TEXT, sequence INTEGER, peeraccount TEXT
)""",
}

INDEX_DDL: tuple[str, ...] = (
    "CREATE INDEX {table}_linkedid_idx ON {table} (linkedid)",
    "CREATE INDEX {table}_{timecol}_idx ON {table} ({timecol})",
)


def create_table_statements(
    dialect: str, cdr_table: str = "cdr", cel_table: str = "cel"
) -> list[str]:
    """SQL to create Asterisk's cdr and cel tables with their usual indexes."""
    stmts = [
        CDR_DDL[dialect].format(table=cdr_table),
        CEL_DDL[dialect].format(table=cel_table),
    ]
    for table, timecol in ((cdr_table, "calldate"), (cel_table, "eventtime")):
        stmts.extend(s.format(table=table, timecol=timecol) for s in INDEX_DDL)
    return stmts


_FREEPBX_MYSQL = """CREATE TABLE `{t}` (
  `calldate` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  `clid` varchar(80) NOT NULL DEFAULT '',
  `src` varchar(80) NOT NULL DEFAULT '',
  `dst` varchar(80) NOT NULL DEFAULT '',
  `dcontext` varchar(80) NOT NULL DEFAULT '',
  `channel` varchar(80) NOT NULL DEFAULT '',
  `dstchannel` varchar(80) NOT NULL DEFAULT '',
  `lastapp` varchar(80) NOT NULL DEFAULT '',
  `lastdata` varchar(80) NOT NULL DEFAULT '',
  `duration` int(11) NOT NULL DEFAULT '0',
  `billsec` int(11) NOT NULL DEFAULT '0',
  `disposition` varchar(45) NOT NULL DEFAULT '',
  `amaflags` int(11) NOT NULL DEFAULT '0',
  `accountcode` varchar(20) NOT NULL DEFAULT '',
  `uniqueid` varchar(32) NOT NULL DEFAULT '',
  `userfield` varchar(255) NOT NULL DEFAULT '',
  `did` varchar(50) NOT NULL DEFAULT '',
  `recordingfile` varchar(255) NOT NULL DEFAULT '',
  `cnum` varchar(80) NOT NULL DEFAULT '',
  `cnam` varchar(80) NOT NULL DEFAULT '',
  `outbound_cnum` varchar(80) NOT NULL DEFAULT '',
  `outbound_cnam` varchar(80) NOT NULL DEFAULT '',
  `dst_cnam` varchar(80) NOT NULL DEFAULT '',
  `linkedid` varchar(32) NOT NULL DEFAULT '',
  `peeraccount` varchar(80) NOT NULL DEFAULT '',
  `sequence` int(11) NOT NULL DEFAULT '0',
  KEY `calldate` (`calldate`),
  KEY `dst` (`dst`),
  KEY `accountcode` (`accountcode`),
  KEY `uniqueid` (`uniqueid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

_FREEPBX_INT = ("duration", "billsec", "amaflags", "sequence")


def _freepbx_generic(t: str, time_type: str, text: str, integer: str) -> list[str]:
    cols = [f'"calldate" {time_type} NOT NULL']
    for c in (*CDR_COLUMNS, *CDR_OPTIONAL_COLUMNS):
        if c in _FREEPBX_INT:
            cols.append(f'"{c}" {integer} NOT NULL DEFAULT 0')
        elif c != "calldate":
            cols.append(f"\"{c}\" {text} NOT NULL DEFAULT ''")
    stmts = [f'CREATE TABLE "{t}" ({", ".join(cols)})']
    stmts += [
        f'CREATE INDEX "{t}_{c}" ON "{t}" ("{c}")'
        for c in ("calldate", "dst", "accountcode", "uniqueid")
    ]
    return stmts


def freepbx_cdr_statements(dialect: str, table: str = "cdr") -> list[str]:
    """FreePBX's `asteriskcdrdb.cdr`: no id column, its extra columns and four indexes.

    MariaDB: FreePBX's own table (the Issabel/FreePBX dump, with the `linkedid`,
    `peeraccount` and `sequence` columns current FreePBX adds); PostgreSQL and SQLite
    get the same columns and indexes in their own types.
    """
    if dialect == "mysql":
        return [_FREEPBX_MYSQL.format(t=table)]
    if dialect == "postgresql":
        return _freepbx_generic(table, "timestamp without time zone", "varchar(255)", "integer")
    return _freepbx_generic(table, "TEXT", "TEXT", "INTEGER")


_ID_LINES = re.compile(
    r"^\s*id (BIGSERIAL PRIMARY KEY|BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY|"
    r"INTEGER PRIMARY KEY AUTOINCREMENT),\s*$",
    re.M,
)


def table_statements(
    dialect: str,
    cdr_table: str,
    cel_table: str,
    *,
    with_id: bool = True,
    cdr_extra_columns: Sequence[str] = (),
    freepbx: bool = False,
) -> list[str]:
    """`create_table_statements` with variants: no id columns (`with_id=False`), extra
    text columns on the cdr table, or FreePBX's id-less cdr (the cel table keeps its id)."""
    stmts = create_table_statements(dialect, cdr_table=cdr_table, cel_table=cel_table)
    if not with_id:
        stmts = [_ID_LINES.sub("", s) for s in stmts]
    if cdr_extra_columns:
        typ = "TEXT" if dialect == "sqlite" else "VARCHAR(255)"
        t = quote(dialect, cdr_table)
        for c in cdr_extra_columns:
            stmts.append(f"ALTER TABLE {t} ADD COLUMN {quote(dialect, c)} {typ}")
    if freepbx:
        stmts = [s for s in stmts if cdr_table not in s]
        stmts += freepbx_cdr_statements(dialect, cdr_table)
    return stmts
