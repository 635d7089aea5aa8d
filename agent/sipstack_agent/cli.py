"""`sipstack-agent`: run | check | healthcheck | status | dead-letters | resend | support-bundle |
receive | demo.

Exit codes: 0 fine; 1 a check failed / the demo lost calls / a runtime failure;
2 configuration errors (one line per problem on stderr, naming the variable,
never a secret, never a traceback). `status` is the exception: 0 healthy,
1 degraded, 2 down (admin/summary.py).

Configuration is read once from the environment and, when present, a .env
file (`--env-file PATH`, default `./.env` if it exists); the environment wins.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from . import __version__
from .config import ConfigError, Settings, load_settings
from .logs import setup_logging
from .statedir import StateDirError, become_run_as, run_as_warning

log = logging.getLogger("sipstack_agent.cli")

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2


# ---------------------------------------------------------------------------- config


def _env_file(arg: str | None) -> str | None:
    if arg:
        return arg
    return ".env" if os.path.isfile(".env") else None


def _load(args: argparse.Namespace, out: TextIO) -> Settings | None:
    try:
        return load_settings(env_file=_env_file(getattr(args, "env_file", None)))
    except ConfigError as e:
        print("configuration error" + ("s" if len(e.problems) > 1 else "") + ":", file=out)
        for p in e.problems:
            print(f"  {p}", file=out)
        return None


# ---------------------------------------------------------------------------- run


def _become_run_as(settings: Settings) -> bool:
    """PUID/PGID when started as root (statedir.become_run_as); False on failure."""
    if (why := become_run_as(settings.state_dir, settings.run_as)) is not None:
        log.error("%s", why)
        return False
    if (w := run_as_warning(settings.run_as)) is not None:
        log.warning("%s", w)
    return True


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args, sys.stderr)
    if settings is None:
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_format, log_numbers=settings.log_numbers)
    if not _become_run_as(settings):
        return EXIT_FAIL
    from .app import run_agent

    try:
        asyncio.run(run_agent(settings))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    except StateDirError as e:
        log.error("cannot start: %s", e)
        return EXIT_FAIL
    except OSError as e:
        log.error("cannot start: %s (check STATE_DIR and MONITORING_PORT)", e)
        return EXIT_FAIL
    except Exception as e:  # e.g. a state file written by a newer agent
        log.error("cannot start: %s: %s", type(e).__name__, e)
        return EXIT_FAIL
    return EXIT_OK


# ---------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    from .admin.check import config_errors, render, run_check

    try:
        settings = load_settings(env_file=_env_file(args.env_file))
    except ConfigError as e:
        sys.stdout.write(render(config_errors(e.problems), verdict=False))
        return EXIT_CONFIG
    setup_logging("ERROR" if not args.verbose else "DEBUG", "text")
    if not _become_run_as(settings):
        return EXIT_FAIL
    return run_check(settings, api=not args.no_api, as_json=args.json, out=sys.stdout)


# ---------------------------------------------------------------------------- healthcheck


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """The container's health check: GET /healthz where MONITORING_PORT says."""
    from .admin.healthcheck import run_healthcheck

    try:
        settings = load_settings(env_file=_env_file(args.env_file))
    except ConfigError:
        print("unhealthy: configuration errors (run sipstack-agent check)", file=sys.stderr)
        return EXIT_FAIL
    return run_healthcheck(
        settings.monitoring_host,
        settings.monitoring_port,
        timeout=args.timeout,
        out=sys.stdout,
        err=sys.stderr,
    )


# ---------------------------------------------------------------------------- receive


def cmd_receive(args: argparse.Namespace) -> int:
    from .receiver.command import receiver_key, run_receive

    setup_logging(args.log_level, "text")
    try:
        api_key = receiver_key(args.api_key_file, args.api_key, os.environ, sys.stderr)
    except OSError as e:
        print(f"receive: --api-key-file {args.api_key_file}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        run_receive(
            args.host, args.port, args.db, api_key, validate=not args.no_validate, out=sys.stdout
        )
    except OSError as e:
        print(f"receive: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# ---------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 healthy, 1 degraded, 2 down (admin/summary.py)."""
    from .admin.statuscmd import run_status, status_target

    settings = None
    if not (args.url and args.state_dir):
        settings = _load(args, sys.stderr)
        if settings is None:
            return EXIT_CONFIG
    target = status_target(settings, url=args.url, state_dir=args.state_dir)
    return run_status(target, as_json=args.json, out=sys.stdout, timeout=args.timeout)


# ---------------------------------------------------------------------------- dead-letters


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """list | show ID | retry [ID... | --reason R | --all] | drop (admin/deadletters.py)."""
    from .admin import deadletters

    settings = _load(args, sys.stderr)
    if settings is None:
        return EXIT_CONFIG
    return deadletters.run(
        args.action,
        args.state_dir or settings.state_dir,
        settings.identity.connector_id,
        ids=args.ids,
        reason=args.reason,
        every=args.all,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
    )


# ---------------------------------------------------------------------------- resend


def cmd_resend(args: argparse.Namespace) -> int:
    """Read a window again from the PBX and queue its calls as new revisions (admin/resend.py)."""
    from datetime import UTC, datetime

    from .admin import resend

    settings = _load(args, sys.stderr)
    if settings is None:
        return EXIT_CONFIG
    if args.state_dir:
        settings = dataclasses.replace(settings, state_dir=args.state_dir)
    try:
        since = resend.parse_time(args.since)
        until = resend.parse_time(args.until) if args.until else datetime.now(UTC)
        window = resend.Window(since, until, tuple(args.linkedid or ()), open_end=not args.until)
    except ValueError as e:
        print(f"resend: --since/--until: {e}", file=sys.stderr)
        return EXIT_CONFIG
    return resend.run(settings, window, out=sys.stdout, err=sys.stderr)


# ---------------------------------------------------------------------------- support-bundle


def cmd_support_bundle(args: argparse.Namespace) -> int:
    from .admin.bundle import run_bundle

    settings = None
    try:
        settings = load_settings(env_file=_env_file(args.env_file))
    except ConfigError:
        print("configuration errors: the bundle records them (check.txt)", file=sys.stderr)
    return run_bundle(
        settings,
        output=args.output,
        url=args.url,
        state_dir=args.state_dir,
        log_path=args.log,
        log_lines=args.log_lines,
        api_check=not args.no_api,
        out=sys.stderr,
    )


# ---------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(
        calls=args.calls,
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        keep=args.keep,
        workdir=args.workdir,
        timeout=args.timeout,
    )
    try:
        ok = asyncio.run(run_demo(opts))
    except KeyboardInterrupt:
        return 130
    return EXIT_OK if ok else EXIT_FAIL


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sipstack-agent",
        description="SIPSTACK Connector for Asterisk: ships every call to SIPSTACK.",
    )
    p.add_argument("--version", action="version", version=f"sipstack-agent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the agent (configured by environment / .env)")
    r.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="preflight: config, database, CEL feed, API, state dir")
    c.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    c.add_argument("--no-api", action="store_true", help="skip the API probe")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    c.set_defaults(func=cmd_check)

    h = sub.add_parser("healthcheck", help="container health: GET /healthz on MONITORING_PORT")
    h.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    h.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    h.set_defaults(func=cmd_healthcheck)

    rv = sub.add_parser("receive", help="run a local SIPSTACK API receiver (tests, demo)")
    rv.add_argument("--port", type=int, default=8080)
    rv.add_argument("--host", default="127.0.0.1")
    rv.add_argument("--db", required=True, help="SQLite file the documents are stored in")
    rv.add_argument(
        "--api-key-file",
        default=None,
        # RECEIVER_API_KEY: receiver.command.RECEIVER_KEY_ENV, not imported here (the
        # receiver package imports aiohttp, which would slow down every command)
        help="require the Bearer key in this file (or set RECEIVER_API_KEY; default: any)",
    )
    rv.add_argument("--api-key", default=None, help=argparse.SUPPRESS)  # visible in ps: warned
    rv.add_argument("--no-validate", action="store_true", help="store documents unvalidated")
    rv.add_argument("--log-level", default="INFO")
    rv.set_defaults(func=cmd_receive)

    st = sub.add_parser("status", help="summary of the agent; exit 0 healthy, 1 degraded, 2 down")
    st.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    st.add_argument("--url", help="the agent's /status (default: from MONITORING_HOST/PORT)")
    st.add_argument("--state-dir", help="STATE_DIR to read when the agent does not answer")
    st.add_argument("--json", action="store_true", help="print the summary as JSON")
    st.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    st.set_defaults(func=cmd_status)

    dl = sub.add_parser("dead-letters", help="list | show ID | retry | drop refused documents")
    dl.add_argument("action", choices=("list", "show", "retry", "drop"))
    dl.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead letter ids")
    dl.add_argument("--reason", help="only those with this reason (e.g. http_400)")
    dl.add_argument("--all", action="store_true", help="retry / drop every dead letter")
    dl.add_argument("--json", action="store_true", help="list as JSON")
    dl.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    dl.add_argument("--state-dir", help="STATE_DIR (default: from the configuration)")
    dl.set_defaults(func=cmd_dead_letters)

    rs = sub.add_parser("resend", help="read a time window again and ship its calls again")
    rs.add_argument("--since", required=True, help="ISO-8601 start with offset (…Z, …+02:00)")
    rs.add_argument("--until", help="ISO-8601 end with offset (default: now)")
    rs.add_argument("--linkedid", action="append", help="only this call (repeatable)")
    rs.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    rs.add_argument("--state-dir", help="STATE_DIR (default: from the configuration)")
    rs.set_defaults(func=cmd_resend)

    sb = sub.add_parser(
        "support-bundle", help="one tar.gz for support (secrets and numbers masked)"
    )
    sb.add_argument("--env-file", help="dotenv file (default ./.env if present)")
    sb.add_argument(
        "-o",
        "--output",
        help="archive path ('-' = stdout; default: ./sipstack-support-<time>.tar.gz)",
    )
    sb.add_argument("--log", help="the agent's log file to take the last lines from ('-' = stdin)")
    sb.add_argument("--log-lines", type=int, default=2000, help="last lines kept (default 2000)")
    sb.add_argument("--url", help="the agent's /status (default: from MONITORING_HOST/PORT)")
    sb.add_argument("--state-dir", help="STATE_DIR (default: from the configuration)")
    sb.add_argument("--no-api", action="store_true", help="skip the API probe of the checks")
    sb.set_defaults(func=cmd_support_bundle)

    d = sub.add_parser("demo", help="simulated PBX + receiver + the real agent, end to end")
    d.add_argument("--calls", type=int, default=200, help="calls to simulate (default 200)")
    d.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    d.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of traffic (overrides --calls: calls = rate x duration)",
    )
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--timeout", type=float, default=60.0, help="wait this long for stragglers")
    d.add_argument("--workdir", default=None, help="directory to use (default: a temp dir)")
    d.add_argument("--keep", action="store_true", help="keep the work directory")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
