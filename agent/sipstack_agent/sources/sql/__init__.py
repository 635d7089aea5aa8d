"""The SQL source: CEL and CDR tables on PostgreSQL, MySQL/MariaDB and SQLite.

One class, `poller.SqlSource`, for the three databases (asyncpg, aiomysql,
aiosqlite); `sources/dialects.py` holds the SQL text. Read-only always: only SELECT
statements are sent, PostgreSQL sessions are opened read-only, MySQL sessions
`SET SESSION TRANSACTION READ ONLY`, SQLite files are opened with mode=ro.

Reading position (stored in the state store as "sql:<kind>:<table>", saved in
the same transaction as the rows it covers):

* Tables with an id column: `{"mode": "id", "id": N, "epoch": E, ...}`. Each
  poll reads `id > N ORDER BY id LIMIT batch_size`, page after page up to
  max_records_per_poll, and goes on at once while there is backlog. Ids can
  commit out of order (id 10 visible before 9): the ids skipped inside the last
  `overlap_ids` below the checkpoint are remembered as holes and re-read (one
  small indexed range query) until they appear or are older than a minute. The
  first poll after start-up or a reconnect re-reads `id > N - overlap_ids`;
  the store's de-duplication by row id makes re-reads harmless. If max(id)
  goes below the checkpoint (table truncated or restored) the reader logs it,
  counts it (sipstack_id_regressions_total) and re-anchors: epoch + 1 (the
  rows' `source` becomes "db~E" so their dedup keys cannot collide with rows
  read before), id 0, and only rows at or after the newest time read before.
* Tables without an id: `{"mode": "time", "time": ISO}`; polls read
  `time >= newest - 1 s` and every lookback/4 seconds sweep
  `time >= newest - lookback_seconds`, de-duplicated by row hash.

Naive DB times are PBX-local in the zone `ZoneResolver` found (DB_TIMEZONE,
sources/timezone.py) and converted to aware UTC; rows read live are checked
against the clock (zones.judge: a wrong zone gives one WARN and a metric); text
that is not valid UTF-8 is decoded as latin-1; NULL is "".

One job per module, each importing only those listed before it:
- `table`: Kind, SchemaError, TableInfo (what a discovered table is);
- `convert`: DB values -> CelRow/CdrRow (text, times, ints), UTC -> DB parameters;
- `drivers`: the read-only pools (`Db`, `connect`) over asyncpg, aiomysql, aiosqlite;
- `discovery`: a table's columns, id and time column (`discover`);
- `base`, `idmode`, `timemode`, `poller`: `SqlSource`, its state, its two reading
  modes, and its lifecycle (connect, position, run with reconnects);
- `check`: the database part of `sipstack-agent check` (`inspect`, `zone_line`).
"""
