"""DB_SSLMODE / DB_SSLROOTCERT: libpq's six modes, for asyncpg and aiomysql alike.

| mode        | TLS tried | plaintext fallback | chain verified      | host name checked |
|-------------|-----------|--------------------|---------------------|-------------------|
| disable     | no        | -                  | -                   | -                 |
| allow       | yes (1)   | yes                | no                  | no                |
| prefer      | yes       | yes                | no                  | no                |
| require     | yes       | no                 | only with a root CA | no                |
| verify-ca   | yes       | no                 | yes                 | no                |
| verify-full | yes       | no                 | yes                 | yes               |

The default (DB_SSLMODE unset) is libpq's: prefer. (1) PostgreSQL `allow` tries
plaintext first and TLS when the server insists (asyncpg does this itself);
MySQL negotiates TLS inside its handshake, so `allow` there means `prefer`.

A required mode is enforced on every connection the agent opens: asyncpg
refuses by itself when it is given an SSLContext; aiomysql would silently go on
in clear text when the server offers no TLS, so `guard_mysql()` makes each
MySQL connection refuse before it sends the login (a hostile server could
otherwise ask for the password in clear text with mysql_clear_password).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from ..config import DatabaseSettings

__all__ = ["DEFAULT_MODE", "TlsPlan", "guard_mysql", "plan"]

DEFAULT_MODE = "prefer"
_REQUIRED = frozenset({"require", "verify-ca", "verify-full"})


class _Context(ssl.SSLContext):
    """An SSLContext that remembers whether a connection without TLS must be refused."""

    tls_required: bool = False
    sslmode: str = ""


@dataclass(frozen=True)
class TlsPlan:
    mode: str  # the effective libpq mode
    context: ssl.SSLContext | None  # None: TLS is never tried
    required: bool  # no plaintext fallback
    verify_chain: bool
    verify_host: bool
    defaulted: bool = False  # DB_SSLMODE unset

    def asyncpg_ssl(self) -> ssl.SSLContext | str | None:
        """asyncpg's `ssl=`: its own mode names where it falls back, else our context
        (None when DB_SSLMODE is unset: asyncpg's default is libpq's, prefer)."""
        if self.defaulted:
            return None
        if self.mode in ("disable", "allow", "prefer"):
            return self.mode
        assert self.context is not None
        return self.context


def plan(db: DatabaseSettings) -> TlsPlan:
    """The TLS decision for one PBX database (see the module table)."""
    mode = (db.sslmode or "").lower() or DEFAULT_MODE
    if mode == "disable":
        return TlsPlan(mode, None, False, False, False)
    required = mode in _REQUIRED
    chain = mode in ("verify-ca", "verify-full") or (mode == "require" and bool(db.sslrootcert))
    host = mode == "verify-full"
    ctx = _Context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if chain:
        if db.sslrootcert:
            ctx.load_verify_locations(cafile=db.sslrootcert)
        else:
            ctx.load_default_certs()
    ctx.check_hostname = host
    ctx.verify_mode = ssl.CERT_REQUIRED if chain else ssl.CERT_NONE
    ctx.tls_required = required
    ctx.sslmode = mode
    return TlsPlan(mode, ctx, required, chain, host, defaulted=not db.sslmode)


_guarded = False


def guard_mysql() -> None:
    """Make every aiomysql connection refuse a server without TLS when the mode requires it.

    aiomysql's pool opens connections with the module's own `connect()`, so the
    check lives on the connection's authentication step (before any credential
    leaves the agent), keyed on the context `plan()` made."""
    global _guarded
    if _guarded:
        return
    from aiomysql.connection import Connection
    from pymysql.constants import CLIENT
    from pymysql.err import OperationalError

    original = Connection._request_authentication

    async def request_authentication(self: Connection) -> None:
        ctx = self._ssl_context
        if getattr(ctx, "tls_required", False) and not self.server_capabilities & CLIENT.SSL:
            self.close()
            raise OperationalError(
                2026,
                f"MySQL server at {self._host}:{self._port} offers no TLS but "
                f"DB_SSLMODE={getattr(ctx, 'sslmode', '')}: refusing to log in in clear text",
            )
        await original(self)

    Connection._request_authentication = request_authentication
    _guarded = True
