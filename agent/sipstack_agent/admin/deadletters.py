"""`sipstack-agent dead-letters list | show ID | retry [ID... | --reason R | --all] | drop`.

Dead letters are documents the API refused for good (a 4xx, or retried past the
horizon). Once the cause is fixed (a new key, the service's bad deploy rolled
back), `retry` puts them back in the outbox: each call document as a NEW revision
of its call with its own Idempotency-Key (StateStore.requeue_dead_letters), which
the running agent ships within seconds; one the call has a later revision of, or
of a linkedid merged into another call, is dropped instead (it would overwrite
newer content). Safe while the agent runs: every change is
one short SQLite transaction (WAL, busy_timeout) through the StateStore."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from ..state import StateStore, StoreError
from ..statedir import STATE_FILE

EXIT_OK = 0
EXIT_NONE = 1  # nothing matched / no such dead letter
EXIT_USAGE = 2


@dataclass(frozen=True)
class Selection:
    """Which dead letters: ids, a reason, or all (at least one must be given)."""

    ids: tuple[int, ...] = ()
    reason: str | None = None
    every: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.reason is not None or self.every)


def state_path(state_dir: str) -> str:
    """The state store file of STATE_DIR; StoreError when there is none."""
    path = os.path.join(state_dir, STATE_FILE)
    if not os.path.isfile(path):
        raise StoreError(f"{path}: no state store here (is STATE_DIR right?)")
    return path


async def _open(state_dir: str, connector_id: str, *, write: bool) -> StateStore:
    path = state_path(state_dir)
    if write:
        return await StateStore.open(path, connector_id=connector_id)
    return await StateStore.open_readonly(path)


def describe(d: dict[str, object]) -> dict[str, object]:
    payload = d.get("payload")
    doc = payload if isinstance(payload, dict) else {}
    return {
        "id": d["id"],
        "kind": d["kind"],
        "linkedid": doc.get("linkedid", d["call_key"]),
        "revision": doc.get("revision"),
        "idempotency_key": d["idempotency_key"],
        "status": d["status"],
        "reason": d["reason"],
        "attempts": d["attempts"],
        "dead_at": _iso(d["dead_at"]),
        "created_at": _iso(d["created_at"]),
        "body": d["body"],
    }


def _iso(t: object) -> str | None:
    return t.isoformat(timespec="seconds") if isinstance(t, datetime) else None


def _one_line(text: object, width: int = 60) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


async def _list(state_dir: str, reason: str | None) -> list[dict[str, object]]:
    store = await _open(state_dir, "", write=False)
    try:
        rows = await store.dead_letters_where(reason=reason)
    finally:
        await store.close()
    return [describe(r) for r in rows]


def run_list(state_dir: str, *, reason: str | None, as_json: bool, out: TextIO) -> int:
    rows = asyncio.run(_list(state_dir, reason))
    if as_json:
        print(json.dumps(rows, indent=2, default=str), file=out)
        return EXIT_OK
    if not rows:
        print("no dead letters" + (f" with reason {reason}" if reason else ""), file=out)
        return EXIT_OK
    print(f"{'ID':>5}  {'DEAD AT':<25} {'KIND':<9} {'LINKEDID':<20} {'REV':>3}  "
          f"{'REASON':<14} ANSWER", file=out)  # fmt: skip
    for r in rows:
        print(
            f"{r['id']!s:>5}  {str(r['dead_at'])[:25]:<25} {r['kind']!s:<9} "
            f"{r['linkedid']!s:<20} {r['revision'] or '-'!s:>3}  {r['reason']!s:<14} "
            f"{_one_line(r['body'])}",
            file=out,
        )
    print(f"{len(rows)} dead letter(s); `sipstack-agent dead-letters show ID` for one,", file=out)
    print("`sipstack-agent dead-letters retry --all` once the cause is fixed", file=out)
    return EXIT_OK


async def _show(state_dir: str, dead_id: int) -> dict[str, object] | None:
    store = await _open(state_dir, "", write=False)
    try:
        return await store.dead_letter(dead_id)
    finally:
        await store.close()


def run_show(state_dir: str, dead_id: int, *, out: TextIO) -> int:
    d = asyncio.run(_show(state_dir, dead_id))
    if d is None:
        print(f"no dead letter {dead_id} (see `sipstack-agent dead-letters list`)", file=out)
        return EXIT_NONE
    print(json.dumps({**describe(d), "document": d["payload"]}, indent=2, default=str), file=out)
    return EXIT_OK


@dataclass(frozen=True)
class RetryOutcome:
    requeued: dict[int, str]  # dead letter id -> its new Idempotency-Key
    dropped: tuple[int, ...]  # superseded: the call has a later revision
    missing: tuple[int, ...]  # asked for by id, not there

    def as_json(self) -> dict[str, object]:
        return {
            "requeued": [{"id": i, "idempotency_key": k} for i, k in self.requeued.items()],
            "dropped": list(self.dropped),
            "missing": list(self.missing),
        }


async def retry_in(store: StateStore, sel: Selection) -> RetryOutcome:
    """Requeue the selected dead letters (the CLI and POST /control/dead-letters/retry)."""
    done = await store.requeue_dead_letters(sel.ids, reason=sel.reason)
    missing = tuple(sorted(set(sel.ids) - {i for i, _ in done}))
    return RetryOutcome(
        requeued={i: key for i, key in done if key is not None},
        dropped=tuple(i for i, key in done if key is None),
        missing=missing,
    )


async def _retry(state_dir: str, connector_id: str, sel: Selection) -> RetryOutcome:
    store = await _open(state_dir, connector_id, write=True)
    try:
        return await retry_in(store, sel)
    finally:
        await store.close()


def run_retry(state_dir: str, connector_id: str, sel: Selection, *, out: TextIO) -> int:
    if sel.empty:
        print("dead-letters retry: give dead letter IDs, --reason R or --all", file=out)
        return EXIT_USAGE
    got = asyncio.run(_retry(state_dir, connector_id, sel))
    for dead_id in got.dropped:
        print(
            f"dropped dead letter {dead_id}: its call has a later revision, "
            "or was merged into another call",
            file=out,
        )
    for dead_id, key in got.requeued.items():
        print(f"requeued dead letter {dead_id} as Idempotency-Key {key}", file=out)
    for i in got.missing:
        print(f"no dead letter {i}", file=out)
    print(
        f"{len(got.requeued)} document(s) back in the outbox; the running agent ships them",
        file=out,
    )
    return EXIT_OK if (got.requeued or got.dropped) and not got.missing else EXIT_NONE


async def _drop(state_dir: str, sel: Selection) -> int:
    store = await _open(state_dir, "", write=True)
    try:
        return await store.drop_dead_letters(sel.ids, reason=sel.reason)
    finally:
        await store.close()


def run_drop(state_dir: str, sel: Selection, *, out: TextIO) -> int:
    if sel.empty:
        print("dead-letters drop: give dead letter IDs, --reason R or --all", file=out)
        return EXIT_USAGE
    n = asyncio.run(_drop(state_dir, sel))
    print(f"dropped {n} dead letter(s)", file=out)
    return EXIT_OK if n else EXIT_NONE


def run(
    action: str,
    state_dir: str,
    connector_id: str,
    *,
    ids: Sequence[int] = (),
    reason: str | None = None,
    every: bool = False,
    as_json: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """The `dead-letters` command: one of list, show, retry, drop."""
    try:
        if action == "list":
            return run_list(state_dir, reason=reason, as_json=as_json, out=out)
        if action == "show":
            if len(ids) != 1:
                print("dead-letters show: give one dead letter ID", file=err)
                return EXIT_USAGE
            return run_show(state_dir, ids[0], out=out)
        sel = Selection(tuple(ids), reason, every)
        if action == "retry":
            return run_retry(state_dir, connector_id, sel, out=out)
        return run_drop(state_dir, sel, out=out)
    except StoreError as e:
        print(f"dead-letters: {e}", file=err)
        return EXIT_USAGE
