"""Idle cost on the PBX database: statements per poll, from PostgreSQL's own log.

    .venv/bin/python bench/idle.py [--seconds 30] [--poll 1]

A throwaway PostgreSQL PBX database holding the real Asterisk 20 sample rows,
a SELECT-only role for the agent with `ALTER ROLE ... SET
log_min_duration_statement = 0` and `log_statement = 'all'`, the real agent
(`sipstack-agent run`, START_FROM=beginning, CDR_POLL_INTERVAL=--poll) and a
receiver. Once the sample's calls are shipped, the agent idles for --seconds;
then the statements the server logged for that role in that window are
counted (the log is found through pg_current_logfile() / data_directory, or
Debian's /var/log/postgresql/postgresql-<major>-main.log when
logging_collector is off). Prints statements per poll per table, the rest,
and every distinct statement text. Target: <= 1 statement per table per poll.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.demo import AgentProcess, agent_env  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS  # noqa: E402
from sipstack_agent.receiver import Receiver  # noqa: E402
from sipstack_agent.scratchdb import (  # noqa: E402
    LoggedStatement,
    StatementLog,
    log_every_statement,
)
from sipstack_agent.sources.sql.idmode import HOLE_TTL  # noqa: E402
from throughput import API_KEY, PgBench  # noqa: E402

_TABLE = re.compile(r'\bFROM\s+"?(\w+)"?', re.I)


def per_poll(
    statements: list[LoggedStatement], tables: tuple[str, ...]
) -> tuple[Counter[str], Counter[str]]:
    """Group statements by the table they read; polls = the page queries of a table."""
    by_table: Counter[str] = Counter()
    polls: Counter[str] = Counter()
    for s in statements:
        m = _TABLE.search(s.text)
        t = m.group(1) if m and m.group(1) in tables else "(no table)"
        by_table[t] += 1
        if t != "(no table)" and "LIMIT" in s.text.upper():  # the page query: one per poll
            polls[t] += 1
    return by_table, polls


def report(statements: list[LoggedStatement], seconds: float, poll: float) -> float:
    tables = ("cel", "cdr")
    by_table, polls = per_poll(statements, tables)
    n_polls = max(polls.values(), default=0) or max(1, round(seconds / poll))
    print(f"idle window {seconds:.0f}s, poll interval {poll:g}s: {n_polls} polls per table")
    for t in (*tables, "(no table)"):
        print(f"  {t:<11} {by_table[t]:5d} statements = {by_table[t] / n_polls:.2f} per poll")
    total = sum(by_table.values()) / n_polls
    print(f"  total             {total:.2f} statements per poll (target <= {len(tables)})")
    print("statement texts:")
    for text, n in Counter(s.text for s in statements).most_common():
        print(f"  {n:5d} x {text[:160]}")
    return total


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="idle window measured")
    ap.add_argument("--poll", type=float, default=1.0, help="CDR_POLL_INTERVAL of the agent")
    ap.add_argument(
        "--settle",
        type=float,
        default=HOLE_TTL + 5,
        help="seconds to wait after the last call is shipped: the sample's id gaps are "
        "watched as out-of-order holes for HOLE_TTL s, an idle PBX has none",
    )
    ap.add_argument(
        "--pg",
        default=os.environ.get("SIPSTACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sipstack-idle-"))
    pg = PgBench(args.pg)
    await pg.create()
    receiver = Receiver(work / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    agent = None
    try:
        sample = load_sample()
        cel, cdr = copies(
            sample, 1, datetime.now(UTC) - timedelta(minutes=5), (CEL_COLUMNS, CDR_COLUMNS)
        )
        await pg.copy_rows(cel, cdr, with_id=True)
        await log_every_statement(args.pg, pg.role)
        log = await StatementLog.open(args.pg)
        print(f"server log: {log.path}; {len(cel)} CEL + {len(cdr)} CDR real rows")
        env = agent_env(
            api_url=receiver.calls_url,
            state_dir=str(work / "state"),
            db=pg.env(),
            api_key=API_KEY,
            extra={"CDR_POLL_INTERVAL": str(args.poll), "LOG_LEVEL": "WARNING"},
        )
        agent = AgentProcess(env, work / "agent.log")
        agent.start()
        if not await receiver.wait_for_calls(sample.calls, timeout=60):
            print("the agent did not ship the sample's calls:\n" + agent.log_tail())
            return 1
        print(
            f"calls shipped; settling {args.settle:.0f}s, then {args.seconds:.0f}s idle", flush=True
        )
        await asyncio.sleep(max(2 * args.poll, args.settle))
        log.mark()
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        seconds = time.monotonic() - t0
        await asyncio.sleep(0.5)  # the server has written its last lines
        statements = log.since_mark(pg.role, pg.db)
        report(statements, seconds, args.poll)
        return 0
    finally:
        if agent is not None:
            agent.terminate(15)
        await receiver.stop()
        await pg.drop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
