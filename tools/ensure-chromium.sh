#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (Debian packages `chromium` and
# `chromium-driver`) are installed for the browser tests of the status pages
# (tests/agent/web/). Installs them when missing (apt-get update once, then
# apt-get install). Exits non-zero, loudly, when they cannot be installed: the
# browser tests must fail, never skip.
set -u

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have; then
    exit 0
fi
log "installing chromium and chromium-driver from Debian packages"
if ! as_root apt-get update -qq; then
    log "FAILED: apt-get update (needs root or sudo and the Debian mirrors)"
    exit 1
fi
if ! DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null; then
    log "FAILED: apt-get install chromium chromium-driver"
    exit 1
fi
if ! have; then
    log "FAILED: chromium or chromedriver still not on PATH after the install"
    exit 1
fi
log "$(chromium --version 2>/dev/null) / $(chromedriver --version 2>/dev/null | head -n 1)"
