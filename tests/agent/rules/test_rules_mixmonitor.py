"""rules.mixmonitor: one reading of MixMonitor appdata for documents and uploads."""

from __future__ import annotations

import pytest
from sipstack_agent.calls.derive import recording_from_appdata
from sipstack_agent.recordings.paths import mixmonitor_candidates
from sipstack_agent.rules.mixmonitor import appdata_file, appdata_path

MON = "/srv/monitor"


@pytest.mark.parametrize(
    ("appdata", "file", "path"),
    [
        ("rec.wav,b(1)v(2),cmd ^{x}", "rec.wav", f"{MON}/rec.wav"),
        ('"rec.wav",b', "rec.wav", f"{MON}/rec.wav"),  # quotes stripped (decided)
        (' " 2026/11/24/rec.wav " ', "2026/11/24/rec.wav", f"{MON}/2026/11/24/rec.wav"),
        ('"/var/spool/asterisk/monitor/x.wav"', "/var/spool/asterisk/monitor/x.wav",
         "/var/spool/asterisk/monitor/x.wav"),  # absolute: as given
        ("", "", ""),
        (",b", "", ""),
        ('""', "", ""),
    ],
)  # fmt: skip
def test_appdata_table(appdata: str, file: str, path: str) -> None:
    assert appdata_file(appdata) == file
    assert appdata_path(appdata, MON) == path


def test_relative_name_without_a_monitor_dir_names_nothing() -> None:
    assert appdata_path("rec.wav", "") == ""
    assert appdata_path("/a/rec.wav", "") == "/a/rec.wav"


@pytest.mark.parametrize(
    "appdata", ['"rec-1.wav",b', "rec-1.wav", "/srv/monitor/sub/rec-1.wav", '"a b.wav"']
)
def test_document_path_is_the_first_upload_candidate(appdata: str) -> None:
    rec = recording_from_appdata(appdata, None, "1.1", MON)
    assert rec is not None
    assert rec.file_path == mixmonitor_candidates(appdata, [MON, "/else"], ["wav"])[0]
