"""A simulated Asterisk PBX database: the tables Asterisk writes, and traffic.

Used by `sipstack-agent demo`, the benchmarks and the tests. The DDL mirrors
what cdr_pgsql / cel_pgsql, cdr_adaptive_odbc / cel_odbc (MySQL) and
cdr_sqlite3_custom / cel_sqlite3_custom produce on real installs.
"""

from __future__ import annotations

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


def create_table_statements(dialect: str, cdr_table: str = "cdr", cel_table: str = "cel") -> list[str]:
    """SQL to create Asterisk's cdr and cel tables with their usual indexes."""
    stmts = [
        CDR_DDL[dialect].format(table=cdr_table),
        CEL_DDL[dialect].format(table=cel_table),
    ]
    for table, timecol in ((cdr_table, "calldate"), (cel_table, "eventtime")):
        stmts.extend(s.format(table=table, timecol=timecol) for s in INDEX_DDL)
    return stmts
