"""Path rules: MixMonitor appdata resolution, id matching, containment in RECORDING_PATHS."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sipstack_agent.recordings.paths import (
    REFUSED_NOT_FILE,
    REFUSED_OUTSIDE,
    REFUSED_SYMLINK,
    REFUSED_TRAVERSAL,
    content_type_for,
    first_existing,
    has_known_extension,
    ids_in_name,
    local_dates,
    mixmonitor_candidates,
    name_matches_id,
    real_roots,
    recordingfile_candidates,
    resolve_under_roots,
)
from sipstack_agent.rules.mixmonitor import appdata_file

from .helpers import fixture_cels

EXTS = ("wav", "mp3", "gsm", "ogg", "WAV")
ROOTS = ("/var/spool/asterisk/monitor", "/srv/other")


def test_real_fixture_appdata_resolves_under_first_root() -> None:
    start = next(r for r in fixture_cels() if r.appname == "MixMonitor")
    assert start.appdata == "in-4155551000-4085551234-20261124-043920-1795495160.0.wav,b"
    assert mixmonitor_candidates(start.appdata, ROOTS, EXTS) == [
        "/var/spool/asterisk/monitor/in-4155551000-4085551234-20261124-043920-1795495160.0.wav"
    ]


@pytest.mark.parametrize(
    ("appdata", "expected"),
    [
        # extension-less: probe each extension in order, then the bare name;
        # the uniqueid's ".0" is not an extension
        (
            "2026/11/24/in-1795495160.0,b",
            [
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0.wav",
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0.mp3",
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0.gsm",
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0.ogg",
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0.WAV",
                "/var/spool/asterisk/monitor/2026/11/24/in-1795495160.0",
            ],
        ),
        ("/mnt/rec/call.WAV,b,/usr/bin/post.sh", ["/mnt/rec/call.WAV"]),
        ('"/mnt/rec/quoted.mp3",b', ["/mnt/rec/quoted.mp3"]),
        ("", []),
        ("  ,b", []),
    ],
)
def test_mixmonitor_candidates(appdata: str, expected: list[str]) -> None:
    assert mixmonitor_candidates(appdata, ROOTS, EXTS) == expected


def test_relative_appdata_without_recording_paths_gives_nothing() -> None:
    assert mixmonitor_candidates("rel.wav", (), EXTS) == []
    assert mixmonitor_candidates("/abs/x.wav", (), EXTS) == ["/abs/x.wav"]


def test_appdata_file_and_extension_detection() -> None:
    assert appdata_file("file.wav,b(1)v(2),cmd ^{x}") == "file.wav"
    assert has_known_extension("a.Wav", EXTS)
    assert not has_known_extension("in-1795495160.10", EXTS)
    assert not has_known_extension("noext", EXTS)


def test_freepbx_recordingfile_tries_dated_folders_first() -> None:
    cands = recordingfile_candidates(
        "in-4155551000-4085551234-20261124-043920-1795495160.0.wav",
        ROOTS,
        EXTS,
        [date(2026, 11, 24)],
    )
    assert cands == [
        "/var/spool/asterisk/monitor/2026/11/24/in-4155551000-4085551234-20261124-043920-1795495160.0.wav",
        "/var/spool/asterisk/monitor/in-4155551000-4085551234-20261124-043920-1795495160.0.wav",
    ]


def test_local_dates_use_the_pbx_timezone() -> None:
    # 04:39 UTC on the 24th is still the 23rd in Los Angeles
    at = datetime(2026, 11, 24, 4, 39, tzinfo=UTC)
    assert local_dates(at, "America/Los_Angeles")[0] == date(2026, 11, 23)
    assert local_dates(at, "UTC")[0] == date(2026, 11, 24)


@pytest.mark.parametrize(
    ("name", "call_id", "match"),
    [
        ("in-4155551000-4085551234-20261124-043920-1795495160.1.wav", "1795495160.1", True),
        ("in-4155551000-4085551234-20261124-043920-1795495160.10.wav", "1795495160.1", False),
        ("in-4155551000-4085551234-20261124-043920-1795495160.10.wav", "1795495160.10", True),
        ("in-4155551000-4085551234-20261124-043920-11795495160.1.wav", "1795495160.1", False),
        ("1795495160.1.wav", "1795495160.1", True),
        ("1795495160.1-in.wav", "1795495160.1", True),
        ("q-600-4085551234-20261124-043920-1795495160.1.WAV", "1795495160.1", True),
        ("out-100-pbx1-1795495160.2.wav", "pbx1-1795495160.2", True),
        ("out-100-xpbx1-1795495160.2.wav", "pbx1-1795495160.2", False),
        ("anything.wav", "", False),
    ],
)
def test_name_matches_id(name: str, call_id: str, match: bool) -> None:
    assert name_matches_id(name, call_id) is match


def test_ids_in_name() -> None:
    assert ids_in_name("in-4155551000-4085551234-20261124-043920-1795495160.0.wav") == [
        "1795495160.0"
    ]
    assert ids_in_name("exten-100-101-20261124-043920-1795495160.10.wav") == ["1795495160.10"]


def test_content_types() -> None:
    assert content_type_for("/x/a.wav") == "audio/wav"
    assert content_type_for("/x/a.WAV") == "audio/wav"
    assert content_type_for("/x/a.mp3") == "audio/mpeg"
    assert content_type_for("/x/a.gsm") == "audio/gsm"
    assert content_type_for("/x/a.ogg") == "audio/ogg"
    assert content_type_for("/x/a.bin") == "application/octet-stream"


# ---------------------------------------------------------------------------
# containment (real files and symlinks)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "monitor"
    (root / "2026" / "11" / "24").mkdir(parents=True)
    inside = root / "2026" / "11" / "24" / "in-1795495160.0.wav"
    inside.write_bytes(b"RIFF")
    secret_dir = tmp_path / "etc"
    secret_dir.mkdir()
    secret = secret_dir / "passwd.wav"
    secret.write_text("root:x:0:0")
    (root / "escape.wav").symlink_to(secret)
    (root / "linkdir").symlink_to(secret_dir, target_is_directory=True)
    (root / "alias.wav").symlink_to(inside)
    return {"root": root, "inside": inside, "secret": secret, "tmp": tmp_path}


def test_file_inside_tree_is_allowed(tree: dict[str, Path]) -> None:
    roots = real_roots([str(tree["root"])])
    r = resolve_under_roots(str(tree["inside"]), roots)
    assert r.ok and r.real_path == os.path.realpath(tree["inside"])


def test_traversal_is_refused(tree: dict[str, Path]) -> None:
    roots = real_roots([str(tree["root"])])
    rel = mixmonitor_candidates("../etc/passwd.wav,b", [str(tree["root"])], EXTS)
    r = resolve_under_roots(rel[0], roots)
    assert r.refused == REFUSED_TRAVERSAL and r.real_path is None and r.exists
    # a traversal that comes back inside the tree is fine
    back = str(tree["root"] / "2026" / ".." / "2026" / "11" / "24" / "in-1795495160.0.wav")
    assert resolve_under_roots(back, roots).ok


def test_symlinks_out_of_the_tree_are_refused(tree: dict[str, Path]) -> None:
    roots = real_roots([str(tree["root"])])
    assert resolve_under_roots(str(tree["root"] / "escape.wav"), roots).refused == REFUSED_SYMLINK
    via_dir = str(tree["root"] / "linkdir" / "passwd.wav")
    assert resolve_under_roots(via_dir, roots).refused == REFUSED_SYMLINK
    # a symlink that stays inside resolves to its target
    alias = resolve_under_roots(str(tree["root"] / "alias.wav"), roots)
    assert alias.ok and alias.real_path == os.path.realpath(tree["inside"])


def test_foreign_absolute_path_and_directories_are_refused(tree: dict[str, Path]) -> None:
    roots = real_roots([str(tree["root"])])
    assert resolve_under_roots(str(tree["secret"]), roots).refused == REFUSED_OUTSIDE
    assert resolve_under_roots(str(tree["root"] / "2026"), roots).refused == REFUSED_NOT_FILE
    assert resolve_under_roots(str(tree["root"]), roots).refused is not None


def test_missing_file_inside_is_not_refused(tree: dict[str, Path]) -> None:
    roots = real_roots([str(tree["root"])])
    r = resolve_under_roots(str(tree["root"] / "later.wav"), roots)
    assert r.refused is None and not r.exists and not r.ok


def test_first_existing_probes_in_order_and_reports_refusals(tree: dict[str, Path]) -> None:
    root = str(tree["root"])
    roots = real_roots([root])
    cands = mixmonitor_candidates("2026/11/24/in-1795495160.0,b", [root], EXTS)
    found, refused = first_existing(cands, roots)
    assert found is not None and found.path.endswith("in-1795495160.0.wav") and not refused
    found, refused = first_existing(mixmonitor_candidates("../etc/passwd,b", [root], EXTS), roots)
    assert found is None and refused and refused[0].refused == REFUSED_TRAVERSAL
