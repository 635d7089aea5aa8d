#!/usr/bin/env bash
# Makes sure the real PostgreSQL and MariaDB servers the tests use are up on
# 127.0.0.1 (5432: trust auth, user postgres; 3306: root, empty password).
# Starts them when they are down; installs them from Debian packages on a bare
# machine. Exits non-zero when a server cannot be reached: under CI=true the
# test run must fail, not skip.
set -u

log() { printf 'ensure-databases: %s\n' "$*" >&2; }

pg_up() {
    command -v psql >/dev/null 2>&1 &&
        psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
}
my_up() {
    command -v mariadb >/dev/null 2>&1 &&
        mariadb -h 127.0.0.1 -P 3306 -uroot -e 'select 1' >/dev/null 2>&1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

install_pg() {
    log "installing PostgreSQL from Debian packages"
    as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    local ver hba
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba=/etc/postgresql/$ver/main/pg_hba.conf
    # Local test server only: trust on loopback, as the project's machines have it.
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    as_root sed -i -E 's/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
}
start_pg() {
    local ver
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$ver" ] || return 1
    log "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null ||
        as_root pg_ctlcluster "$ver" main start
}

install_my() {
    log "installing MariaDB from Debian packages"
    as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mariadb-server mariadb-client >/dev/null
}
start_my() {
    [ -x /usr/sbin/mariadbd ] || return 1
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 1 30); do
        [ -S /run/mysqld/mysqld.sock ] && break
        sleep 1
    done
    # A fresh Debian install gives root unix_socket auth only: allow the
    # loopback TCP login with an empty password that the tests use.
    if ! my_up && [ -S /run/mysqld/mysqld.sock ]; then
        as_root mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;" 2>/dev/null || true
    fi
}

# Named zones (SET time_zone = 'America/Los_Angeles', CONVERT_TZ) need MariaDB's
# time-zone tables; a fresh install has them empty. Loading them is additive.
my_tz_loaded() {
    local n
    n=$(mariadb -h 127.0.0.1 -P 3306 -uroot -Nse 'SELECT count(*) FROM mysql.time_zone_name' 2>/dev/null)
    [ "${n:-0}" -gt 0 ]
}
load_my_tz() {
    local tool
    tool=$(command -v mariadb-tzinfo-to-sql || command -v mysql_tzinfo_to_sql) || return 1
    log "loading MariaDB time zone tables from /usr/share/zoneinfo"
    "$tool" /usr/share/zoneinfo 2>/dev/null | mariadb -h 127.0.0.1 -P 3306 -uroot mysql
}

wait_for() {
    local check=$1 i
    for i in $(seq 1 30); do
        "$check" && return 0
        sleep 1
    done
    return 1
}

rc=0
if ! pg_up; then
    command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] || install_pg
    start_pg
    if wait_for pg_up; then log "PostgreSQL is up"; else log "PostgreSQL cannot be reached on 127.0.0.1:5432"; rc=1; fi
fi
if ! my_up; then
    [ -x /usr/sbin/mariadbd ] || install_my
    start_my
    if wait_for my_up; then log "MariaDB is up"; else log "MariaDB cannot be reached on 127.0.0.1:3306"; rc=1; fi
fi
if my_up && ! my_tz_loaded; then
    if load_my_tz && my_tz_loaded; then log "MariaDB time zone tables loaded"; else log "MariaDB time zone tables could not be loaded"; rc=1; fi
fi
exit $rc
