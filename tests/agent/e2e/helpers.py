"""Helpers of the end-to-end tests: the real agent process against a real PBX database."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from sipstack_agent.config import DatabaseSettings
from sipstack_agent.demo import AgentProcess, agent_env
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.play import play
from sipstack_agent.sim.timeline import SimCall, Write, timeline

API_KEY = "sk_e2e" + "0" * 29  # sk_ + 32 characters


def db_env(db: DatabaseSettings) -> dict[str, str]:
    env = {
        "DB_TYPE": db.type,
        "DB_NAME": db.name,
        "DB_TABLE_CDR": db.table_cdr,
        "DB_TABLE_CEL": db.table_cel,
    }
    if db.timezone != "auto":  # auto: the default, the variable left unset
        env["DB_TIMEZONE"] = db.timezone
    if db.type != "sqlite":
        env.update(DB_HOST=db.host, DB_PORT=str(db.port), DB_USER=db.user, DB_PASSWORD=db.password)
    return env


def start_agent(db: DatabaseSettings, api_url: str, state_dir: Path, **extra: str) -> AgentProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    env = agent_env(
        api_url=api_url,
        state_dir=str(state_dir),
        db=db_env(db),
        api_key=API_KEY,
        extra={"CONNECTOR_ID": "e2e", "CDR_POLL_INTERVAL": "0.3", "LOG_LEVEL": "INFO", **extra},
    )
    agent = AgentProcess(env, state_dir / "agent.log")
    agent.start()
    return agent


def runs(writes: Sequence[Write]) -> list[tuple[str, list[dict[str, Any]]]]:
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for w in writes:
        if out and out[-1][0] == w.kind:
            out[-1][1].append(w.row)
        else:
            out.append((w.kind, [w.row]))
    return out


async def write_calls(writer: Any, calls: Iterable[SimCall], late_cdr_seconds: float = 0) -> int:
    """Insert every row of `calls` in commit order through the simulator's PbxWriter."""
    n = 0
    for kind, rows in runs(timeline(calls, late_cdr_seconds)):
        if kind == "cel":
            await writer.insert_cel(rows)
        else:
            await writer.insert_cdr(rows)
        n += len(rows)
    return n


async def play_calls(writer: Any, calls: Iterable[SimCall]) -> None:
    """Commit every row of `calls` at the time Asterisk would (sim.play.play)."""

    async def write(batch: Sequence[Write]) -> None:
        for kind, rows in runs(batch):
            await (writer.insert_cel(rows) if kind == "cel" else writer.insert_cdr(rows))

    await play(timeline(calls), write)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(interval)
    return pred()


def all_complete(
    receiver: Receiver,
    calls: Sequence[SimCall],
    *,
    cel: bool = True,
    state_dir: Path | None = None,
) -> Callable[[], bool]:
    """Every call has a complete document that carries all its CDR rows (and, with a
    CEL feed, its CEL events), and the agent's outbox (when `state_dir` is given) is
    drained: nothing is still on its way."""

    def pred() -> bool:
        docs = receiver.latest_complete_all()
        for c in calls:
            d = docs.get(c.expected.linkedid)
            if d is None:
                return False
            events = [t.get("event") for t in d.get("call_threads", ())]
            if events.count("CDR") < c.expected.cdr_count:
                return False
            if cel and all(ev == "CDR" for ev in events):
                return False
        return state_dir is None or outbox_depth(state_dir) == 0

    return pred


def outbox_depth(state_dir: Path) -> int:
    """Documents still in the agent's outbox (read-only look at its state file)."""
    path = state_dir / "state.db"
    if not path.exists():
        return -1
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as c:
            return int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return -1


def anchored_sources(state_dir: Path) -> set[str]:
    """The SQL sources ("cel", "cdr") whose checkpoint is in the agent's state file."""
    path = state_dir / "state.db"
    if not path.exists():
        return set()
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as c:
            names = [str(r[0]) for r in c.execute("SELECT name FROM positions")]
    except sqlite3.Error:
        return set()
    return {n.split(":")[1] for n in names if n.startswith("sql:") and n.count(":") >= 2}


async def wait_anchored(
    agent: AgentProcess, state_dir: Path, kinds: Iterable[str] = ("cel", "cdr"), timeout: float = 30
) -> None:
    """Wait until each SQL source of `kinds` has stored its (fresh-start) checkpoint.

    START_FROM=latest anchors a source at the table's end when it first reads, which
    on a loaded machine is seconds after the process started: rows written before
    that are, by design, history the agent skips. A test that writes "live" rows
    must wait for the anchor, not sleep a guessed start-up time.
    """
    want = set(kinds)
    ok = await wait_until(lambda: want <= anchored_sources(state_dir), timeout, interval=0.05)
    assert ok, f"sources {sorted(want - anchored_sources(state_dir))} never anchored\n" + (
        agent.log_tail()
    )


def dead_letters(state_dir: Path) -> list[tuple[str, int | None, str]]:
    """(call_key, status, reason) of the agent's dead letters (read after it stopped)."""
    path = state_dir / "state.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as c:
        return list(c.execute("SELECT call_key, status, reason FROM dead_letters"))


def assert_revisions_once(receiver: Receiver) -> None:
    """Per linkedid, revisions are 1..n, each stored once (one Idempotency-Key each)."""
    by: dict[str, list[int]] = {}
    keys: set[str] = set()
    for r in receiver.receipts():
        by.setdefault(r["linkedid"], []).append(r["revision"])
        assert r["idempotency_key"] not in keys, r
        keys.add(r["idempotency_key"])
    for lid, revs in by.items():
        assert sorted(revs) == list(range(1, len(revs) + 1)), (lid, revs)


def assert_keys_across_rebuild(receiver: Receiver, floor: int) -> None:
    """A store rebuilt after a quarantine (`floor`: STATE_DIR/state.db.floor): every key
    stored once and never sent with other content (`key_conflicts`); per linkedid, the
    old file's revisions are 1..n and the rebuilt store's floor+1..floor+m."""
    assert floor > 0
    assert receiver.key_conflicts == [], receiver.key_conflicts[:5]
    before: dict[str, list[int]] = {}
    after: dict[str, list[int]] = {}
    keys: set[str] = set()
    for r in receiver.receipts():
        side = after if r["revision"] > floor else before
        side.setdefault(r["linkedid"], []).append(r["revision"])
        assert r["idempotency_key"] not in keys, r
        keys.add(r["idempotency_key"])
    for lid, revs in before.items():
        assert sorted(revs) == list(range(1, len(revs) + 1)), (lid, revs)
    for lid, revs in after.items():
        assert sorted(revs) == list(range(floor + 1, floor + len(revs) + 1)), (lid, revs)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
