#!/bin/bash
# tools/ovs.sh — the project's own Open vSwitch, entirely in userspace, for `[network] isolation
# = ovs` on a machine that has none (Debian 12, no openvswitch kernel module needed).
#
#   tools/ovs.sh start [BRIDGE]   install openvswitch-switch (and ethtool, nftables: the ovs
#                                 backend runs them) if missing; if no OVS answers on
#                                 $OVS_RUNDIR/db.sock, start ovsdb-server + ovs-vswitchd (pid files
#                                 under $VC_OVS_DIR, default $VC_VAR/ovs); with BRIDGE, make that
#                                 OVS bridge (userspace datapath) if it does not exist
#   tools/ovs.sh stop             stop the daemons this script started (by its pid files only)
#   tools/ovs.sh status           does an OVS answer, and did VC start it?
#
# The socket is the one libvirt's `ovs-vsctl` uses: /var/run/openvswitch/db.sock (OVS_RUNDIR
# overrides, as for every OVS tool; the tests run one OVS per namespace host with their own).
# An OVS that VC did not start (a real host's, kernel datapath, its bridges and trunk NIC) is used
# as it is: never reconfigured, never stopped; with BRIDGE it must already have that bridge.
# other_config:userspace-tso-enable=true is set before ovs-vswitchd starts: without it the
# userspace datapath passes partial checksums on, and TCP and DHCP fail silently while ping works.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
DIR=${VC_OVS_DIR:-$VAR/ovs}
LOGDIR=${VC_OVS_LOGDIR:-$DIR}
export OVS_RUNDIR=${OVS_RUNDIR:-/var/run/openvswitch}
SOCK=$OVS_RUNDIR/db.sock
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
VSCTL=(ovs-vsctl --db="unix:$SOCK" --timeout=10)

# ours NAME: this script's pid file for NAME names a live NAME process
ours() { [ -s "$DIR/$1.pid" ] && alive "$(cat "$DIR/$1.pid")" "$1"; }
answers() { [ -S "$SOCK" ] && ovsdb-client --timeout=2 list-dbs "unix:$SOCK" 2>/dev/null | grep -qx Open_vSwitch; }

# stop_daemon NAME: only the process this script's pid file names
stop_daemon() {
  local name=$1 pf=$DIR/$1.pid pid i
  [ -s "$pf" ] || return 0
  pid=$(cat "$pf")
  if alive "$pid" "$name"; then
    kill -TERM "$pid"
    for i in $(seq 200); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then log "$name pid $pid still alive after 10 s: SIGKILL"; kill -KILL "$pid" || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pf" "$OVS_RUNDIR/$name.ctl"
}

start() {
  apt_ensure openvswitch-switch ethtool nftables
  command -v ovs-vswitchd >/dev/null || die "ovs-vswitchd is not installed (openvswitch-switch)"
  if ours ovsdb-server && ours ovs-vswitchd && answers; then
    log "Open vSwitch already running, started by VC (pids $(cat "$DIR/ovsdb-server.pid") $(cat "$DIR/ovs-vswitchd.pid"))"
  elif ! ours ovsdb-server && answers; then
    log "using the Open vSwitch already answering on $SOCK, NOT started by VC: left as it is"
    if [ -n "${1:-}" ]; then
      "${VSCTL[@]}" br-exists "$1" || die "bridge $1 does not exist on this host's Open vSwitch (VC does not reconfigure an OVS it did not start)"
    fi
    return 0
  else
    # a half-started or crashed instance of ours: start again from its database
    stop_daemon ovs-vswitchd
    stop_daemon ovsdb-server
    if [ -S "$SOCK" ] || [ -e "$OVS_RUNDIR/ovsdb-server.pid" ]; then
      local p
      p=$(cat "$OVS_RUNDIR/ovsdb-server.pid" 2>/dev/null || true)
      if [ -n "$p" ] && alive "$p" ovsdb-server; then
        die "ovsdb-server pid $p (not VC's) owns $OVS_RUNDIR but does not answer: not touching it"
      fi
      rm -f "$SOCK"   # stale: nobody listens
    fi
    mkdir -p "$DIR" "$LOGDIR" "$OVS_RUNDIR"
    if [ ! -s "$DIR/conf.db" ]; then
      ovsdb-tool create "$DIR/conf.db" "$SCHEMA"
    elif [ "$(ovsdb-tool needs-conversion "$DIR/conf.db" "$SCHEMA")" = yes ]; then
      ovsdb-tool convert "$DIR/conf.db" "$SCHEMA"
    fi
    ovsdb-server "$DIR/conf.db" --remote="punix:$SOCK" \
      --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
      --pidfile="$DIR/ovsdb-server.pid" --unixctl="$OVS_RUNDIR/ovsdb-server.ctl" \
      --log-file="$LOGDIR/ovsdb-server.log" --detach --no-chdir </dev/null >/dev/null 2>&1 \
      || die "ovsdb-server did not start (log: $LOGDIR/ovsdb-server.log)"
    # (the socket first: a client that finds none retries only after a second)
    wait_for 10 test -S "$SOCK" && wait_for 10 answers || die "ovsdb-server does not answer on $SOCK"
    "${VSCTL[@]}" --no-wait init
    # before ovs-vswitchd starts: it reads the setting once
    "${VSCTL[@]}" --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
    ovs-vswitchd "unix:$SOCK" --pidfile="$DIR/ovs-vswitchd.pid" \
      --unixctl="$OVS_RUNDIR/ovs-vswitchd.ctl" --log-file="$LOGDIR/ovs-vswitchd.log" \
      --detach --no-chdir </dev/null >/dev/null 2>&1 \
      || die "ovs-vswitchd did not start (log: $LOGDIR/ovs-vswitchd.log)"
    ours ovs-vswitchd || die "ovs-vswitchd is not running (log: $LOGDIR/ovs-vswitchd.log)"
    log "started Open vSwitch (userspace datapath): ovsdb-server pid $(cat "$DIR/ovsdb-server.pid"), ovs-vswitchd pid $(cat "$DIR/ovs-vswitchd.pid"), socket $SOCK"
  fi
  if [ -n "${1:-}" ]; then
    # waits (no --no-wait) until ovs-vswitchd has made the bridge
    "${VSCTL[@]}" --may-exist add-br "$1" -- set bridge "$1" datapath_type=netdev
    log "bridge $1 ready"
  fi
}

stop() {
  if ! ours ovsdb-server && ! ours ovs-vswitchd; then
    log "Open vSwitch: not started by VC, left alone"
    rm -f "$DIR/ovsdb-server.pid" "$DIR/ovs-vswitchd.pid"
    return 0
  fi
  stop_daemon ovs-vswitchd
  stop_daemon ovsdb-server
  rm -f "$SOCK"
}

status() {
  if answers; then echo "ovs: answering on $SOCK"; else echo "ovs: NOT answering on $SOCK"; fi
  local p
  for p in ovsdb-server ovs-vswitchd; do
    if ours "$p"; then echo "$p: started by VC (pid $(cat "$DIR/$p.pid"))"
    else echo "$p: not started by VC"; fi
  done
  if answers; then echo "bridges: $("${VSCTL[@]}" list-br | tr '\n' ' ')"; fi
}

case "${1:-}" in
  start) shift; start "${1:-}" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [BRIDGE]|stop|status" >&2; exit 2 ;;
esac
