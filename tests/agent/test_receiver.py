"""The local SIPSTACK API stand-in: validation, auth, de-duplication, fault injection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from sipstack_agent.receiver import FaultPlan, Receiver, serve
from sipstack_agent.receiver.schema import FALLBACK_SCHEMA, load_call_schema, make_validator

KEY = "sk_" + "k" * 32


def document(linkedid: str = "1700000000.1", *, revision: int = 1, phase: str = "complete"):
    """A call document per ingest-api.md (valid for the fallback and the packaged schema)."""
    threads = [
        {
            "time": "2026-01-15T11:59:00+00:00",
            "event": "CHAN_START",
            "channel": "PJSIP/trunk-00000001",
            "exten": "201",
            "context": "from-trunk",
            "uniqueid": linkedid,
        },
        {
            "time": "2026-01-15T11:59:40+00:00",
            "event": "CDR",
            "src": "5145550101",
            "dst": "201",
            "duration": 40,
            "billsec": 37,
            "disposition": "ANSWERED",
            "channel": "PJSIP/trunk-00000001",
            "dstchannel": "PJSIP/201-00000002",
            "uniqueid": linkedid,
        },
    ]
    return {
        "connector": "asterisk",
        "connector_version": "0.14.0",
        "customer_id": 7,
        "tenant": "",
        "hostname": "pbx1",
        "linkedid": linkedid,
        "is_complete": phase == "complete",
        "call_time": "2026-01-15T11:59:00+00:00",
        "duration_seconds": 40,
        "disposition": "ANSWERED",
        "direction": "i",
        "call_threads": threads,
        "call_threads_count": len(threads),
        "ship_phase": phase,
        "shipped_at": "2026-01-15T11:59:41+00:00",
        "revision": revision,
        "src_number": "5145550101",
        "dst_number": "201",
        "billsec": 37,
        "answered": True,
        "linkedids": [linkedid],
        "timezone": "UTC",
    }


@pytest.fixture
async def receiver(tmp_path):
    r = Receiver(tmp_path / "rx.sqlite")
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def post(
    http: aiohttp.ClientSession,
    url: str,
    doc: Any,
    *,
    key: str | None = KEY,
    idem: str | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any], Any]:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if idem is not None:
        headers["Idempotency-Key"] = idem
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    async with http.post(url, data=data, headers=headers) as resp:
        text = await resp.text()
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        return resp.status, dict(resp.headers), payload


# ----------------------------------------------------------------------------- schema


def test_schema_comes_from_the_package_when_present():
    packaged = load_call_schema()
    validator = make_validator()
    if packaged is None:
        assert validator.origin == "fallback"
        assert validator.schema is FALLBACK_SCHEMA
    else:
        assert validator.origin == "package"
        assert validator.schema == packaged
    # whichever is in force accepts a contract document, and rejects a broken one
    assert validator.problem(document()) is None
    assert list(validator.full.iter_errors(document())) == []
    assert "direction" in validator.problem(dict(document(), direction="up"))


@pytest.mark.parametrize("fast", [True, False])
def test_fast_and_full_validation_agree(fast):
    validator = make_validator()
    if not fast:
        validator.fast = None
    elif validator.fast is None:
        pytest.skip("schema uses keywords newer than draft-07: jsonschema only")
    assert validator.problem(document()) is None
    for bad in (
        dict(document(), customer_id=-1),
        dict(document(), call_threads_count=3),
        {k: v for k, v in document().items() if k != "shipped_at"},
        [document()],
    ):
        assert validator.problem(bad) is not None


def test_post_draft7_schemas_skip_the_fast_path():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "array",
        "prefixItems": [{"type": "integer"}],
    }
    validator = make_validator(schema)
    assert validator.origin == "given"
    assert validator.fast is None
    assert validator.problem(["x"]) is not None
    assert validator.problem([1]) is None


# ----------------------------------------------------------------------------- calls


async def test_valid_document_is_stored_with_receipt_data(receiver, http):
    status, _, body = await post(http, receiver.calls_url, document("1.1"), idem="c:1.1:1")
    assert status == 202 and body == {"status": "accepted"}
    assert receiver.count_documents() == 1
    assert receiver.count_unique_calls() == 1
    [stored] = receiver.docs_for("1.1")
    assert stored == document("1.1")
    [receipt] = receiver.receipts()
    assert receipt["idempotency_key"] == "c:1.1:1"
    assert receipt["ship_phase"] == "complete" and receipt["revision"] == 1
    assert receipt["received_at"] > 1.7e9  # unix time, for latency figures
    assert set(receiver.complete_received_at()) == {"1.1"}


async def test_replay_of_an_idempotency_key_returns_200_and_is_not_stored_twice(receiver, http):
    doc = document("2.1")
    assert (await post(http, receiver.calls_url, doc, idem="c:2.1:1"))[0] == 202
    doc2 = dict(doc, shipped_at="2026-01-15T12:30:00+00:00")  # a retry re-stamps shipped_at
    status, _, body = await post(http, receiver.calls_url, doc2, idem="c:2.1:1")
    assert status == 200 and body == {"status": "duplicate"}
    assert receiver.count_documents() == 1
    assert receiver.stats()["duplicates"] == 1
    assert receiver.key_conflicts == []  # the same content, re-stamped
    # the same key with another content: answered as a duplicate, and noted
    doc4 = dict(doc, duration_seconds=doc["duration_seconds"] + 1)
    assert (await post(http, receiver.calls_url, doc4, idem="c:2.1:1"))[0] == 200
    assert receiver.key_conflicts == ["c:2.1:1"] and receiver.count_documents() == 1
    # a new revision is a new document of the same call
    doc3 = document("2.1", revision=2)
    assert (await post(http, receiver.calls_url, doc3, idem="c:2.1:2"))[0] == 202
    assert receiver.count_documents() == 2
    assert receiver.count_unique_calls() == 1


async def test_latest_complete_document_per_linkedid(receiver, http):
    await post(http, receiver.calls_url, document("3.1", phase="initial", revision=1), idem="a")
    assert receiver.latest_complete("3.1") is None
    await post(http, receiver.calls_url, document("3.1", revision=2), idem="b")
    late = document("3.1", revision=3)
    late["billsec"] = 99
    await post(http, receiver.calls_url, late, idem="c")
    assert receiver.latest_complete("3.1")["revision"] == 3
    assert receiver.latest_complete("3.1")["billsec"] == 99
    assert [d["revision"] for d in receiver.docs_for("3.1")] == [1, 2, 3]
    assert receiver.latest_complete_all()["3.1"]["revision"] == 3
    assert receiver.count_complete_calls() == 1


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("linkedid"), "linkedid"),
        (lambda d: d.update(customer_id="7"), "customer_id"),
        (lambda d: d.update(direction="sideways"), "direction"),
        (lambda d: d.update(ship_phase="final"), "ship_phase"),
        (lambda d: d.update(is_complete="yes"), "is_complete"),
        (lambda d: d.update(call_threads_count=5), "call_threads_count"),
        (lambda d: d.update(call_time="yesterday"), "call_time"),
    ],
)
async def test_invalid_documents_get_400_with_a_reason(receiver, http, mutate, fragment):
    doc = document("4.1")
    mutate(doc)
    status, _, body = await post(http, receiver.calls_url, doc, idem="x")
    assert status == 400
    assert fragment in body["error"]
    assert receiver.count_documents() == 0
    assert receiver.rejects()[0]["status"] == 400


async def test_non_object_and_non_json_bodies_are_400(receiver, http):
    status, _, body = await post(http, receiver.calls_url, [document("5.1")])
    assert status == 400 and "one JSON object" in body["error"]
    status, _, body = await post(http, receiver.calls_url, b"{not json")
    assert status == 400 and "invalid JSON" in body["error"]


async def test_wrong_content_type_is_415(receiver, http):
    status, _, _ = await post(http, receiver.calls_url, document(), content_type="text/plain")
    assert status == 415
    assert receiver.count_documents() == 0


@pytest.mark.parametrize("key", [None, "", "abc", "pk_" + "x" * 32, "sk_"])
async def test_missing_or_malformed_key_is_401(receiver, http, key):
    status, _, body = await post(http, receiver.calls_url, document(), key=key)
    assert status == 401
    assert "error" in body
    assert receiver.count_documents() == 0


async def test_configured_key_must_match_exactly(tmp_path, http):
    async with Receiver(tmp_path / "k.sqlite", api_key=KEY) as r:
        other = "sk_" + "z" * 32
        assert (await post(http, r.calls_url, document("6.1"), key=other))[0] == 401
        assert (await post(http, r.calls_url, document("6.1"), key=KEY))[0] == 202
        assert r.count_documents() == 1


async def test_tiered_keys_are_accepted_in_any_key_mode(receiver, http):
    status, _, _ = await post(http, receiver.calls_url, document("6.2"), key="sk_t2_" + "a" * 30)
    assert status == 202


async def test_documents_survive_a_receiver_restart_and_dedup_still_holds(tmp_path, http):
    db = tmp_path / "persist.sqlite"
    async with Receiver(db) as r1:
        assert (await post(http, r1.calls_url, document("7.1"), idem="k7"))[0] == 202
    async with Receiver(db) as r2:
        assert (await post(http, r2.calls_url, document("7.1"), idem="k7"))[0] == 200
        assert r2.count_documents() == 1


async def test_validation_can_be_switched_off_for_benchmarks(tmp_path, http):
    async with Receiver(tmp_path / "nv.sqlite", validate=False) as r:
        status, _, _ = await post(http, r.calls_url, {"linkedid": "8.1"})
        assert status == 202
        assert r.linkedids() == ["8.1"]


# ----------------------------------------------------------------------------- faults


async def test_control_endpoint_fails_n_requests_with_retry_after(receiver, http):
    async with http.post(
        receiver.url + "/_control", json={"fail_status": 503, "fail_count": 2, "retry_after": 1}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["faults"]["fail_count"] == 2
    answers = []
    for i in range(3):
        status, headers, _ = await post(http, receiver.calls_url, document(f"9.{i}"), idem=str(i))
        answers.append((status, headers.get("Retry-After")))
    assert answers == [(503, "1"), (503, "1"), (202, None)]
    async with http.get(receiver.url + "/_stats") as resp:
        stats = await resp.json()
    assert stats["injected_503"] == 2
    assert stats["accepted"] == 1
    assert stats["documents"] == 1 and stats["unique_calls"] == 1


async def test_fail_linkedid_fails_only_that_call(receiver, http):
    receiver.set_faults(fail_status=400, fail_linkedid="10.2")
    results = {}
    for i in range(4):
        results[f"10.{i}"] = (await post(http, receiver.calls_url, document(f"10.{i}")))[0]
    assert results == {"10.0": 202, "10.1": 202, "10.2": 400, "10.3": 202}
    # unlimited for that linkedid until reset
    assert (await post(http, receiver.calls_url, document("10.2")))[0] == 400
    async with http.post(receiver.url + "/_control", json={"reset": True}) as resp:
        assert resp.status == 200
    assert (await post(http, receiver.calls_url, document("10.2")))[0] == 202
    assert receiver.count_unique_calls() == 4


async def test_constructor_fault_options(tmp_path, http):
    async with Receiver(tmp_path / "f.sqlite", fail_status=429, fail_count=1, retry_after=5) as r:
        status, headers, _ = await post(http, r.calls_url, document("11.1"))
        assert (status, headers["Retry-After"]) == (429, "5")
        assert (await post(http, r.calls_url, document("11.1")))[0] == 202


async def test_fail_path_limits_faults_to_one_endpoint(receiver, http):
    receiver.set_faults(fail_status=500, fail_path="recording")
    assert (await post(http, receiver.calls_url, document("12.1")))[0] == 202
    assert receiver.stats().get("injected", 0) == 0


async def test_control_rejects_unknown_options(receiver, http):
    async with http.post(receiver.url + "/_control", json={"fail_stauts": 503}) as resp:
        assert resp.status == 400
        assert "fail_stauts" in (await resp.json())["error"]
    assert receiver.faults == FaultPlan()


async def test_calls_listing_endpoint(receiver, http):
    await post(http, receiver.calls_url, document("13.1", phase="initial"), idem="a")
    await post(http, receiver.calls_url, document("13.1", revision=2), idem="b")
    await post(http, receiver.calls_url, document("13.2"), idem="c")
    async with http.get(receiver.url + "/_calls") as resp:
        listing = await resp.json()
    assert listing["count"] == 2
    assert {c["linkedid"]: c["revision"] for c in listing["calls"]} == {"13.1": 2, "13.2": 1}
    async with http.get(receiver.url + "/_calls", params={"linkedid": "13.1"}) as resp:
        one = await resp.json()
    assert [d["ship_phase"] for d in one["documents"]] == ["initial", "complete"]


async def test_wait_for_calls(receiver, http):
    async def later():
        await asyncio.sleep(0.05)
        await post(http, receiver.calls_url, document("14.1"))

    task = asyncio.create_task(later())
    assert await receiver.wait_for_calls(1, timeout=10) is True
    await task
    assert await receiver.wait_for_calls(2, timeout=0.1) is False


# ----------------------------------------------------------------------------- recordings


def form(fields: list[tuple[str, str]], audio: bytes | None, *, audio_first: bool = False):
    fd = aiohttp.FormData(default_to_multipart=True)
    if audio is not None and audio_first:
        fd.add_field("audio", audio, filename="a.wav", content_type="audio/wav")
    for k, v in fields:
        fd.add_field(k, v)
    if audio is not None and not audio_first:
        fd.add_field("audio", audio, filename="a.wav", content_type="audio/wav")
    return fd


def rec_fields(size: int, rid: str = "r1") -> list[tuple[str, str]]:
    return [
        ("recording_id", rid),
        ("linkedid", "20.1"),
        ("call_id", rid),
        ("file_name", "a.wav"),
        ("file_size", str(size)),
    ]


async def post_form(http, receiver, fd, key=KEY, idem=None):
    headers = {"Authorization": f"Bearer {key}"}
    if idem:
        headers["Idempotency-Key"] = idem
    async with http.post(receiver.recording_url, data=fd, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_recording_upload_is_stored_and_deduplicated(receiver, http):
    audio = b"RIFF" + bytes(range(256)) * 100
    status, body = await post_form(http, receiver, form(rec_fields(len(audio)), audio))
    assert (status, body) == (202, {"status": "accepted"})
    status, body = await post_form(http, receiver, form(rec_fields(len(audio)), audio))
    assert (status, body) == (200, {"status": "duplicate"})
    [rec] = receiver.recordings()
    assert rec["bytes_received"] == len(audio)
    with open(rec["stored_path"], "rb") as f:
        assert f.read() == audio
    assert receiver.stats()["recording_bytes"] == len(audio)


@pytest.mark.parametrize(
    ("fields", "audio", "audio_first", "fragment"),
    [
        (rec_fields(999), b"abc", False, "file_size mismatch"),
        (rec_fields(3)[:-1], b"abc", False, "missing field file_size"),
        (rec_fields(3), None, False, "no audio part"),
        (rec_fields(3), b"abc", True, "audio must be last"),
    ],
)
async def test_bad_recording_uploads_are_400(receiver, http, fields, audio, audio_first, fragment):
    status, body = await post_form(http, receiver, form(fields, audio, audio_first=audio_first))
    assert status == 400
    assert fragment in body["error"]
    assert receiver.recordings() == []
    # no partial upload left behind
    assert not any(p.name.startswith(".upload-") for p in receiver.recordings_dir.iterdir())


async def test_recording_needs_a_key(receiver, http):
    status, _ = await post_form(http, receiver, form(rec_fields(3), b"abc"), key="bad")
    assert status == 401


async def test_recording_fault_injection(receiver, http):
    receiver.set_faults(fail_status=503, fail_count=1, fail_path="recording")
    assert (await post_form(http, receiver, form(rec_fields(3), b"abc")))[0] == 503
    assert (await post_form(http, receiver, form(rec_fields(3), b"abc")))[0] == 202


# ----------------------------------------------------------------------------- serve()


async def test_serve_runs_until_stop(tmp_path, http):
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    db = tmp_path / "served.sqlite"
    task = asyncio.create_task(
        serve("127.0.0.1", 0, db, api_key=KEY, stop=stop, on_ready=ready.set_result)
    )
    url = await asyncio.wait_for(ready, 10)
    calls_url = url + "/v1/mqs/connectors/asterisk/calls"
    assert (await post(http, calls_url, document("30.1")))[0] == 202
    assert (await post(http, calls_url, document("30.1"), key="sk_" + "q" * 32))[0] == 401
    stop.set()
    await asyncio.wait_for(task, 10)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, calls_url, document("30.2"))
    async with Receiver(db) as again:  # what was stored is on disk
        assert again.linkedids() == ["30.1"]
