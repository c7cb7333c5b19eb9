#!/bin/bash
# tools/ticker.sh start|stop|status [INSTANCE] — the demo's stand-in for cron: runs
# sbin/vc_cron.py (with $VC_CONFIG) at the top of every minute (cron's own schedule), in the
# background, pid in $VC_VAR/run/ticker.pid. INSTANCE (make demo FRONTENDS=2: "2" for the second
# frontend's ticks) keeps its own pid file ticker-INSTANCE.pid and log cron-INSTANCE.out.
# On a real frontend use `vc_ctl.py cron install` (/etc/cron.d/vc) instead.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
INST=${2:-}
[[ -z "$INST" || "$INST" =~ ^[A-Za-z0-9_-]{1,16}$ ]] || { echo "ticker: bad instance '$INST'" >&2; exit 2; }
PIDF=$VAR/run/ticker${INST:+-$INST}.pid
OUTF=$VAR/log/cron${INST:+-$INST}.out
case "${1:-}" in
  start)
    if pid_alive "$PIDF"; then echo "ticker: already running (pid $(cat "$PIDF"))" >&2; exit 0; fi
    mkdir -p "$VAR/run" "$VAR/log"
    : "${VC_CONFIG:?VC_CONFIG must name the configuration}"
    setsid bash -c '
      while :; do
        sleep $(( 60 - 10#$(date +%S) ))
        VC_CONFIG='"$VC_CONFIG"' '"$ROOT"'/sbin/vc_cron.py >>'"$OUTF"' 2>&1 || true
      done' </dev/null >/dev/null 2>&1 &
    echo $! >"$PIDF"
    echo "ticker${INST:+ $INST}: running vc_cron.py every minute with $VC_CONFIG (pid $!)" >&2 ;;
  stop)
    if pid_alive "$PIDF"; then
      pid=$(cat "$PIDF")
      # the loop is the leader of its own session: end it and the tick it may be running
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      echo "ticker: stopped (pid $pid)" >&2
    fi
    rm -f "$PIDF" ;;
  status) if pid_alive "$PIDF"; then echo "ticker: running (pid $(cat "$PIDF"))"; else echo "ticker: stopped"; fi ;;
  *) echo "usage: $0 start|stop|status [INSTANCE]" >&2; exit 2 ;;
esac
