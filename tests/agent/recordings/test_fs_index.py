"""The incremental, budgeted file-system scan over FreePBX-style nested folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sipstack_agent.recordings.detect import FsIndex

EXTS = ("wav", "mp3", "gsm", "ogg", "WAV")


def _day(root: Path, y: int, m: int, d: int) -> Path:
    p = root / f"{y:04d}" / f"{m:02d}" / f"{d:02d}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_finds_nested_freepbx_files_by_uniqueid_token(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    day = _day(root, 2026, 11, 24)
    (day / "in-4155551000-4085551234-20261124-043920-1795495160.1.wav").write_bytes(b"a")
    (day / "in-4155551000-4085551234-20261124-043921-1795495160.10.wav").write_bytes(b"b")
    (day / "notes.txt").write_text("not a recording 1795495160.1")
    idx = FsIndex([str(root)], EXTS, budget=1000)
    while idx.scan() and idx.full_cycles == 0:
        pass
    found = idx.find(["1795495160.1", "1795495160.10", "1795495160.2"])
    assert {k: sorted(os.path.basename(p) for p in v) for k, v in found.items()} == {
        "1795495160.1": ["in-4155551000-4085551234-20261124-043920-1795495160.1.wav"],
        "1795495160.10": ["in-4155551000-4085551234-20261124-043921-1795495160.10.wav"],
    }
    assert idx.find_name("in-4155551000-4085551234-20261124-043920-1795495160.1.wav")


def test_unchanged_directories_are_not_listed_again(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    for d in range(1, 29):
        day = _day(root, 2026, 10, d)
        for i in range(20):
            (day / f"in-1-2-202610{d:02d}-000000-17950{d:02d}000.{i}.wav").write_bytes(b"")
    idx = FsIndex([str(root)], EXTS, budget=100_000)
    first = idx.scan()
    assert first > 28 * 20  # everything listed once
    second = idx.scan()
    # only stats of the known directories: no directory listed again
    assert second == len(idx._dirs) + 0
    assert second < first / 10
    # a new file in one day folder: only that folder is listed again
    new = root / "2026" / "10" / "05" / "in-1-2-20261005-000000-1795099999.1.wav"
    new.write_bytes(b"x")
    before = idx.entries_seen
    idx.scan()
    assert idx.entries_seen - before == len(idx._dirs) + 21
    assert idx.find(["1795099999.1"])


def test_budget_bounds_each_pass_and_the_round_robin_covers_everything(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    days = []
    for m in range(1, 13):
        for d in range(1, 29):
            days.append(_day(root, 2025, m, d))
    target = days[-1] / "in-1-2-20251228-000000-1765000000.7.wav"
    target.write_bytes(b"x")
    idx = FsIndex([str(root)], EXTS, budget=50)
    passes = 0
    while not idx.find(["1765000000.7"]):
        spent = idx.scan()
        passes += 1
        # a pass may finish the directory it started, never more
        assert spent <= 50 + 30
        assert passes < 100
    assert passes > 3  # the tree (350 dirs) was not walked in one pass


def test_old_directories_are_walked_but_not_indexed(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    old = _day(root, 2020, 1, 1)
    (old / "in-1-2-20200101-000000-1577836800.1.wav").write_bytes(b"x")
    _age(old, 400 * 86400)
    recent = _day(root, 2026, 11, 24)
    (recent / "in-1-2-20261124-000000-1795495160.3.wav").write_bytes(b"x")
    idx = FsIndex([str(root)], EXTS, budget=1000, index_window=2 * 86400)
    for _ in range(3):
        idx.scan()
    assert idx.indexed_files == 1
    assert not idx.find(["1577836800.1"])
    assert idx.find(["1795495160.3"])


def test_file_created_before_its_call_is_known_is_still_found(tmp_path: Path) -> None:
    """MixMonitor creates the file before the CEL row reaches the agent."""
    root = tmp_path / "monitor"
    day = _day(root, 2026, 11, 24)
    f = day / "out-100-4085551234-20261124-043920-1795495170.5.wav"
    f.write_bytes(b"x")
    idx = FsIndex([str(root)], EXTS, budget=1000)
    idx.scan()
    idx.scan()
    with f.open("ab") as fh:  # grows: the directory mtime does not change
        fh.write(b"more")
    idx.scan()
    assert idx.find(["1795495170.5"])  # the call became known only now


def test_removed_directories_and_files_leave_the_index(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    day = _day(root, 2026, 11, 24)
    f = day / "in-1-2-20261124-000000-1795495160.4.wav"
    f.write_bytes(b"x")
    idx = FsIndex([str(root)], EXTS, budget=1000)
    idx.scan()
    idx.scan()
    assert idx.find(["1795495160.4"])
    f.unlink()
    day.rmdir()
    for _ in range(3):
        idx.scan()
    assert not idx.find(["1795495160.4"])
    assert idx.indexed_files == 0


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "in-1-2-20261124-000000-1795495160.6.wav").write_bytes(b"x")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    idx = FsIndex([str(root)], EXTS, budget=1000)
    for _ in range(3):
        idx.scan()
    assert not idx.find(["1795495160.6"])


def test_prioritized_directory_is_looked_at_first(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    for d in range(1, 29):
        _day(root, 2024, 1, d)
    idx = FsIndex([str(root)], EXTS, budget=10_000)
    idx.scan()
    idx.scan()
    old_day = root / "2024" / "01" / "15"
    _age(old_day, 30 * 86400)
    _age(root / "2024" / "01", 30 * 86400)
    idx.budget = 10
    idx.scan()
    (old_day / "in-1-2-20240115-000000-1705300000.1.wav").write_bytes(b"x")
    idx.prioritize([str(old_day)])
    idx.scan()
    assert idx.find(["1705300000.1"])


def test_a_root_that_is_a_symlink_is_scanned_through_its_target(tmp_path: Path) -> None:
    data = tmp_path / "data" / "monitor"
    data.mkdir(parents=True)
    link = tmp_path / "spool-monitor"
    link.symlink_to(data, target_is_directory=True)
    idx = FsIndex([str(link)], EXTS, budget=1000)
    idx.scan()
    idx.scan()
    (data / "in-1-2-20261124-000000-1795495160.8.wav").write_bytes(b"x")
    idx.scan()
    assert idx.find(["1795495160.8"])


def test_prioritize_resolves_each_directory_once_and_keeps_the_root_rule(tmp_path: Path) -> None:
    data = tmp_path / "data" / "monitor"
    day = data / "2026" / "11" / "24"
    day.mkdir(parents=True)
    link = tmp_path / "spool-monitor"
    link.symlink_to(data, target_is_directory=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    idx = FsIndex([str(link)], EXTS, budget=1000)
    for _ in range(3):  # every call of the day names the same folders
        idx.prioritize([str(link / "2026" / "11" / "24"), str(outside), str(link / "..")])
    assert idx._priority == [str(day)]  # its real path, once; the others are not under a root
    assert set(idx._real_dirs) == {str(link / "2026" / "11" / "24"), str(outside), str(link / "..")}
