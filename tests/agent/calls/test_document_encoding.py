"""The document encoded once (orjson): the same fingerprint byte for byte, the same strict check.

Stored ship states compare `fingerprint` values written by older agents, so the
fingerprint from orjson's bytes must be json.dumps(sort_keys=True, ensure_ascii=True)'s
hash for every document, and the strict check (no NaN/Infinity, no lone surrogate reaches
the API) must fail where the standard library's failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sipstack_agent.calls import evaluate
from sipstack_agent.calls.document import (
    VOLATILE_KEYS,
    encode,
    fingerprint,
    json_bytes,
    outbox_rows,
    outbox_text,
)
from sipstack_agent.model import ShipState
from sipstack_agent.shipping.outbox import _encode

from .helpers import IDENTITY, SETTINGS, T0, Seq

HEAD = {"revision": 3, "ship_phase": "update", "shipped_at": "2026-11-24T12:00:00+00:00"}

# Content a document can hold: each must give the standard library's fingerprint.
CONTENTS: list[tuple[str, dict[str, Any]]] = [
    ("ascii", {"linkedid": "1.2", "src_number": "+14155550100", "answered": True}),
    ("nested, unsorted", {"z": [{"b": 1, "a": [2, {"d": None, "c": False}]}], "a": {"y": 0}}),
    ("control characters", {"x": "".join(chr(i) for i in range(32)) + '"\\/'}),
    ("DEL (escaped by ensure_ascii)", {"name": "a\x7fb"}),
    ("latin-1", {"src_name": "José Müller"}),
    ("astral and BMP keys", {"\U0001f600": 1, "\uffff": 2, "é": 3, "z": 4}),
    ("null in CEL extra", {"extra": {"cause": None}}),
    ("ordinary floats", {"extra": {"a": 1.5, "b": 100.0, "c": -0.0, "d": 0.0001, "e": 123.456}}),
    ("exponent floats", {"extra": {"a": 1e16, "b": 1e-5, "c": 2.5e-7, "d": 1e300, "e": 5e-324}}),
    ("float text in a string", {"channel": "Local/1e5@x,0.00001"}),
    ("big ints", {"extra": {"a": 2**63 - 1, "b": -(2**63), "c": 2**64, "d": -(10**30)}}),
    ("tuples", {"linkedids": ("1.1", "1.2")}),
    ("empty", {}),
]


def _stdlib_fp(doc: dict[str, Any]) -> str:
    import hashlib

    body = {k: v for k, v in doc.items() if k not in VOLATILE_KEYS}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@pytest.mark.parametrize(("name", "content"), CONTENTS, ids=[n for n, _ in CONTENTS])
def test_fingerprint_and_outbox_row_as_the_standard_library(
    name: str, content: dict[str, Any]
) -> None:
    doc = {**content, **HEAD}
    enc = encode(doc)
    assert enc.fingerprint == _stdlib_fp(doc) == fingerprint(doc)
    assert enc.fingerprint == encode({**content, **HEAD, "revision": 9}).fingerprint
    assert json.loads(enc.text) == json.loads(json.dumps(doc))  # same document, any key order
    assert outbox_text(doc) == enc.text
    _, body = _encode(enc.text, T0 + timedelta(hours=1))  # the row as text: spliced
    assert json.loads(body) == json.loads(
        json.dumps({**doc, "shipped_at": "2026-11-24T13:00:00+00:00"})
    )
    _, body2 = _encode(json.loads(enc.text), T0 + timedelta(hours=1))  # the row parsed
    assert json.loads(body2) == json.loads(body)


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        ({"a": 1}, True),
        ({"a": None}, False),  # null: could be a NaN orjson wrote as null
        ({"a": math.nan}, False),
        ({"a": [math.inf]}, False),
        ({"a": "\udcff"}, False),  # lone surrogate
        ({"a": 2**64}, False),
        ({1: "a"}, False),  # non-str key (json.dumps would convert it)
        ({"a": T0}, False),  # datetime: json.dumps refuses it
    ],
)
def test_json_bytes_only_where_orjson_equals_the_standard_library(
    value: dict[Any, Any], fast: bool
) -> None:
    raw = json_bytes(value)
    assert (raw is not None) is fast
    if raw is not None:
        assert raw == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _call(extra: str = "", chan: str = "PJSIP/101-00000001") -> Seq:
    s = Seq()
    lid = "1700000000.1"
    s.cel(0, "CHAN_START", chan, lid, lid, exten="101")
    s.cel(1, "ANSWER", chan, lid, lid)
    s.cel(2, "BRIDGE_ENTER", chan, lid, lid, extra=extra)
    s.cel(5, "HANGUP", chan, lid, lid, extra='{"hangupcause":16}')
    s.cel(5, "CHAN_END", chan, lid, lid)
    s.cel(5.1, "LINKEDID_END", chan, lid, lid)
    return s


def _document(s: Seq) -> tuple[dict[str, Any], str, str]:
    ev = evaluate(
        s.rows,
        [],
        [],
        ShipState(),
        call_key="1700000000.1",
        now=T0 + timedelta(seconds=10),
        settings=replace(SETTINGS, long_call_update_interval=0),
        identity=IDENTITY,
    )
    (doc,) = ev.documents
    (text,) = ev.outbox_texts
    return doc, ev.ship.last_fingerprint, text


@pytest.mark.parametrize(
    ("extra", "chan", "expect_extra", "expect_chan"),
    [
        ('{"bridge_id":"b1"}', "PJSIP/101-00000001", {"bridge_id": "b1"}, "PJSIP/101-00000001"),
        ('{"q": NaN, "r": 1}', "PJSIP/101-00000001", {"q": "nan", "r": 1}, "PJSIP/101-00000001"),
        ('{"q": Infinity}', "PJSIP/101-00000001", {"q": "inf"}, "PJSIP/101-00000001"),
        ('{"q": -Infinity}', "PJSIP/101-00000001", {"q": "-inf"}, "PJSIP/101-00000001"),
        ('{"q": null}', "PJSIP/101-00000001", {"q": None}, "PJSIP/101-00000001"),
        ("", "PJSIP/J\udce9r\u00f4me-1", None, "PJSIP/J\ufffdr\u00f4me-1"),
    ],
)
def test_the_strict_check_sanitizes_where_it_did(
    extra: str, chan: str, expect_extra: Any, expect_chan: str
) -> None:
    doc, fp, text = _document(_call(extra, chan))
    bridge = next(t for t in doc["call_threads"] if t["event"] == "BRIDGE_ENTER")
    assert bridge.get("extra") == expect_extra
    assert bridge["channel"] == expect_chan
    # strict JSON reaches the outbox and the API: no NaN/Infinity token, no lone surrogate
    json.dumps(doc, allow_nan=False).encode("utf-8")
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the outbox")) == doc
    _, body = _encode(text, T0)
    json.loads(body.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} sent"))
    assert fp == _stdlib_fp(doc)


def test_outbox_rows_of_a_stand_in_without_texts() -> None:
    doc = {"linkedid": "1.1", **HEAD}
    assert outbox_rows([doc], None) == [encode(doc).text]
    assert outbox_rows([doc], ["x"]) == ["x"]
    assert outbox_rows([doc, doc], ["x"]) == [encode(doc).text] * 2


# CEL extra texts where orjson's reading differs from json.loads' or refuses it.
EXTRAS = [
    '{"hangupcause":16,"hangupsource":"PJSIP/100-00000001","dialstatus":"ANSWER"}',
    '{"a":123456789012345678901234567890}',  # over 64 bits: orjson would give a float
    '{"a":-9223372036854775809,"b":18446744073709551615}',
    '{"a":NaN,"b":Infinity,"c":-Infinity,"d":1e400}',  # orjson refuses them
    '{"a":"\\ud800x"}',  # a lone surrogate escape
    '{"a":1,"b":2,"a":3}',  # a repeated key: the last value, the first position
    '{"a":0.1,"b":1.0000000000000002,"c":5e-324,"d":-0.0,"e":1E5}',
    '{"a":{"b":12345678901234567890123},"c":[1e400, 18446744073709551616]}',  # nested
    '{"a":"x\x01y"}',  # a raw control character: not JSON for either
    '{"a":' * 3000 + "1" + "}" * 3000,  # too deep for both
    '["not", "an", "object"]',
    "  {}",
    "{broken",
    "",
]


@pytest.mark.parametrize("text", EXTRAS, ids=range(len(EXTRAS)))
def test_parse_extra_reads_as_the_standard_library(text: str) -> None:
    from sipstack_agent.calls.derive import parse_extra

    try:
        want = json.loads(text)
    except (ValueError, RecursionError):
        want = None
    want = want if isinstance(want, dict) else None
    got = parse_extra(text)
    assert repr(got) == repr(want)  # repr: NaN == NaN, int vs float, key order


def test_iso_is_isoformat_of_the_utc_time() -> None:
    import random
    from datetime import UTC, datetime, timezone

    from sipstack_agent.calls.document import iso

    rnd = random.Random(7)
    lo, hi = (
        datetime(1, 1, 1, tzinfo=UTC).timestamp(),
        datetime(9999, 12, 31, tzinfo=UTC).timestamp(),
    )
    times = [datetime.fromtimestamp(rnd.uniform(lo, hi), UTC) for _ in range(2000)]
    times += [t.replace(microsecond=0) for t in times[:500]]
    times += [t.replace(microsecond=rnd.choice([1, 10, 999_999])) for t in times[:500]]
    times += [
        datetime(2026, 11, 1, 12, 0, 0, 5),
        datetime(2026, 11, 1, 7, tzinfo=timezone(-timedelta(hours=5))),
    ]
    for t in times:
        want = (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)).isoformat()
        assert iso(t) == want
        assert iso(t, seconds=True) == want[:19] + "+00:00"


def test_rows_signature_is_the_one_stored_ship_states_hold() -> None:
    """Stored ship states compare it: the values of the key-by-key hash (before 4th round)."""
    from datetime import UTC, datetime

    from sipstack_agent.calls.evaluate import rows_signature
    from sipstack_agent.model import CdrRow, CelRow

    t = datetime(2026, 1, 1, tzinfo=UTC)
    cels = [
        CelRow("ANSWER", t, f"u{i}", "l", row_id=i if i % 2 else None, extra="\udcff" * (i == 3))
        for i in range(4)
    ]
    cdrs = [CdrRow(t, "u", "l", src="é")]
    assert rows_signature(cels, cdrs, []) == "9de4d0cff2fd26a10c921600"
    assert rows_signature([], [], []) == "bee91011979f63209a28f65c"
