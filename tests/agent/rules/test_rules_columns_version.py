"""One CEL column list (model.py) and one version string (sipstack_agent/__init__.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import sipstack_agent
import sipstack_operator
from sipstack_agent.config import ConfigError, Identity, load_settings
from sipstack_agent.model import CEL_COLUMNS, CEL_REQUIRED_COLUMNS
from sipstack_agent.sources.cel_csv import resolve_columns

ROOT = Path(__file__).resolve().parents[3]
BASE = {"API_KEY": "sk_" + "k" * 32, "DB_TYPE": "postgresql", "DB_NAME": "a"}


def test_every_home_that_cannot_import_the_agent_says_the_same_version() -> None:
    version = sipstack_agent.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    chart = (ROOT / "charts/sipstack-connector/Chart.yaml").read_text()
    assert project["version"] == version
    assert re.search(r"^version: (\S+)$", chart, re.M)[1] == version  # type: ignore[index]
    assert re.search(r'^appVersion: "(\S+)"$', chart, re.M)[1] == version  # type: ignore[index]
    assert sipstack_operator.__version__ == version
    assert Identity().version == version
    assert load_settings(BASE).identity.version == version


@pytest.mark.parametrize(
    ("columns", "ok"),
    [
        (",".join(CEL_COLUMNS), True),
        ("id,eventtype,eventtime,uniqueid", True),
        ("eventtype,eventtime", False),
        ("eventtime,uniqueid,linkedid", False),
    ],
)
def test_config_and_csv_reader_agree_on_columns(columns: str, ok: bool) -> None:
    cols = columns.split(",")
    if ok:
        s = load_settings({**BASE, "CEL_CSV_COLUMNS": columns})
        assert not [w for w in s.warnings if w.startswith("CEL_CSV_COLUMNS")]
        assert resolve_columns(s.csv.columns) == tuple(cols)
        return
    with pytest.raises(ConfigError, match="CEL_CSV_COLUMNS"):
        load_settings({**BASE, "CEL_CSV_COLUMNS": columns})
    with pytest.raises(ValueError, match="CEL_CSV_COLUMNS"):
        resolve_columns(cols)
    assert set(CEL_REQUIRED_COLUMNS) - set(cols)
