"""`sipstack-agent check` names the PBX zone and how it was found, and fails with the
fix when the rows disagree with the clock (real PostgreSQL, the real command)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sipstack_agent.model import CelRow

from .test_cli import child_env, run_cli


def check_env(db: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "API_KEY": "sk_" + "t" * 32,
        "DB_TYPE": db.type,
        "DB_HOST": db.host,
        "DB_PORT": str(db.port),
        "DB_USER": db.user,
        "DB_PASSWORD": db.password,
        "DB_NAME": db.name,
        "DB_TABLE_CDR": db.table_cdr,
        "DB_TABLE_CEL": db.table_cel,
        "CEL_MODE": "db",
        "STATE_DIR": str(tmp_path / "state"),
    }
    env.update(extra)
    return child_env(**env)


def rows_written_now(n: int) -> list[CelRow]:
    t = datetime.now(UTC)
    return [
        CelRow(eventtype="CHAN_START", eventtime=t - timedelta(seconds=n - i),
               uniqueid=f"1796000000.{i}", linkedid=f"1796000000.{i}", channame=f"SIP/{i}")
        for i in range(n)
    ]  # fmt: skip


async def test_check_fails_on_a_tokyo_pbx_read_as_utc_and_passes_once_set(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="Asia/Tokyo")  # PBX writes Tokyo time
    await pbx.writer.insert_cel(rows_written_now(3))
    db = replace(pbx.settings, timezone="auto")
    rc, out = await run_cli("check", "--no-api", env=check_env(db, tmp_path), cwd=tmp_path)
    assert rc == 1, out
    assert re.search(
        r"^OK   pbx time zone: (Etc/)?UTC \(database: PostgreSQL TimeZone\)$", out, re.M
    )
    (line,) = [ln for ln in out.splitlines() if ln.startswith("FAIL cel times:")]
    assert "9.0 h in the future" in line and "-> set DB_TIMEZONE=Asia/Tokyo (or" in line

    env = check_env(db, tmp_path, DB_TIMEZONE="Asia/Tokyo")
    rc, out = await run_cli("check", "--no-api", env=env, cwd=tmp_path)
    assert "OK   pbx time zone: Asia/Tokyo (configured: DB_TIMEZONE)" in out
    assert "FAIL cel times" not in out and "OK   cel times:" in out, out
