#!/bin/bash
# tools/galera.sh — a 3-node MariaDB Galera cluster on loopback: the test bed for two frontends.
#
#   tools/galera.sh up [--fresh]   start the three nodes (node 1 bootstraps the cluster); --fresh
#                                  (or no datadirs yet) starts from an empty cluster made from a
#                                  template datadir (database vcluster + user vc, made once)
#   tools/galera.sh down           stop the three nodes, by their pid files only
#   tools/galera.sh status         per node: pid, wsrep state, cluster size
#   tools/galera.sh kill N         SIGKILL node N (by its pid file): a node failure
#   tools/galera.sh start N        (re)start node N into the running cluster: after a SIGKILL its
#                                  position is recovered (--wsrep-recover) and it rejoins by IST
#   tools/galera.sh env            print the connection settings (galera.env)
#
# Files under $VC_GALERA_DIR (default $VC_VAR/galera): template/ (the datadir copied to the
# nodes), nN/{data,my.cnf,mysqld.pid,mysqld.sock,mysqld.err}, galera.env. Nodes listen on
# 127.0.0.1 only: SQL $VC_GALERA_PORT+N-1 (default 3307..3309); group communication
# $VC_GALERA_GPORT+100*(N-1) (default 4567/4667/4767), IST on that +1, SST address +2.
# State transfers: the nodes start from copies of one datadir, so a joiner never needs a full SST,
# only IST (the write sets it lacks, from a donor's gcache: the configuration changes of a fresh
# cluster, or what a node missed while it was down). IST still runs an SST script on both sides
# to hand over the position: ours, wsrep_sst_vcist (written to $VC_GALERA_DIR/bin; no rsync, no
# mariadb-server package), does only that and refuses a full SST. ("skip" hangs the joiner in
# "receiving State Transfer" when it also needs IST.) Processes are only ever stopped by our
# pid files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
G=${VC_GALERA_DIR:-$VAR/galera}
PORT=${VC_GALERA_PORT:-3307}
GPORT=${VC_GALERA_GPORT:-4567}
NODES="1 2 3"
PROVIDER=/usr/lib/galera/libgalera_smm.so
MARIADBD=/usr/sbin/mariadbd

sql_port() { echo $(( PORT + $1 - 1 )); }
g_port() { echo $(( GPORT + 100 * ($1 - 1) )); }
nd() { echo "$G/n$1"; }
sock() { echo "$G/n$1/mysqld.sock"; }
pidf() { echo "$G/n$1/mysqld.pid"; }
cluster_address() {
  local n out=""
  for n in $NODES; do out="$out${out:+,}127.0.0.1:$(g_port "$n")"; done
  echo "gcomm://$out"
}
q() {  # q N SQL: one statement as root over node N's socket
  mariadb --no-defaults -S "$(sock "$1")" -u root -N -B -e "$2"
}
wsrep_state() { q "$1" "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null | cut -f2; }
synced() { [ "$(wsrep_state "$1")" = Synced ]; }

write_cnf() {  # write_cnf N
  local n=$1 d; d=$(nd "$n"); local gp; gp=$(g_port "$n")
  cat >"$d/my.cnf" <<CNF
# written by tools/galera.sh (node $n of 3)
[mariadbd]
user = root
datadir = $d/data
socket = $d/mysqld.sock
pid-file = $d/mysqld.pid
log-error = $d/mysqld.err
port = $(sql_port "$n")
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
default-time-zone = +00:00
max-connections = 200
innodb-buffer-pool-size = 64M
# what Galera needs
binlog-format = ROW
default-storage-engine = InnoDB
innodb-autoinc-lock-mode = 2
wsrep-on = ON
wsrep-provider = $PROVIDER
wsrep-cluster-name = vc_galera
wsrep-cluster-address = $(cluster_address)
wsrep-node-name = n$n
wsrep-node-address = 127.0.0.1:$gp
wsrep-node-incoming-address = 127.0.0.1:$(sql_port "$n")
# listen on loopback only (else gcomm binds 0.0.0.0); the default evs timeouts are kept
wsrep-provider-options = "gmcast.listen_addr=tcp://127.0.0.1:$gp;ist.recv_addr=127.0.0.1:$((gp + 1));gcache.size=64M"
wsrep-sst-receive-address = 127.0.0.1:$((gp + 2))
wsrep-sst-method = vcist
CNF
}

# the SST script of wsrep-sst-method = vcist (see the top): IST only
write_sst_script() {
  mkdir -p "$G/bin"
  cat >"$G/bin/wsrep_sst_vcist.tmp" <<'PY'
#!/usr/bin/python3
"""wsrep_sst_vcist (tools/galera.sh): the SST script of an IST-only Galera test bed.

Joiner: listen on --address, print "ready ADDR/vcist", receive the donor's position, print it.
Donor: only with --bypass (IST carries the data): send the position, print "done POSITION".
A full SST (no --bypass) is refused: the nodes start from copies of one datadir."""
import os
import socket
import sys
import time

args, i, argv = {}, 0, sys.argv[1:]
while i < len(argv):
    a = argv[i]
    if a == "--bypass":
        args["bypass"] = True
        i += 1
    elif a == "--mysqld-args":
        break
    else:
        args[a.lstrip("-")] = argv[i + 1] if i + 1 < len(argv) else ""
        i += 2


def log(msg):
    sys.stderr.write("WSREP_SST: [INFO] vcist %s: %s\n" % (args.get("role"), msg))
    sys.stderr.flush()


def hostport(addr):
    addr = addr.split("/", 1)[0]
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


role = args.get("role")
if role == "joiner":
    host, port = hostport(args["address"])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    srv.settimeout(1.0)
    print("ready %s:%d/vcist" % (host, port), flush=True)
    parent, end = int(args.get("parent") or 0), time.monotonic() + 600
    while True:
        try:
            conn, _ = srv.accept()
            break
        except socket.timeout:
            if time.monotonic() > end:
                log("no donor within 600 s")
                sys.exit(32)
            if parent:
                try:
                    os.kill(parent, 0)
                except OSError:
                    log("the server exited")
                    sys.exit(32)
    conn.settimeout(60)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    words = data.decode().split()
    if "bypass" not in words or not words:
        log("the donor sent a full state snapshot request: not supported (IST only)")
        sys.exit(32)
    log("position %s" % " ".join(w for w in words if w != "bypass"))
    print(" ".join(w for w in words if w != "bypass"), flush=True)
    sys.exit(0)
elif role == "donor":
    if not args.get("bypass"):
        log("a full SST was asked for: not supported (the nodes start from one datadir; "
            "'tools/galera.sh up --fresh' rebuilds the cluster)")
        sys.exit(22)
    state = "%s %s" % (args.get("gtid", ""), args.get("gtid-domain-id", "0"))
    with socket.create_connection(hostport(args["address"]), timeout=60) as c:
        c.sendall(("%s bypass\n" % state).encode())
    print("done %s" % state, flush=True)
    sys.exit(0)
log("unknown role %r" % role)
sys.exit(22)
PY
  chmod 755 "$G/bin/wsrep_sst_vcist.tmp"
  mv "$G/bin/wsrep_sst_vcist.tmp" "$G/bin/wsrep_sst_vcist"
}

# start_node N [extra mariadbd args...]: start it (in the background), wait until it is Synced
start_node() {
  local n=$1; shift
  local d; d=$(nd "$n")
  if pid_alive "$(pidf "$n")"; then log "node $n already running (pid $(cat "$(pidf "$n")"))"; return 0; fi
  for p in "$(sql_port "$n")" "$(g_port "$n")"; do
    port_open "$p" && die "port $p is in use (node $n): set VC_GALERA_PORT / VC_GALERA_GPORT"
  done
  rm -f "$d/mysqld.sock" "$d/mysqld.pid"
  PATH="$G/bin:$PATH" setsid "$MARIADBD" --defaults-file="$d/my.cnf" "$@" </dev/null >>"$d/mysqld.out" 2>&1 &
  echo $! >"$d/mysqld.pid.start"
}

wait_synced() {  # wait_synced N SECONDS
  local n=$1 end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    synced "$n" && { wait_for 10 test -s "$(pidf "$n")"; return 0; }
    pid_alive "$(nd "$n")/mysqld.pid.start" || { tail -20 "$(nd "$n")/mysqld.err" >&2; die "node $n exited (log $(nd "$n")/mysqld.err)"; }
    sleep 0.1
  done
  tail -20 "$(nd "$n")/mysqld.err" >&2
  die "node $n not Synced after $2 s (log $(nd "$n")/mysqld.err)"
}

stop_node() {  # stop_node N: clean shutdown (writes grastate.dat), SIGKILL only after 60 s
  local n=$1 pf; pf=$(pidf "$n")
  [ -s "$pf" ] || pf="$(nd "$n")/mysqld.pid.start"
  if ! pid_alive "$pf"; then rm -f "$(pidf "$n")" "$(nd "$n")/mysqld.pid.start"; return 0; fi
  local pid; pid=$(cat "$pf")
  alive "$pid" mariadbd || { log "pid $pid of node $n is not a mariadbd: leaving it"; return 0; }
  kill -TERM "$pid"
  local i; for i in $(seq 1200); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then log "node $n (pid $pid) still alive after 60 s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$(pidf "$n")" "$(nd "$n")/mysqld.pid.start"
  log "node $n stopped (pid $pid)"
}

# the template: an initialised datadir with the database and the user, shut down cleanly, so
# that every node starts from the same state (uuid:seqno) and none needs a state transfer
make_template() {
  [ -f "$G/template/.ready" ] && [ -s "$G/galera.env" ] && return 0
  log "make the template datadir $G/template"
  rm -rf "$G/template" "$G/tmpl"; mkdir -p "$G/tmpl"
  mariadb-install-db --no-defaults --datadir="$G/tmpl/data" --user=root \
    --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
    >"$G/tmpl/install.log" 2>&1 || { cat "$G/tmpl/install.log" >&2; die "mariadb-install-db failed"; }
  umask 077
  local pw; pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  umask 022
  # node 1's settings, bootstrapping a new cluster of one
  mkdir -p "$(nd 1)"
  write_cnf 1
  sed "s#$(nd 1)/data#$G/tmpl/data#; s#$(nd 1)/#$G/tmpl/#g" "$(nd 1)/my.cnf" >"$G/tmpl/my.cnf"
  rm -f "$G/tmpl/mysqld.sock"
  setsid "$MARIADBD" --defaults-file="$G/tmpl/my.cnf" --wsrep-new-cluster \
    </dev/null >"$G/tmpl/mysqld.out" 2>&1 &
  local tpid=$!
  wait_for 60 mariadb-admin --no-defaults -S "$G/tmpl/mysqld.sock" ping \
    || { tail -20 "$G/tmpl/mysqld.err" >&2; die "template bootstrap did not start"; }
  mariadb --no-defaults -S "$G/tmpl/mysqld.sock" -u root <<SQL
CREATE DATABASE IF NOT EXISTS vcluster CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'vc'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'vc'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON vcluster.* TO 'vc'@'127.0.0.1';
GRANT ALL PRIVILEGES ON vcluster.* TO 'vc'@'localhost';
-- the tests make throw-away databases named vctest_*
GRANT ALL PRIVILEGES ON \`vctest\\_%\`.* TO 'vc'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`vctest\\_%\`.* TO 'vc'@'localhost';
SQL
  kill -TERM "$tpid"
  local i; for i in $(seq 1200); do alive "$tpid" || break; sleep 0.05; done
  alive "$tpid" && die "template server (pid $tpid) did not shut down"
  rm -f "$G/tmpl/data/gvwstate.dat"
  mv "$G/tmpl/data" "$G/template"; rm -rf "$G/tmpl"
  printf 'VC_GALERA_HOSTS=%s\nVC_GALERA_USER=vc\nVC_GALERA_PASSWORD=%s\nVC_GALERA_NAME=vcluster\n' \
    "$(for n in $NODES; do printf '127.0.0.1:%s,' "$(sql_port "$n")"; done | sed 's/,$//')" "$pw" \
    >"$G/galera.env"
  chmod 600 "$G/galera.env"
  touch "$G/template/.ready"
}

set_bootstrap() {  # set_bootstrap N 0|1
  local f; f="$(nd "$1")/data/grastate.dat"
  [ -f "$f" ] && sed -i "s/^safe_to_bootstrap:.*/safe_to_bootstrap: $2/" "$f"
}

recovered_position() {  # recovered_position N: uuid:seqno after an unclean stop
  local d; d=$(nd "$1")
  "$MARIADBD" --defaults-file="$d/my.cnf" --wsrep-recover --log-error="$d/recover.err" \
    </dev/null >/dev/null 2>&1 || true
  sed -n 's/.*WSREP: Recovered position: *\([^ ]*\).*/\1/p' "$d/recover.err" | tail -1
}

up() {
  command -v "$MARIADBD" >/dev/null && [ -f "$PROVIDER" ] \
    || die "needs mariadb-server-core and galera-4 (tools/stack.sh install)"
  mkdir -p "$G"
  write_sst_script
  local fresh=0
  [ "${1:-}" = --fresh ] && fresh=1
  for n in $NODES; do [ -d "$(nd "$n")/data/mysql" ] || fresh=1; done
  local t0; t0=$(date +%s.%N)
  if [ "$fresh" = 1 ]; then
    for n in $NODES; do pid_alive "$(pidf "$n")" && die "node $n runs: 'down' first for --fresh"; done
    make_template
    for n in $NODES; do
      rm -rf "$(nd "$n")"; mkdir -p "$(nd "$n")"
      cp -a "$G/template" "$(nd "$n")/data"; rm -f "$(nd "$n")/data/.ready"
      set_bootstrap "$n" 0
    done
    set_bootstrap 1 1
  fi
  for n in $NODES; do write_cnf "$n"; done
  local running=""
  for n in $NODES; do pid_alive "$(pidf "$n")" && running="$running $n"; done
  if [ -z "$running" ]; then
    # the whole cluster is down: bootstrap from the node marked safe to (the last one stopped
    # cleanly), else from the most advanced recovered position
    local boot=""
    for n in $NODES; do
      grep -q '^safe_to_bootstrap: 1' "$(nd "$n")/data/grastate.dat" 2>/dev/null && { boot=$n; break; }
    done
    if [ -z "$boot" ]; then
      local best=-2 pos s
      for n in $NODES; do
        pos=$(recovered_position "$n"); s=${pos##*:}
        [ -n "$pos" ] && [ "$s" -gt "$best" ] && { best=$s; boot=$n; }
      done
      [ -n "$boot" ] || die "no node has a recoverable position: up --fresh"
      set_bootstrap "$boot" 1
    fi
    # shellcheck disable=SC2046
    start_node "$boot" --wsrep-new-cluster $(start_args "$boot")
    wait_synced "$boot" 60
  fi
  # shellcheck disable=SC2046
  for n in $NODES; do pid_alive "$(pidf "$n")" || start_node "$n" $(start_args "$n"); done
  for n in $NODES; do wait_synced "$n" 90; done
  log "3 nodes Synced in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s: SQL on 127.0.0.1:$(sql_port 1)-$(sql_port 3) ($G/galera.env)"
}

# start_args N: after an unclean stop (no clean grastate seqno), start at the recovered position
start_args() {
  local f; f="$(nd "$1")/data/grastate.dat"
  if [ -f "$f" ] && grep -q '^seqno: *-1' "$f"; then
    local pos; pos=$(recovered_position "$1")
    [ -n "$pos" ] && echo "--wsrep-start-position=$pos"
  fi
}

status() {
  local n
  for n in $NODES; do
    if pid_alive "$(pidf "$n")"; then
      printf 'node %s: running (pid %s, port %s) %s, cluster size %s\n' "$n" "$(cat "$(pidf "$n")")" \
        "$(sql_port "$n")" "$(wsrep_state "$n" || echo '?')" \
        "$(q "$n" "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'" 2>/dev/null | cut -f2 || echo '?')"
    else
      printf 'node %s: stopped\n' "$n"
    fi
  done
}

node_arg() {
  case "${1:-}" in 1|2|3) echo "$1" ;; *) die "node must be 1, 2 or 3, got '${1:-}'" ;; esac
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) for n in 3 2 1; do stop_node "$n"; done ;;
  status) status ;;
  kill)
    n=$(node_arg "${2:-}")
    pid_alive "$(pidf "$n")" || die "node $n is not running"
    pid=$(cat "$(pidf "$n")"); alive "$pid" mariadbd || die "pid $pid is not a mariadbd"
    kill -KILL "$pid"; for _ in $(seq 200); do alive "$pid" || break; sleep 0.05; done
    rm -f "$(pidf "$n")" "$(nd "$n")/mysqld.pid.start"
    log "node $n killed (pid $pid)" ;;
  start)
    n=$(node_arg "${2:-}")
    write_sst_script
    write_cnf "$n"
    # shellcheck disable=SC2046
    start_node "$n" $(start_args "$n")
    wait_synced "$n" 90 ;;
  env) cat "$G/galera.env" ;;
  *) echo "usage: $0 up [--fresh]|down|status|kill N|start N|env" >&2; exit 2 ;;
esac
