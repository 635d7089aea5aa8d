"""RecordingManager against the real state store and real files on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CelRow, RecordingFile, ShipState
from sipstack_agent.recordings.manager import RecordingManager
from sipstack_agent.state import StateStore

from .helpers import (
    CALL_A,
    REAL_WAV,
    FakeClock,
    api_settings,
    copy_real_wav,
    fixture_cdrs,
    fixture_cels,
    recording_shipper,
    sample,
)


@dataclass
class _Ev:
    documents: list[dict[str, Any]] = field(default_factory=list)
    ship: ShipState = field(default_factory=ShipState)
    next_check_at: datetime | None = None
    closed: bool = True


def _settings(root: Path, **kw: Any) -> RecordingSettings:
    base: dict[str, Any] = {
        "paths": (str(root),),
        "stability_check_count": 2,
        "stability_check_interval": 1.0,
        "poll_interval": 0.01,
        "scan_budget": 1000,
    }
    base.update(kw)
    return RecordingSettings(**base)


async def _passes(mgr: RecordingManager, clock: FakeClock, n: int = 5) -> int:
    handed = 0
    for _ in range(n):
        handed += await mgr.poll_once()
        clock.advance(1.0)
    return handed


async def _clean_call(store: StateStore, cels: list[CelRow], cdrs: list[Any]) -> str:
    """Ingest the rows and save an evaluation so the call is no longer dirty."""
    await store.ingest(cels, cdrs, {})
    key = (await store.due_calls(datetime.now(UTC) + timedelta(days=1)))[0]
    assert await store.load_call(key) is not None
    assert await store.save_evaluation(key, _Ev())
    assert key not in await store.due_calls(datetime.now(UTC))
    return key


async def test_real_mixmonitor_row_links_the_real_wav_once_stable_and_complete(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    cels, cdrs = fixture_cels(), fixture_cdrs()
    key = await _clean_call(store, cels, cdrs)
    assert key == CALL_A
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)

    await mgr.on_call(key, cels, cdrs, complete=False)
    assert await _passes(mgr, clock) == 0  # stable, but the call is still running
    assert list(mgr.watched) == [os.path.realpath(wav)]
    assert sample(metrics, "recordings_detected_total", {"source": "cel_mixmonitor"}) == 1
    assert sample(metrics, "sipstack_recordings_pending") == 1
    rec = await store.load_call(key)
    assert rec is not None and rec.recordings == []

    await mgr.on_call(key, cels, cdrs, complete=True)
    assert await _passes(mgr, clock) == 1
    rec = await store.load_call(key)
    assert rec is not None
    assert [(r.filename, r.file_size, r.source, r.uploaded) for r in rec.recordings] == [
        (REAL_WAV.name, REAL_WAV.stat().st_size, "cel_mixmonitor", False)
    ]
    assert rec.recordings[0].file_path == os.path.realpath(wav)
    assert rec.recordings[0].uniqueid == CALL_A
    assert rec.recordings[0].as_document()["file_size"] == 240364
    assert key in await store.due_calls(datetime.now(UTC))  # a new document revision follows
    stats = await store.stats(datetime.now(UTC))
    assert stats.outbox_by_kind.get("recording", 0) == 0  # RECORDING_UPLOAD=false
    assert sample(metrics, "sipstack_recordings_pending") == 0
    # the filesystem saw the same file: de-duplicated by real path, counted once
    await _passes(mgr, clock, 3)
    assert sample(metrics, "recordings_detected_total", {"source": "filesystem"}) == 0
    rec = await store.load_call(key)
    assert rec is not None and len(rec.recordings) == 1


async def test_slowly_written_file_is_handed_on_only_after_it_stops_growing(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    day = root / "2026" / "11" / "24"
    day.mkdir(parents=True)
    name = "in-4155551000-4085551234-20261124-043920-1795495160.0.wav"
    path = day / name
    cels = [
        CelRow(
            "APP_START",
            datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC),
            CALL_A,
            CALL_A,
            appname="MixMonitor",
            appdata=f"2026/11/24/{name[:-4]},b",  # relative AND extension-less
        )
    ]
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    data = REAL_WAV.read_bytes()
    chunk = len(data) // 8
    with path.open("wb") as fh:
        await mgr.on_call(CALL_A, cels, [], complete=True)
        for i in range(8):
            fh.write(data[i * chunk : (i + 1) * chunk])
            fh.flush()
            assert await mgr.poll_once() == 0
            clock.advance(1.0)
        fh.write(data[8 * chunk :])
    assert mgr.watched  # found while growing
    assert await _passes(mgr, clock) == 1
    rec = await store.load_call(CALL_A)
    assert rec is not None
    assert [(r.filename, r.file_size) for r in rec.recordings] == [(name, len(data))]


async def test_filesystem_detection_only_for_known_calls(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    day = root / "2026" / "11" / "24"
    known = copy_real_wav(day, "out-100-4085551234-20261124-050000-1795495300.1.wav")
    copy_real_wav(day, "out-100-4085551234-20261124-050000-1795495300.10.wav")  # not ours
    copy_real_wav(day, "in-1-2-20261124-050000-1795499999.3.wav")  # a call we never saw
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    cel = CelRow(
        "CHAN_START",
        datetime(2026, 11, 24, 5, 0, tzinfo=UTC),
        "1795495300.1",
        "1795495300.1",
    )
    await _passes(mgr, clock, 2)
    await mgr.on_call("1795495300.1", [cel], [], complete=True)
    assert await _passes(mgr, clock, 5) == 1
    rec = await store.load_call("1795495300.1")
    assert rec is not None
    assert [(r.file_path, r.source) for r in rec.recordings] == [
        (os.path.realpath(known), "filesystem")
    ]
    assert sample(metrics, "recordings_detected_total", {"source": "filesystem"}) == 1


async def test_freepbx_cdr_recordingfile_in_dated_folder(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    name = "in-4155551000-4085551234-20261124-043920-1795495160.0.wav"
    # PBX timezone America/Los_Angeles: 04:39 UTC on the 24th is the 23rd there
    wav = copy_real_wav(root / "2026" / "11" / "23", name)
    from sipstack_agent.config import DatabaseSettings

    mgr = RecordingManager(
        _settings(root),
        store,
        metrics,
        clock=clock,
        database=DatabaseSettings(timezone="America/Los_Angeles"),
    )
    cdrs = fixture_cdrs(recordingfile=name)
    await mgr.on_call(CALL_A, [], cdrs, complete=True)
    assert await _passes(mgr, clock) == 1
    rec = await store.load_call(CALL_A)
    assert rec is not None
    assert [(r.file_path, r.source) for r in rec.recordings] == [
        (os.path.realpath(wav), "database")
    ]


async def test_traversal_and_symlink_appdata_are_refused_and_counted(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"do not upload")
    (root / "link.wav").symlink_to(secret)
    t = datetime(2026, 11, 24, tzinfo=UTC)
    cels = [
        CelRow("APP_START", t, "1.1", "1.1", appname="MixMonitor", appdata="../secret.wav,b"),
        CelRow("APP_START", t, "1.2", "1.1", appname="MixMonitor", appdata="link.wav,b"),
        CelRow("APP_START", t, "1.3", "1.1", appname="MixMonitor", appdata=f"{secret},b"),
    ]
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    await mgr.on_call("1.1", cels, [], complete=True)
    assert await _passes(mgr, clock) == 0
    assert not mgr.watched
    assert sample(metrics, "sipstack_recording_paths_refused_total") == 3
    assert all(not kc.hints for kc in mgr.known)  # not retried every pass
    rec = await store.load_call("1.1")
    assert rec is None or rec.recordings == []


async def test_watched_files_survive_a_restart(
    tmp_path: Path, store: StateStore, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    cels, cdrs = fixture_cels(), fixture_cdrs()
    first = RecordingManager(_settings(root), store, Metrics(), clock=clock)
    await first.on_call(CALL_A, cels, cdrs, complete=True)
    await first.poll_once()  # found, not yet stable
    assert first.watched
    saved = await store.recording_watch()
    assert [w["real_path"] for w in saved] == [os.path.realpath(wav)]
    assert await store.positions() == {}  # not a source checkpoint (/status `checkpoints`)
    # a new process: the call is closed and never evaluated again
    second = RecordingManager(_settings(root), store, Metrics(), clock=clock)
    assert await _passes(second, clock) == 1
    rec = await store.load_call(CALL_A)
    assert rec is not None and [r.filename for r in rec.recordings] == [wav.name]
    assert await store.recording_watch() == []


async def test_recordings_already_stored_are_not_detected_again(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    stored = RecordingFile(wav.name, os.path.realpath(wav), "cel_mixmonitor", 1, uploaded=True)
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    await mgr.on_call(CALL_A, fixture_cels(), fixture_cdrs(), [stored], complete=True)
    assert await _passes(mgr, clock) == 0
    assert sample(metrics, "recordings_detected_total", {"source": "cel_mixmonitor"}) == 0


async def test_upload_enabled_queues_a_durable_item(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    from sipstack_agent.config import Identity

    root = tmp_path / "monitor"
    wav = copy_real_wav(root)

    woken: list[bool] = []
    mgr = RecordingManager(
        _settings(root, upload=True),
        store,
        metrics,
        clock=clock,
        identity=Identity(connector_id="pbx-a", version="0.14.0"),
        on_queued=lambda: woken.append(True),  # the recording worker's notify
    )
    doc = {
        "src_number": "4085551234",
        "dst_number": "4155551000",
        "direction": "i",
        "duration_seconds": 17,
        "call_time": "2026-11-24T04:39:20+00:00",
        "tenant": "acme",
    }
    await mgr.on_call(CALL_A, fixture_cels(), fixture_cdrs(), complete=True, document=doc)
    assert await _passes(mgr, clock) == 1
    items = await store.outbox_due(datetime.now(UTC) + timedelta(seconds=1), 10, kind="recording")
    assert len(items) == 1
    it = items[0]
    assert it.idempotency_key == f"pbx-a:recording:{CALL_A}:{wav.name}"
    assert it.call_key == CALL_A
    assert it.payload["file_path"] == os.path.realpath(wav)
    assert it.payload["file_size"] == 240364
    assert it.payload["direction"] == "i" and it.payload["tenant_name"] == "acme"
    assert it.payload["original_file_path"] == str(root / wav.name)
    assert woken == [True]


@pytest.mark.parametrize("bad", [[], ["linkedid"], ["", "", "filename"]])
def test_bad_recordings_columns_are_rejected(bad: list[str]) -> None:
    from sipstack_agent.recordings.detect import parse_columns

    with pytest.raises(ValueError, match="RECORDINGS_COLUMNS"):
        parse_columns(bad)


async def test_symlinked_file_in_the_tree_pointing_outside_is_refused(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    day = root / "2026" / "11" / "24"
    day.mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("secret")
    (day / "in-1-2-20261124-000000-1795495400.1.wav").symlink_to(secret)
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    cel = CelRow("CHAN_START", datetime(2026, 11, 24, tzinfo=UTC), "1795495400.1", "1795495400.1")
    await mgr.on_call("1795495400.1", [cel], [], complete=True)
    assert await _passes(mgr, clock, 4) == 0
    assert not mgr.watched
    assert sample(metrics, "sipstack_recording_paths_refused_total") == 1  # once, not per pass


async def test_calls_are_forgotten_after_the_known_call_window(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    mgr = RecordingManager(_settings(root, known_call_window=60.0), store, metrics, clock=clock)
    cel = CelRow("CHAN_START", datetime(2026, 11, 24, tzinfo=UTC), "1795495500.1", "1795495500.1")
    await mgr.on_call("1795495500.1", [cel], [], complete=True)
    await mgr.poll_once()
    assert "1795495500.1" in mgr.known
    clock.advance(61)
    await mgr.poll_once()
    assert len(mgr.known) == 0
    # a file appearing now is not matched: the call is no longer known
    copy_real_wav(root, "in-1-2-20261124-000000-1795495500.1.wav")
    assert await _passes(mgr, clock, 3) == 0 and not mgr.watched


async def test_run_loop_end_to_end_with_the_receiver(tmp_path: Path, store: StateStore) -> None:
    import asyncio
    import time

    from sipstack_agent.config import Identity
    from sipstack_agent.receiver.server import Receiver
    from sipstack_agent.shipping.client import AiohttpTransport

    key = "sk_" + "r" * 32
    root = tmp_path / "monitor"
    copy_real_wav(root / "2026" / "11" / "24")
    receiver = Receiver(tmp_path / "r.db", api_key=key, recordings_dir=tmp_path / "got")
    await receiver.start()
    transport = AiohttpTransport(timeout=10)
    metrics = Metrics()
    rset = _settings(root, upload=True, stability_check_interval=0.02, poll_interval=0.02)
    identity = Identity(connector_id="e2e")
    api = api_settings(key, API_URL=receiver.calls_url)
    up = recording_shipper(store, transport, rset, api, identity, metrics, idle_interval=0.02)
    mgr = RecordingManager(
        rset, store, metrics, identity=identity, on_queued=up.notify, clock=time.time
    )
    stop = asyncio.Event()
    task = asyncio.create_task(mgr.run(stop))
    upload_task = asyncio.create_task(up.run(stop))
    try:
        # the call is known only by its rows (no MixMonitor row): filesystem detection
        cels = [c for c in fixture_cels() if c.appname != "MixMonitor"]
        await mgr.on_call(CALL_A, cels, fixture_cdrs(), complete=True)
        for _ in range(1000):
            if receiver.recordings():
                break
            await asyncio.sleep(0.02)
        got = receiver.recordings()
        assert [(r["file_name"], r["bytes_received"]) for r in got] == [
            (REAL_WAV.name, REAL_WAV.stat().st_size)
        ]
        for _ in range(200):
            rec = await store.load_call(CALL_A)
            if rec is not None and rec.recordings and rec.recordings[0].uploaded:
                break
            await asyncio.sleep(0.02)
        assert rec is not None and rec.recordings[0].uploaded
        assert rec.recordings[0].source == "filesystem"
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await asyncio.wait_for(upload_task, 20)
        await transport.close()
        await receiver.stop()
    assert sample(metrics, "sipstack_recordings_uploaded_total") == 1


async def test_known_calls_stay_at_the_cap_least_recently_evaluated_first(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    mgr = RecordingManager(_settings(root, known_call_max=100), store, metrics, clock=clock)
    day = datetime(2026, 11, 24, tzinfo=UTC)
    first = "1795400000.0"
    for i in range(1000):
        key = f"{1795400000 + i}.{i}"
        await mgr.on_call(key, [CelRow("CHAN_START", day, key, key)], [], complete=i % 2 == 0)
        if i % 10 == 0:  # the first call stays active: evaluated again and again
            await mgr.on_call(first, [CelRow("CHAN_START", day, first, first)], [], complete=False)
        assert len(mgr.known) <= 100
    assert len(mgr.known) >= 90
    assert first in mgr.known and "1795400999.999" in mgr.known
    assert "1795400001.1" not in mgr.known  # an old call nobody evaluated again
    assert mgr.status()["known_calls"] == len(mgr.known)


async def test_a_complete_call_is_forgotten_once_its_recording_is_stored(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    copy_real_wav(root)
    cels, cdrs = fixture_cels(), fixture_cdrs()
    key = await _clean_call(store, cels, cdrs)
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    await mgr.on_call(key, cels, cdrs, complete=True)
    assert await _passes(mgr, clock) == 1
    assert key in mgr.known and mgr.known.stored
    rec = await store.load_call(key)  # the re-evaluation the stored recording causes
    assert rec is not None and len(rec.recordings) == 1
    await mgr.on_call(key, cels, cdrs, rec.recordings, complete=True)
    assert key not in mgr.known and not mgr.known.stored and not mgr.watched
    assert await _passes(mgr, clock, 3) == 0  # and the file is not found again
    rec = await store.load_call(key)
    assert rec is not None and len(rec.recordings) == 1


async def test_a_running_call_with_a_stored_recording_is_kept(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    stored = RecordingFile(wav.name, os.path.realpath(wav), "cel_mixmonitor", 1)
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    await mgr.on_call(CALL_A, fixture_cels(), fixture_cdrs(), [stored], complete=False)
    assert CALL_A in mgr.known  # more legs may still record


async def test_a_v4_watch_position_moves_into_its_table(tmp_path: Path, clock: FakeClock) -> None:
    """State schema v5: the watched files leave the positions (/status `checkpoints`) for
    the `recording_watch` table; what a v4 agent saved is resumed."""
    import json
    import sqlite3

    from sipstack_agent.state.schema import SCHEMA_V1, SCHEMA_V2, SCHEMA_V3

    root = tmp_path / "monitor"
    wav = copy_real_wav(root)
    path = tmp_path / "state.db"
    watched = {"real_path": os.path.realpath(wav), "call_key": CALL_A, "source": "filesystem"}
    with sqlite3.connect(path) as c:
        c.executescript(SCHEMA_V1 + SCHEMA_V2 + SCHEMA_V3)  # v4 re-encoded rows only
        c.execute("PRAGMA user_version = 4")
        c.execute(
            "INSERT INTO positions (name, value, updated_at) VALUES (?, ?, 0), (?, ?, 0)",
            ("recordings.watch", json.dumps({"watched": [watched]}), "sql:cdr:cdr", '{"id": 7}'),
        )
    c.close()
    store = await StateStore.open(path)
    try:
        assert await store.positions() == {"sql:cdr:cdr": {"id": 7}}
        assert [w["real_path"] for w in await store.recording_watch()] == [watched["real_path"]]
        mgr = RecordingManager(_settings(root), store, Metrics(), clock=clock)
        await mgr.load()
        assert list(mgr.watched) == [os.path.realpath(wav)]
    finally:
        await store.close()


OTHER = "1795495999.0"  # a second call the store later merges into CALL_A


async def _two_calls_then_merged(
    store: StateStore, mgr: RecordingManager, root: Path
) -> tuple[Path, list[CelRow], list[Any]]:
    """CALL_A and OTHER evaluated apart, a file named by OTHER found for OTHER, then a
    row with both ids: the store merges OTHER into CALL_A. The merged call's rows."""
    from dataclasses import replace

    cels_a = fixture_cels()
    cels_b = [replace(r, linkedid=OTHER, uniqueid=OTHER, row_id=9_000 + i)
              for i, r in enumerate(cels_a[:2])]  # fmt: skip
    await store.ingest(cels_a + cels_b, [], {})
    assert await store.find_call(OTHER) == OTHER  # two calls so far
    await mgr.on_call(CALL_A, cels_a, [], complete=False)
    await mgr.on_call(OTHER, cels_b, [], complete=False)
    wav = copy_real_wav(root, f"out-4085551234-4155551000-20261124-043920-{OTHER}.wav")
    await mgr.poll_once()
    assert [w.call_key for w in mgr.watched.values()] == [OTHER]
    link = replace(cels_b[0], uniqueid=cels_a[0].uniqueid, row_id=9_100)  # one leg, both ids
    await store.ingest([link], [], {})
    assert await store.find_call(OTHER) == CALL_A
    rec = await store.load_call(CALL_A)
    assert rec is not None and {r.linkedid for r in rec.cels} == {CALL_A, OTHER}
    return wav, rec.cels, rec.cdrs


@pytest.mark.parametrize("restart", [False, True])
async def test_a_call_merged_by_the_store_takes_over_the_merged_calls_files(
    tmp_path: Path, store: StateStore, metrics: Metrics, clock: FakeClock, restart: bool
) -> None:
    """The survivor's next evaluation (also after a restart, from the persisted watch
    list) forgets the merged-away key; a file found under it is watched and stored
    under the survivor, without waiting for the merged-away call to expire."""
    root = tmp_path / "monitor"
    mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
    wav, cels, cdrs = await _two_calls_then_merged(store, mgr, root)
    if restart:
        mgr = RecordingManager(_settings(root), store, metrics, clock=clock)
        await mgr.load()
    await mgr.on_call(CALL_A, cels, cdrs, complete=True)
    assert OTHER not in mgr.known and CALL_A in mgr.known
    assert mgr.known.owners()[OTHER] == CALL_A
    assert [w.call_key for w in mgr.watched.values()] == [CALL_A]
    assert await _passes(mgr, clock) == 1
    rec = await store.load_call(CALL_A)
    assert rec is not None
    assert [r.file_path for r in rec.recordings] == [os.path.realpath(wav)]
