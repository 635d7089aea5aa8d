"""Sources of PBX rows: each one writes through `StateStore.ingest()`.

* `sources.sql.poller.SqlSource` - CEL and CDR tables on PostgreSQL, MySQL/MariaDB, SQLite
  (`sources.dialects` holds the SQL text of each database).
* `sources.cel_csv`, `sources.cel_ami` - the two CEL feeds without a table; they share
  `sources.celtime` (the time parser), and the CSV feed follows its file with the
  CEL-agnostic `sources.tail`.

Each source has `async def run(self, stop: asyncio.Event) -> None`: it moves its
read position in the same store transaction as the rows, updates the metrics
and never raises out of `run` on a transient failure (it reconnects with
backoff). Drivers are imported lazily, so importing this package is cheap.
"""
