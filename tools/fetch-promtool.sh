#!/usr/bin/env bash
# Fetch the real promtool (Prometheus' rule checker and rule unit-test runner)
# into .tools/bin (git-ignored), for tests/charts/test_chart_alert_rules.py.
#
# It comes from Debian's `prometheus` package: downloaded with apt-get (no
# install, no service started) and unpacked with dpkg-deb; only
# usr/bin/promtool is kept.
#
# Idempotent: when .tools/bin/promtool already runs, nothing happens.
# Usage: tools/fetch-promtool.sh        (prints the path of the promtool binary)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.tools/bin"
PROMTOOL="${BIN}/promtool"

if "${PROMTOOL}" --version >/dev/null 2>&1; then
    echo "${PROMTOOL}"
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "fetch-promtool: needs apt-get and dpkg-deb (Debian/Ubuntu)" >&2
    exit 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cd "${work}"
if ! apt-get download -qq prometheus >/dev/null 2>&1; then
    as_root apt-get update -qq >/dev/null
    apt-get download -qq prometheus >/dev/null 2>&1
fi
dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool
mkdir -p "${BIN}"
install -m 0755 usr/bin/promtool "${PROMTOOL}"
"${PROMTOOL}" --version >/dev/null
echo "${PROMTOOL}"
