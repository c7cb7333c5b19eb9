#!/bin/bash
# tools/metad.sh start|stop|status — the demo's lease service (sbin/vc_metad.py) in the
# background, pid in $VC_VAR/run/metad.pid, output in $VC_VAR/log/metad.out. On a real frontend
# run it from systemd instead (README, "The lease").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
PIDF=$VAR/run/metad.pid
case "${1:-}" in
  start)
    if pid_alive "$PIDF"; then echo "metad: already running (pid $(cat "$PIDF"))" >&2; exit 0; fi
    mkdir -p "$VAR/run" "$VAR/log"
    : "${VC_CONFIG:?VC_CONFIG must name the configuration}"
    VC_CONFIG=$VC_CONFIG setsid "$ROOT/sbin/vc_metad.py" </dev/null >>"$VAR/log/metad.out" 2>&1 &
    echo $! >"$PIDF"
    echo "metad: the lease service runs (pid $!)" >&2 ;;
  stop)
    if pid_alive "$PIDF"; then
      pid=$(cat "$PIDF")
      kill -TERM "$pid"
      echo "metad: stopped (pid $pid)" >&2
    fi
    rm -f "$PIDF" ;;
  status) if pid_alive "$PIDF"; then echo "metad: running (pid $(cat "$PIDF"))"; else echo "metad: stopped"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
