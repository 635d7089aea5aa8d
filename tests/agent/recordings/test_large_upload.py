"""A 200 MB recording is streamed: the agent's memory does not grow with the file."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import psutil
from sipstack_agent.config import ApiSettings, Identity, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import RecordingFile
from sipstack_agent.receiver.server import Receiver
from sipstack_agent.recording_queue import KIND, upload_payload
from sipstack_agent.shipping.client import AiohttpTransport
from sipstack_agent.state import StateStore

from .helpers import recording_shipper

SIZE = 200 * 1024 * 1024
KEY = "sk_" + "m" * 32


async def test_200mb_sparse_recording_uploads_with_bounded_rss(
    tmp_path: Path, store: StateStore
) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    big = root / "in-4155551000-4085551234-20261124-043920-1795495160.0.wav"
    with big.open("wb") as fh:  # sparse: no disk blocks, 200 MB of zeros when read
        fh.write(b"RIFF")
        fh.truncate(SIZE)
    real = os.path.realpath(big)
    rec = RecordingFile(big.name, real, "filesystem", SIZE, uniqueid="1795495160.0")
    await store.enqueue(
        KIND,
        "pbx:recording:big",
        upload_payload(
            rec,
            linkedid="1795495160.0",
            original_path=str(big),
            mtime_ns=big.stat().st_mtime_ns,
            call={},
        ),
        "1795495160.0",
    )
    received_dir = tmp_path / "received"
    receiver = Receiver(tmp_path / "r.db", api_key=KEY, recordings_dir=received_dir)
    await receiver.start()
    transport = AiohttpTransport(timeout=60.0)
    proc = psutil.Process()
    gc.collect()
    baseline = proc.memory_info().rss
    peak = baseline
    running = True

    async def sample_rss() -> None:
        nonlocal peak
        while running:
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_rss())
    try:
        metrics = Metrics()
        up = recording_shipper(
            store,
            transport,
            RecordingSettings(paths=(str(root),), upload=True, delete_after_upload=True),
            ApiSettings(url=receiver.calls_url, recording_url=receiver.recording_url, api_key=KEY),
            Identity(connector_id="pbx"),
            metrics,
        )
        await up.drain()
    finally:
        running = False
        await sampler
        await transport.close()
    try:
        got = receiver.recordings()
        assert len(got) == 1
        assert got[0]["bytes_received"] == got[0]["file_size"] == SIZE
        assert os.path.getsize(got[0]["stored_path"]) == SIZE
        assert not big.exists()  # delete after upload, inside RECORDING_PATHS
        assert metrics.registry.get_sample_value("sipstack_recording_upload_bytes_total") == SIZE
        # the sender and the in-process receiver both stream: far below the file size
        growth = peak - baseline
        assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"
    finally:
        await receiver.stop()
