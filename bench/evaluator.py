"""The agent's CPU per call without I/O: row building, evaluation, the document's JSON.

    .venv/bin/python bench/evaluator.py [--copies 200] [--rounds 3] [--profile 25]
                                        [--dump FILE]

On the real Asterisk 20 sample multiplied (`realrows.copies`, --copies times):

1. row building: the SQL source's `_cel_builder` / `_cdr_builder` on the value
   tuples a driver returns (naive times, text columns), µs per row;
2. evaluation: `calls.evaluate` of every call (its linkedid group's rows, a
   fresh ShipState, `now` one second after its last row), µs per call, which
   includes assemble, derive, build_document and the fingerprint;
3. the document's way to the wire: the outbox row (as the state store writes
   it: a second json.dumps before, the text evaluate() encoded with the
   document after) and the request body the shipper sends, µs per document.

--profile N prints the N functions with the most own time (cProfile) of one
evaluation round. --dump FILE writes every document (sorted keys, the volatile
keys removed) and its fingerprint, one per line: diff two dumps to prove a
change kept the output. Best of --rounds, in CPU time of the process. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "agent"))

from realrows import copies, load_sample  # noqa: E402
from sipstack_agent.calls import evaluate, group_linkedids  # noqa: E402
from sipstack_agent.calls.document import VOLATILE_KEYS  # noqa: E402
from sipstack_agent.config import CallSettings, Identity  # noqa: E402
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CdrRow, CelRow, ShipState  # noqa: E402
from sipstack_agent.sources import sql  # noqa: E402

IDENTITY = Identity(customer_id=42, tenant="bench", hostname="pbx-bench", connector_id="bench")
SETTINGS = CallSettings()


def best(rounds: int, fn: Callable[[], object]) -> float:
    """The least CPU time (this process) of `rounds` runs: other processes' load on the
    shared cores moves it less than the wall clock."""
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def outbox_codec() -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any, datetime], Any]]:
    """(document -> outbox row, outbox row -> request body) of the tree this runs in."""
    from sipstack_agent.shipping import outbox

    try:  # the encoded-once path (calls/document.py owns the outbox text)
        from sipstack_agent.calls.document import outbox_text

        def store(doc: dict[str, Any]) -> Any:
            return outbox_text(doc)

        def ship(row: Any, at: datetime) -> Any:
            return outbox._encode(row, at)

    except ImportError:  # before: the state store's json.dumps, parsed back for the shipper
        from sipstack_agent import state

        def store(doc: dict[str, Any]) -> Any:
            return state._dumps(doc)

        def ship(row: Any, at: datetime) -> Any:
            return outbox._encode(json.loads(row), at)

    return store, ship


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    ap.add_argument("--sort", default="tottime", help="cProfile order: tottime, ncalls, cumtime")
    ap.add_argument("--dump", type=Path)
    args = ap.parse_args()

    end = datetime(2026, 11, 1, tzinfo=UTC)
    cel_v, cdr_v = copies(load_sample(), args.copies, end, (CEL_COLUMNS, CDR_COLUMNS))
    tz = UTC
    cel_info: Any = SimpleNamespace(wanted=("id", *CEL_COLUMNS), optional=())
    cdr_info: Any = SimpleNamespace(wanted=("id", *CDR_COLUMNS), optional=())
    try:  # the builders' home since sources/sql became a package
        from sipstack_agent.sources.sql import convert as builders
    except ImportError:
        builders = sql  # type: ignore[assignment]
    build_cel = builders._cel_builder(cel_info, tz, lambda: "db")
    build_cdr = builders._cdr_builder(cdr_info, tz, lambda: "db")

    cels: list[CelRow] = []
    cdrs: list[CdrRow] = []

    def rows() -> None:
        cels[:] = [r for v in cel_v if (r := build_cel(v)) is not None]
        cdrs[:] = [r for v in cdr_v if (r := build_cdr(v)) is not None]

    t_rows = best(args.rounds, rows)
    n_rows = len(cels) + len(cdrs)

    groups = group_linkedids([*cels, *cdrs])
    by_lid: dict[str, tuple[list[CelRow], list[CdrRow]]] = {}
    for r in cels:
        by_lid.setdefault(r.call_linkedid, ([], []))[0].append(r)
    for d in cdrs:
        by_lid.setdefault(d.call_linkedid, ([], []))[1].append(d)
    calls = []
    for g in groups:
        gc = [r for lid in sorted(g) for r in by_lid.get(lid, ([], []))[0]]
        gd = [r for lid in sorted(g) for r in by_lid.get(lid, ([], []))[1]]
        last = max([r.eventtime for r in gc] + [r.calldate for r in gd])
        calls.append((min(g), gc, gd, last + timedelta(seconds=1)))

    docs: list[dict[str, Any]] = []
    fps: list[str] = []
    texts: list[str] = []  # the outbox rows evaluate() encoded with the documents (when it does)

    def evaluate_all() -> None:
        docs.clear()
        fps.clear()
        texts.clear()
        for key, gc, gd, now in calls:
            ev = evaluate(
                gc,
                gd,
                [],
                ShipState(),
                call_key=key,
                now=now,
                settings=SETTINGS,
                identity=IDENTITY,
            )
            docs.extend(ev.documents)
            texts.extend(getattr(ev, "outbox_texts", ()))
            fps.append(ev.ship.last_fingerprint)

    t_eval = best(args.rounds, evaluate_all)

    store, ship = outbox_codec()
    stored: list[Any] = []
    sent_at = end + timedelta(days=1)

    def store_all() -> None:
        stored[:] = [store(d) for d in docs]

    def ship_all() -> None:
        for row in stored:
            ship(row, sent_at)

    if len(texts) == len(docs):  # encoded once, inside evaluate
        stored[:] = texts
        t_store = 0.0
    else:
        t_store = best(args.rounds, store_all)
    t_ship = best(args.rounds, ship_all)

    load = os.getloadavg()[0]
    print(
        f"{args.copies} copies: {n_rows:,} rows, {len(calls):,} calls, {len(docs):,} documents "
        f"(load average {load:.1f}, best of {args.rounds})"
    )
    print(f"  row building   {t_rows / n_rows * 1e6:7.2f} µs/row   ({n_rows / t_rows:,.0f} rows/s)")
    print(
        f"  evaluate       {t_eval / len(calls) * 1e6:7.1f} µs/call  "
        f"({len(calls) / t_eval:,.0f} calls/s)"
    )
    if t_store:
        print(f"  outbox row     {t_store / len(docs) * 1e6:7.1f} µs/doc")
    else:
        print("  outbox row         0    µs/doc   (encoded with the document, in evaluate)")
    print(f"  request body   {t_ship / len(docs) * 1e6:7.1f} µs/doc")
    per_call = (t_rows + t_eval + t_store + t_ship) / len(calls)
    print(f"  sum per call   {per_call * 1e6:7.1f} µs  ({1 / per_call:,.0f} calls/s on one core)")

    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for d, fp in zip(docs, fps, strict=False):
                body = {k: v for k, v in d.items() if k not in VOLATILE_KEYS}
                fh.write(fp + " " + json.dumps(body, sort_keys=True) + "\n")
        print(f"  documents written to {args.dump}")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        evaluate_all()
        prof.disable()
        stats = pstats.Stats(prof)
        print(
            f"  {stats.total_calls:,} Python function calls (deterministic: compare trees with it)"
        )
        stats.sort_stats(args.sort).print_stats(args.profile)


if __name__ == "__main__":
    main()
