"""`sipstack-agent receive`: where the receiver's key comes from, and one receiver
run until SIGTERM / SIGINT (tests, demo, bench run it as its own process)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from sipstack_agent.receiver.server import Receiver

RECEIVER_KEY_ENV = "RECEIVER_API_KEY"


def receiver_key(
    key_file: str | None, flag: str | None, environ: Mapping[str, str], err: TextIO
) -> str | None:
    """--api-key-file, else $RECEIVER_API_KEY, else the old --api-key (visible in `ps`:
    warned on `err`); None: any key is accepted. OSError when the file cannot be read."""
    if key_file:
        with open(key_file, encoding="utf-8") as fh:
            return fh.read().strip() or None
    if environ.get(RECEIVER_KEY_ENV, "").strip():
        return environ[RECEIVER_KEY_ENV].strip()
    if flag:
        print(
            f"receive: --api-key shows the key to every user of this machine (ps); "
            f"use {RECEIVER_KEY_ENV} or --api-key-file",
            file=err,
        )
    return flag or None


async def serve(
    host: str,
    port: int,
    db_path: str | Path | None,
    api_key: str | None = None,
    stop: asyncio.Event | None = None,
    *,
    validate: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run a receiver until `stop` is set (forever without one)."""
    receiver = Receiver(db_path, api_key=api_key, validate=validate)
    url = await receiver.start(host, port)
    if on_ready is not None:
        on_ready(url)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await receiver.stop()


def run_receive(
    host: str,
    port: int,
    db_path: str,
    api_key: str | None,
    *,
    validate: bool,
    out: TextIO,
) -> None:
    """Serve until SIGTERM or SIGINT; `receiver listening on URL` on `out` once it listens.
    OSError when it cannot listen on host:port."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            print(f"receiver listening on {url}", file=out, flush=True)

        await serve(host, port, db_path, api_key, stop, validate=validate, on_ready=ready)

    asyncio.run(main())
