#!/bin/bash
# tools/stack.sh — the project's own private services for `make demo` / `make test`.
#
#   tools/stack.sh install     apt packages that are missing + the venv (.venv, from /usr/bin/python3)
#   tools/stack.sh db-start    private MariaDB under $VC_VAR/db (unix socket only; never :3306,
#                              never the system service), database + user, writes $VC_VAR/db.env
#   tools/stack.sh db-stop     stop it, by its pid file
#   tools/stack.sh status
#
# Everything lives under $VC_VAR (default: <checkout>/var). Re-runnable: what is already there or
# already running is kept. Processes are only ever stopped by the pid files written here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
VENV=${VC_VENV:-$ROOT/.venv}
DB=$VAR/db
SOCK=$DB/mysqld.sock
# Packages VC needs on the frontend. mariadb-server-core (not mariadb-server): the full package
# would initialise and, without policy-rc.d, start the *system* mariadbd on :3306.
# galera-4: the Galera provider of tools/galera.sh (two frontends; its SST script is its own)
# openvswitch-switch, ethtool, nftables (tools/ovs.sh) and mmdebstrap (tools/make-image.sh) are
# installed here, up front: once the tests' networks exist, a package mirror whose address falls
# in one of them is out of reach (seen here: the mirror was 203.0.113.80)
APT_PKGS="mariadb-server-core galera-4 mariadb-client python3-venv python3-dev gcc pkg-config libvirt-dev
          libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          dnsmasq-base iptables busybox-static tzdata
          apache2 libapache2-mod-wsgi-py3 libapache2-mod-authnz-external pwauth chromium
          openvswitch-switch ethtool nftables mmdebstrap genisoimage"

install_packages() { apt_ensure $APT_PKGS; }

install_venv() {
  # /usr/bin/python3, not a pyenv one: the CGI pages run as www-data, which cannot reach /root
  if [ ! -x "$VENV/bin/python3" ]; then
    log "python venv $VENV"
    /usr/bin/python3 -m venv "$VENV"
  fi
  local stamp=$VENV/.vc-installed
  if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
    log "pip install -e .[test]"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" >&2
    touch "$stamp"
  fi
}

db_start() {
  mkdir -p "$DB"
  if pid_alive "$DB/mysqld.pid"; then
    log "MariaDB already running (pid $(cat "$DB/mysqld.pid"))"
  else
    if [ ! -d "$DB/data/mysql" ]; then
      log "initialise MariaDB datadir $DB/data"
      rm -rf "$DB/data"
      mariadb-install-db --no-defaults --datadir="$DB/data" --user=root \
        --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
        >"$DB/install.log" 2>&1 || { cat "$DB/install.log" >&2; die "mariadb-install-db failed"; }
    fi
    log "start MariaDB (socket $SOCK, no TCP)"
    rm -f "$SOCK"
    # --no-defaults keeps /etc/mysql out; --skip-networking: the socket is the only way in
    setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DB/data" \
      --socket="$SOCK" --pid-file="$DB/mysqld.pid" --log-error="$DB/mysqld.err" \
      --skip-networking --skip-name-resolve --innodb-buffer-pool-size=128M \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
      --default-time-zone=+00:00 --max-connections=200 \
      </dev/null >"$DB/mysqld.out" 2>&1 &
    wait_for 60 mariadb-admin --no-defaults -S "$SOCK" ping \
      || { tail -20 "$DB/mysqld.err" >&2; die "MariaDB did not start (log $DB/mysqld.err)"; }
    wait_for 10 test -s "$DB/mysqld.pid"
  fi
  # the application user; its password is made once and kept in $VAR/db.env
  if [ ! -s "$VAR/db.env" ]; then
    umask 077
    printf 'VC_DB_SOCKET=%s\nVC_DB_USER=vc\nVC_DB_PASSWORD=%s\nVC_DB_NAME=vcluster\n' \
      "$SOCK" "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$VAR/db.env"
  fi
  # shellcheck disable=SC1091
  . "$VAR/db.env"
  mariadb --no-defaults -S "$SOCK" -u root <<SQL
CREATE DATABASE IF NOT EXISTS \`$VC_DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$VC_DB_USER'@'localhost' IDENTIFIED BY '$VC_DB_PASSWORD';
ALTER USER '$VC_DB_USER'@'localhost' IDENTIFIED BY '$VC_DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$VC_DB_NAME\`.* TO '$VC_DB_USER'@'localhost';
-- the test suite makes one throw-away database per run, named vctest_*
GRANT ALL PRIVILEGES ON \`vctest\\_%\`.* TO '$VC_DB_USER'@'localhost';
SQL
}

db_stop() {
  local pf=$DB/mysqld.pid
  if ! pid_alive "$pf"; then log "MariaDB not running"; rm -f "$pf"; return 0; fi
  local pid; pid=$(cat "$pf")
  mariadb-admin --no-defaults -S "$SOCK" -u root shutdown >/dev/null 2>&1 || kill -TERM "$pid"
  local i; for i in $(seq 400); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then log "MariaDB pid $pid still alive after 20 s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$pf"
  log "MariaDB stopped (pid $pid)"
}

case "${1:-}" in
  install) install_packages; install_venv ;;
  db-start) db_start ;;
  db-stop) db_stop ;;
  status)
    if pid_alive "$DB/mysqld.pid"; then echo "mariadb: running (pid $(cat "$DB/mysqld.pid"), socket $SOCK)"
    else echo "mariadb: stopped"; fi ;;
  *) echo "usage: $0 install|db-start|db-stop|status" >&2; exit 2 ;;
esac
