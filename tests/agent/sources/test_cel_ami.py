"""CEL over AMI: mapping, and the real panoramisk client against a protocol-level server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sqlite3
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sipstack_agent.config import AmiSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.rules.checks import Status
from sipstack_agent.sim.ami import AmiServer, cel_event, event_block
from sipstack_agent.sources.cel_ami import (
    GAPS_POSITION,
    CelAmiSource,
    Gap,
    check_ami,
    event_to_row,
    load_gaps,
    overlaps_gap,
)
from sipstack_agent.sources.celtime import TimeParser
from sipstack_agent.state import StateStore, stored_cel

T0 = datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC)


def headers_dict(h: list[tuple[str, str]]) -> dict[str, str]:
    return dict(h)


# --------------------------------------------------------------------------- mapping


def test_every_ami_cel_field_is_mapped():
    h = cel_event(
        "BRIDGE_ENTER",
        T0,
        "1795495160.0",
        "1795495160.0",
        CallerIDnum="4085551234",
        CallerIDname="John Smith",
        CallerIDani="4085551234",
        CallerIDrdnis="5551000",
        CallerIDdnid="4155551000",
        Exten="4155551000",
        Context="from-pstn",
        Channel="SIP/pstn-in-00000000",
        Application="Dial",
        AppData="SIP/101,20,tT",
        AMAFlags="DOCUMENTATION",
        AccountCode="acme",
        Peer="SIP/101-00000001",
        PeerAccount="acme2",
        Extra='{"bridge_id":"436fde8e","bridge_technology":"simple_bridge"}',
    )
    row = event_to_row(headers_dict(h), TimeParser("UTC"), "s:1")
    assert row.eventtype == "BRIDGE_ENTER"
    assert row.eventtime == T0.replace(microsecond=0)  # EventTime has whole seconds
    assert (row.cid_num, row.cid_name, row.cid_ani, row.cid_rdnis, row.cid_dnid) == (
        "4085551234",
        "John Smith",
        "4085551234",
        "5551000",
        "4155551000",
    )
    assert (row.exten, row.context, row.channame, row.appname, row.appdata) == (
        "4155551000",
        "from-pstn",
        "SIP/pstn-in-00000000",
        "Dial",
        "SIP/101,20,tT",
    )
    assert row.amaflags == "3"  # as the cel table stores DOCUMENTATION
    assert (row.accountcode, row.uniqueid, row.linkedid, row.peer, row.peeraccount) == (
        "acme",
        "1795495160.0",
        "1795495160.0",
        "SIP/101-00000001",
        "acme2",
    )
    assert json.loads(row.extra)["bridge_id"] == "436fde8e"
    assert row.source == "ami" and row.row_id is None and row.source_pos == "s:1"


def test_timestamp_header_gives_microseconds_and_eventtime_the_zone():
    tz = ZoneInfo("America/Toronto")
    h = headers_dict(cel_event("ANSWER", T0, "1.1", "1.0", local_tz=tz, timestamp=True))
    assert event_to_row(h, TimeParser("America/Toronto")).eventtime == T0
    h.pop("Timestamp")
    assert event_to_row(h, TimeParser("America/Toronto")).eventtime == T0.replace(microsecond=0)
    # a Timestamp that disagrees (other clock/zone mix-up) is not trusted
    h["Timestamp"] = f"{(T0 + timedelta(hours=5)).timestamp():.6f}"
    assert event_to_row(h, TimeParser("America/Toronto")).eventtime == T0.replace(microsecond=0)


def test_user_defined_events_like_the_cel_table():
    times = TimeParser()
    shown = headers_dict(cel_event("USER_DEFINED", T0, "1.1", "1.0", UserDefType="IVR_CHOICE"))
    row = event_to_row(shown, times)
    assert (row.eventtype, row.userdeftype) == ("IVR_CHOICE", "IVR_CHOICE")
    hidden = headers_dict(cel_event("IVR_CHOICE", T0, "1.1", "1.0"))
    row = event_to_row(hidden, times)
    assert (row.eventtype, row.userdeftype) == ("IVR_CHOICE", "IVR_CHOICE")
    std = event_to_row(headers_dict(cel_event("HANGUP", T0, "1.1", "1.0")), times)
    assert std.userdeftype == ""


@pytest.mark.parametrize("drop", ["EventName", "UniqueID", "EventTime"])
def test_unusable_events_raise(drop):
    h = headers_dict(cel_event("ANSWER", T0, "1.1", "1.0"))
    del h[drop]
    with pytest.raises(ValueError):
        event_to_row(h, TimeParser())


def test_overlaps_gap():
    now = T0 + timedelta(hours=1)
    gaps = [Gap(T0, T0 + timedelta(minutes=1)), Gap(T0 + timedelta(minutes=30), None)]
    before = T0 - timedelta(minutes=5)
    assert overlaps_gap(gaps, before, T0 - timedelta(minutes=1), now) is None  # ended before
    assert overlaps_gap(gaps, before, None, now) == gaps[0]  # still open across the gap
    assert overlaps_gap(gaps, T0 + timedelta(seconds=10), T0 + timedelta(minutes=2), now)
    assert overlaps_gap(gaps, T0 + timedelta(minutes=2), T0 + timedelta(minutes=3), now) is None
    assert overlaps_gap(gaps, T0 + timedelta(minutes=29), None, now) == gaps[1]  # open gap


# --------------------------------------------------------------------------- against the server


def fast(port: int, **kw) -> AmiSettings:
    base = dict(
        host="127.0.0.1",
        port=port,
        username="sipstack",
        password="s3cret",
        ping_interval=0.1,
        connect_timeout=2.0,
        backoff_initial=0.01,
        backoff_cap=0.05,
    )
    base.update(kw)
    return AmiSettings(**base)


@pytest.fixture
async def store(tmp_path):
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def stored(path: str | Path) -> list[dict]:
    con = sqlite3.connect(path)
    try:
        rows = [stored_cel(d) for (d,) in con.execute("SELECT data FROM cel ORDER BY seq")]
        return [{**dataclasses.asdict(r), "eventtime": r.eventtime.isoformat()} for r in rows]
    finally:
        con.close()


async def until(pred, timeout: float = 20.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


def call_events(linkedid: str, start: datetime, n: int = 4) -> list[list[tuple[str, str]]]:
    kinds = ["CHAN_START", "ANSWER", "HANGUP", "CHAN_END", "LINKEDID_END"]
    return [
        cel_event(
            kinds[i % len(kinds)],
            start + timedelta(milliseconds=10 * i),
            linkedid,
            linkedid,
            timestamp=True,
            Channel=f"SIP/100-{linkedid}",
            CallerIDname="José" if i == 0 else "",
            Extra="",
        )
        for i in range(n)
    ]


async def test_events_are_stored_with_the_real_client(store):
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics(), "UTC")
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await srv.wait_logins(1)
        login = next(a for a in srv.actions if a["action"].lower() == "login")
        assert login["events"] == "call" and "actionid" in login
        await until(lambda: src.state == "connected")
        for h in call_events("1795495160.0", T0, 5):
            assert srv.send_cel(h) == 1
        # identical events in the same second stay distinct rows
        dup = cel_event("DTMF", T0, "1795495160.0", "1795495160.0", Extra='{"digit":"1"}')
        srv.send_cel(dup)
        srv.send_cel(dup)
        await until(lambda: len(stored(store.path)) == 7)
        await until(lambda: srv.pings >= 2)  # keepalive
        stop.set()
        await asyncio.wait_for(task, 10)
    rows = stored(store.path)
    assert [r["eventtype"] for r in rows[:5]] == [
        "CHAN_START",
        "ANSWER",
        "HANGUP",
        "CHAN_END",
        "LINKEDID_END",
    ]
    assert rows[0]["cid_name"] == "José"
    assert datetime.fromisoformat(rows[0]["eventtime"]) == T0  # Timestamp precision
    assert src.state == "stopped"
    pos = await store.get_position("ami")
    assert pos["last_alive"] and pos["connected"] is False
    assert src.metrics.cels_processed.labels(source="ami")._value.get() == 7


async def test_failed_login_is_a_clear_error_and_retried(store):
    async with AmiServer(secret="right") as srv:
        src = CelAmiSource(fast(srv.port, password="wrong"), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: srv.login_attempts >= 3 and src.state == "auth_failed")
        assert src.state == "auth_failed" and not src.healthy
        assert "Authentication failed" in (src.last_error or "")
        assert "sipstack" in (src.last_error or "")
        assert src.metrics.ami_connected._value.get() == 0
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_reconnect_after_drop_records_the_gap(store):
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await srv.wait_logins(1)
        for h in call_events("100.0", T0, 2):
            srv.send_cel(h)
        await until(lambda: len(stored(store.path)) == 2)
        # send two more and drop the connection mid-stream (the second one half-written)
        srv.send_cel(call_events("100.0", T0, 3)[2])
        srv.send_raw(b"Event: CEL\r\nEventName: HANGUP\r\nUniqueID: 100.0")
        await asyncio.sleep(0.05)
        srv.drop_all()
        await srv.wait_logins(2)
        await until(lambda: src.state == "connected")
        for h in call_events("200.0", T0 + timedelta(seconds=5), 2):
            srv.send_cel(h)
        await until(lambda: len(stored(store.path)) == 5)
        gaps = await load_gaps(store)
        assert len(gaps) == 1 and gaps[0].end is not None and gaps[0].start <= gaps[0].end
        assert gaps[0].reason == "connection lost"
        assert src.connects == 2
        assert src.metrics.ami_gaps._value.get() == 1
        stop.set()
        await asyncio.wait_for(task, 10)
    linked = [r["linkedid"] for r in stored(store.path)]
    assert linked == ["100.0", "100.0", "100.0", "200.0", "200.0"]


async def test_unanswered_pings_cause_a_reconnect(store):
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics(), ping_timeout=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await srv.wait_logins(1)
        srv.answer_pings = False
        await until(lambda: srv.logins >= 2)
        srv.answer_pings = True
        await until(lambda: src.state == "connected")
        stop.set()
        await asyncio.wait_for(task, 10)
    assert (await load_gaps(store))[0].end is not None


async def test_agent_restart_is_a_gap(store):
    async with AmiServer() as srv:
        for _ in range(2):
            src = CelAmiSource(fast(srv.port), store, Metrics())
            stop = asyncio.Event()
            task = asyncio.create_task(src.run(stop))
            await until(lambda src=src: src.state == "connected")
            stop.set()
            await asyncio.wait_for(task, 10)
    gaps = await load_gaps(store)
    # stopped (closed by the next login), stopped again (open until the next start)
    assert [g.reason for g in gaps] == ["agent stopped", "agent stopped"]
    assert gaps[0].end is not None and gaps[1].end is None
    raw = await store.get_position(GAPS_POSITION)
    assert raw["gaps"][0]["start"] <= raw["gaps"][0]["end"]


async def test_crash_without_clean_stop_is_a_gap(store):
    # a previous run that died while connected left only its last sign of life
    await store.set_position("ami", {"last_alive": T0.isoformat(), "connected": True})
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        gaps = await load_gaps(store)
        assert len(gaps) == 1 and gaps[0].reason == "agent restart"
        assert gaps[0].start == T0 and gaps[0].end is not None
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_unreachable_server_backs_off_and_reports(store):
    async with AmiServer() as srv:
        port = srv.port
    src = CelAmiSource(fast(port), store, Metrics())
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    await until(lambda: src.state == "disconnected")
    assert src.last_error and src.healthy
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_check_ami():
    async with AmiServer() as srv:
        res = await check_ami(fast(srv.port), wait=0.2)
        # an idle PBX: WARN, not FAIL (rules/checks.py)
        assert [(r.name, r.status) for r in res] == [
            ("ami login", Status.OK),
            ("ami cel events", Status.WARN),
        ]
        assert "no CEL event" in res[1].detail

        async def feed() -> None:
            await srv.wait_logins(srv.logins + 1)
            srv.send_cel(call_events("300.0", T0, 1)[0])

        feeder = asyncio.create_task(feed())
        res = await check_ami(fast(srv.port), wait=10)
        await feeder
        assert res[1].status is Status.OK and "CHAN_START" in res[1].detail

        res = await check_ami(fast(srv.port, password="nope"), wait=0.2)
        assert res[0].failed and "Authentication failed" in res[0].detail and res[0].hint
        port = srv.port
    res = await check_ami(fast(port), wait=0.2)
    assert res[0].failed and "cannot connect" in res[0].detail


async def test_event_mask_without_call_gets_no_cel(store):
    """Why the default is Events: call: cel_manager raises CEL in the call class."""
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port, events="cdr,reporting"), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        assert srv.send_cel(call_events("1.0", T0, 1)[0]) == 0
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_cancelling_run_flushes_what_was_received(store):
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics())
        task = asyncio.create_task(src.run(asyncio.Event()))
        await until(lambda: src.state == "connected")
        for h in call_events("400.0", T0, 3):
            srv.send_cel(h)
        await until(lambda: src.events_received == 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    assert [r["linkedid"] for r in stored(store.path)] == ["400.0"] * 3
    assert src.state == "stopped"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_tls(tmp_path, store):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = AmiServer()
    await srv.start(ssl=ctx)
    try:
        ok = fast(srv.port, tls=True, tls_ca_file=str(cert))
        res = await check_ami(ok, wait=0.1)
        assert res[0].status is Status.OK, res
        # an untrusted certificate is refused unless verification is turned off
        res = await check_ami(fast(srv.port, tls=True), wait=0.1)
        assert res[0].failed
        res = await check_ami(fast(srv.port, tls=True, tls_verify=False), wait=0.1)
        assert res[0].status is Status.OK, res
        src = CelAmiSource(ok, store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        srv.send_cel(call_events("500.0", T0, 1)[0])
        await until(lambda: len(stored(store.path)) == 1)
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        await srv.stop()


async def test_store_failures_keep_events_buffered_until_written(store):
    fails = {"left": 3}
    real_ingest = store.ingest

    async def flaky(cels=(), cdrs=(), positions=None):
        if fails["left"]:
            fails["left"] -= 1
            raise OSError("database is locked")
        return await real_ingest(cels, cdrs, positions)

    store.ingest = flaky
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        for h in call_events("600.0", T0, 4):
            srv.send_cel(h)
        await until(lambda: len(stored(store.path)) == 4)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert fails["left"] == 0 and src.events_stored == 4


async def test_a_message_without_end_is_cut_off_and_the_source_reconnects(store):
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port), store, Metrics())
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await srv.wait_logins(1)
        await until(lambda: src.state == "connected")
        srv.send_raw(b"Event: CEL\r\nExtra: " + b"x" * (1024 * 1024))  # 1 MiB, never ends
        await srv.wait_logins(2)  # the agent hung up on the peer and logged in again
        await until(lambda: src.state == "connected")
        for h in call_events("300.0", T0, 2):
            srv.send_cel(h)
        await until(lambda: len(stored(store.path)) == 2)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert src.connects == 2
    assert (await load_gaps(store))[0].reason == "connection lost"  # the cut-off is a gap


async def test_a_slow_store_pauses_reading_instead_of_buffering_without_bound(store):
    gate = asyncio.Event()
    real_ingest = store.ingest

    async def slow(cels=(), cdrs=(), positions=None):
        await gate.wait()
        return await real_ingest(cels, cdrs, positions)

    store.ingest = slow
    async with AmiServer() as srv:
        src = CelAmiSource(fast(srv.port, ping_interval=30.0), store, Metrics(), buffer_max=10)
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        events = [h for i in range(10) for h in call_events(f"400.{i}", T0, 4)]
        for h in events:
            srv.send_cel(h)
            await asyncio.sleep(0.002)
        await until(lambda: src.read_pauses == 1)
        await asyncio.sleep(0.2)  # whatever was still on its way
        assert len(src._buf) < len(events)
        assert src.events_received < len(events)  # the rest waits in the socket, unread
        gate.set()
        await until(lambda: len(stored(store.path)) == len(events))
        stop.set()
        await asyncio.wait_for(task, 10)
    assert src.connects == 1  # no event lost to a reconnect


async def test_messages_cut_anywhere_and_mixed_with_other_traffic_arrive_in_order(store):
    async with AmiServer() as srv:
        # no pings here: the server would write a Pong in the middle of the cut message
        src = CelAmiSource(fast(srv.port, ping_interval=30.0), store, Metrics(), "UTC")
        stop = asyncio.Event()
        task = asyncio.create_task(src.run(stop))
        await until(lambda: src.state == "connected")
        events = [
            cel_event("CHAN_START", T0 + timedelta(seconds=i), f"9.{i}", "9.0", timestamp=True)
            for i in range(12)
        ]
        blob = b"".join(
            event_block(h) + (b"Event: Newchannel\r\nChannel: SIP/1\r\n\r\n" if i % 3 == 0 else b"")
            for i, h in enumerate(events[:10])
        )
        for i in range(0, len(blob), 7):  # cut at every 7th byte, each piece read alone
            srv.send_raw(blob[i : i + 7])
            await asyncio.sleep(0)
        # a CEL event with an ActionID goes through panoramisk's own parser, still stored
        tagged = [*events[10][:2], ("ActionID", "x-1"), *events[10][2:]]
        srv.send_raw(event_block(tagged))
        srv.send_cel(events[11])
        await until(lambda: len(stored(store.path)) == 12)
        assert src.state == "connected"
        stop.set()
        await asyncio.wait_for(task, 10)
    rows = stored(store.path)
    assert [r["uniqueid"] for r in rows] == [f"9.{i}" for i in range(12)]
    assert [datetime.fromisoformat(r["eventtime"]) for r in rows] == [
        T0 + timedelta(seconds=i) for i in range(12)
    ]
    assert src.connects == 1 and src.events_received == 12
