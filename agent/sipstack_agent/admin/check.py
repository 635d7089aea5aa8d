"""`sipstack-agent check` (and the bundle's check.txt): every preflight check, run once.

Configuration, PBX database (sources/sql/check.py), CEL feed (CSV or AMI), API
and state dir, each a list of `rules.checks.CheckResult`, and their text (`render`:
one line each, then the verdict; or JSON). Where FAIL ends and WARN begins is
decided in rules/checks.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO

from .. import __version__
from ..config import CDR_ONLY_WARNING, DatabaseSettings, Settings, api_key_format
from ..rules.checks import CheckResult
from ..rules.redact import redact_key
from ..state.room import MB, Room
from ..statedir import problem as state_dir_problem
from ..statedir import run_as_warning
from ..zones import PbxZone

__all__ = [
    "check_api",
    "check_cel_feed",
    "check_database",
    "check_state_dir",
    "config_errors",
    "render",
    "run_check",
    "run_checks",
]


async def check_state_dir(path: str, min_free_mb: int | None = None) -> CheckResult:
    """STATE_DIR writable, and its free space against the room the agent keeps for
    delivering (STATE_MIN_FREE_MB, state/room.py)."""
    why = state_dir_problem(path)
    if why is not None:
        return CheckResult.fail("state dir", why)
    try:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        kept = Room(path, min_free_mb).min_free(st.f_blocks * st.f_frsize)
        free_mb, kept_mb = free / MB, kept / MB
        if free < kept:
            return CheckResult.warn(
                "state dir",
                f"{path} writable but only {free_mb:.0f} MB free, below the {kept_mb:.0f} MB "
                "the agent keeps for delivering: it stores no new rows until there is more",
                "give STATE_DIR more space (the outbox grows while the API is unreachable)",
            )
        if free_mb < 100:
            return CheckResult.warn(
                "state dir",
                f"{path} writable but only {free_mb:.0f} MB free",
                "give STATE_DIR more space (the outbox grows while the API is unreachable)",
            )
        return CheckResult.ok(
            "state dir",
            f"{path} writable ({free_mb:.0f} MB free, {kept_mb:.0f} MB of it kept for delivering)",
        )
    except OSError as e:
        return CheckResult.fail(
            "state dir",
            f"{path} not writable ({e.strerror or e})",
            "set STATE_DIR to a writable directory (a persistent volume in containers)",
        )


def _api_key_format(key: str) -> CheckResult:
    fmt = api_key_format(key)
    if fmt == "unknown":
        return CheckResult.warn(
            "api key format",
            f"{redact_key(key)} is not sk_ + 32 characters nor a tiered sk_t<0-4>_ key",
            "copy the key again from the SIPSTACK portal",
        )
    return CheckResult.ok("api key format", f"{redact_key(key)} ({fmt})")


def _api_answer(url: str, key: str, st: int) -> CheckResult:
    name = "api"
    if st in (401, 403):
        return CheckResult.fail(
            name,
            f"{url} rejected the key {redact_key(key)} (HTTP {st})",
            "set API_KEY (or API_KEY_FILE) to a valid key for this REGION",
        )
    if st in (400, 422):
        return CheckResult.ok(
            name, f"{url} reachable, key accepted (empty probe refused: HTTP {st})"
        )
    if 200 <= st < 300:
        return CheckResult.ok(name, f"{url} reachable, key accepted (HTTP {st})")
    if st in (404, 405):
        return CheckResult.fail(
            name,
            f"{url} answered HTTP {st}: not the calls endpoint",
            "fix API_URL/API_ENDPOINT (…/v1/mqs/connectors/asterisk/calls) or REGION",
        )
    if st in (408, 425, 429) or st >= 500:
        return CheckResult.warn(
            name,
            f"{url} reachable but answered HTTP {st}",
            "the agent retries; if this persists contact SIPSTACK support",
        )
    return CheckResult.warn(name, f"{url} answered HTTP {st}")


async def check_api(settings: Settings, timeout: float = 10.0) -> list[CheckResult]:
    """Reachability and key: POST an empty JSON object `{}` to the calls URL.

    The probe carries no call data; a correct API refuses it with 400/422 after
    authenticating, so: 401/403 = key rejected (FAIL); 400/422 = reachable and key
    accepted (OK); 2xx = accepted (OK, unusual); 404/405 = wrong URL (FAIL); 408,
    429, 5xx = reachable but unhealthy (WARN); no answer = unreachable (FAIL)."""
    from ..shipping import AiohttpTransport, TransportError, build_headers

    api = settings.api
    out = [_api_key_format(api.api_key)]
    transport = AiohttpTransport(timeout=timeout, limit=1, user_agent_version=__version__)
    headers = build_headers(
        api.api_key,
        version=__version__,
        idempotency_key=f"{settings.identity.connector_id}:check:{int(time.time())}",
    )
    try:
        resp = await transport.post_json(api.url, b"{}", headers)
    except TransportError as e:
        out.append(
            CheckResult.fail(
                "api",
                f"{api.url} unreachable ({e})",
                "check DNS/firewall/proxy to the API host, REGION or API_URL",
            )
        )
        return out
    except Exception as e:  # defensive: never a traceback from check
        out.append(CheckResult.fail("api", f"{api.url}: {type(e).__name__}: {e}"))
        return out
    finally:
        with contextlib.suppress(Exception):
            await transport.close()
    out.append(_api_answer(api.url, api.api_key, resp.status))
    return out


async def check_database(settings: Settings) -> list[CheckResult]:
    """Reachable, tables/columns, read-only, indexes, LINKEDID_END (sources/sql/check.py)."""
    from ..sources.sql.check import inspect

    try:
        return await inspect(
            settings.database,
            cel=settings.cel_mode == "db",
            max_age=settings.calls.max_age,
            settings=settings,
        )
    except Exception as e:
        db = settings.database
        return [
            CheckResult.fail(
                "database",
                f"{db.type} {db.host}:{db.port or 'default'}/{db.name}: {type(e).__name__}: {e}",
                "check DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME and that the server is up",
            )
        ]


async def _resolve_zone(database: DatabaseSettings, database_enabled: bool) -> PbxZone:
    """The zone for a one-off check: asks the database when needed."""
    from ..sources.sql.drivers import connect
    from ..sources.timezone import ZoneResolver

    resolver = ZoneResolver(database, database_enabled=database_enabled)
    if resolver.current is not None:
        return resolver.current
    db = await connect(database, 1)
    try:
        return await resolver.resolve(db, database.type)
    finally:
        await db.close()


async def check_cel_feed(settings: Settings) -> list[CheckResult]:
    """CEL_MODE=csv or ami: the PBX zone (when no database names it) and the feed."""
    if settings.cel_mode == "none":
        return [CheckResult.warn("cel", CDR_ONLY_WARNING)]
    if settings.cel_mode not in ("csv", "ami"):
        return []
    try:
        from ..sources.sql.check import zone_line

        zone = await _resolve_zone(settings.database, settings.database_enabled)
        lines = [] if settings.database_enabled else [zone_line(zone)]
        if settings.cel_mode == "csv":
            from ..sources.cel_csv import check_csv

            return lines + await check_csv(settings.csv, zone.name, found=zone.found)
        from ..sources.cel_ami import check_ami

        return lines + await check_ami(settings.ami, zone.name)
    except Exception as e:
        return [CheckResult.fail(f"cel {settings.cel_mode}", f"{type(e).__name__}: {e}")]


async def run_checks(settings: Settings, *, api: bool = True) -> list[CheckResult]:
    lines = [CheckResult.ok("config", "all variables valid")]
    lines += [CheckResult.warn("config", w) for w in settings.warnings]
    if (run_as := run_as_warning(settings.run_as)) is not None:
        lines.append(CheckResult.warn("config", run_as))
    tasks: list[Coroutine[Any, Any, list[CheckResult]]] = []
    if settings.database_enabled:
        tasks.append(check_database(settings))
    tasks.append(check_cel_feed(settings))
    if api:
        tasks.append(check_api(settings))
    for found in await asyncio.gather(*tasks):
        lines.extend(found)
    lines.append(await check_state_dir(settings.state_dir, settings.state_min_free_mb))
    return lines


def config_errors(problems: Sequence[str]) -> list[CheckResult]:
    """A configuration that did not load, as check lines (one per problem)."""
    return [CheckResult.fail("config", p, "fix the variable named") for p in problems]


def render(lines: Sequence[CheckResult], *, as_json: bool = False, verdict: bool = True) -> str:
    """What `check` prints (and the bundle's check.txt): a line per result, then
    `N check(s) failed` / `all checks passed`; with `as_json` a JSON list instead."""
    if as_json:
        return json.dumps([dataclasses.asdict(ln) for ln in lines], indent=2) + "\n"
    text = "".join(ln.render() + "\n" for ln in lines)
    if verdict:
        failed = sum(1 for ln in lines if ln.failed)
        text += f"{failed} check(s) failed\n" if failed else "all checks passed\n"
    return text


def run_check(settings: Settings, *, api: bool, as_json: bool, out: TextIO) -> int:
    """`sipstack-agent check`: 0 when no check failed, 1 otherwise."""
    lines = asyncio.run(run_checks(settings, api=api))
    out.write(render(lines, as_json=as_json))
    return 1 if any(ln.failed for ln in lines) else 0
