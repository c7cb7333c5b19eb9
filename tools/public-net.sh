#!/bin/bash
# tools/public-net.sh start|stop|status — the demo's public network: the libvirt network the
# gateways' second NIC is on ([network] public_network = vc-public), with this host's own
# address 198.51.100.1/24 on its bridge so the frontend reaches each gateway at its public
# address. No <forward>: nothing a guest sends leaves this machine (no NAT, no routing out).
# A real frontend names its existing public network or bridge instead and never runs this.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
NET=${VC_PUBLIC_NET:-vc-public}
BRIDGE=${VC_PUBLIC_BRIDGE:-vcpub0}
ADDR=${VC_PUBLIC_ADDR:-198.51.100.1}
VIRSH=(virsh -q -c qemu:///system)
XML="<network><name>$NET</name>
<bridge name='$BRIDGE' stp='off'/><ip address='$ADDR' prefix='24'/></network>"
# libvirt keeps no title on a network: a marker file says this script defined it
MARK=${VC_VAR:-$ROOT/var}/run/public-net.$NET

ours() { [ -f "$MARK" ]; }

case "${1:-}" in
  start)
    if ! "${VIRSH[@]}" net-info "$NET" >/dev/null 2>&1; then
      f=$(mktemp); echo "$XML" >"$f"
      "${VIRSH[@]}" net-define "$f" >/dev/null; rm -f "$f"
      mkdir -p "$(dirname "$MARK")"; : >"$MARK"
      log "defined libvirt network $NET ($BRIDGE, $ADDR/24, isolated)"
    fi
    # (read the whole answer first: grep -q under pipefail would fail the pipe with SIGPIPE)
    info=$("${VIRSH[@]}" net-info "$NET")
    grep -q '^Active: *yes' <<<"$info" || "${VIRSH[@]}" net-start "$NET" >/dev/null
    ;;
  stop)
    # only the network this script made (a real site's network of that name is left alone)
    if ours; then
      "${VIRSH[@]}" net-destroy "$NET" >/dev/null 2>&1 || true
      "${VIRSH[@]}" net-undefine "$NET" >/dev/null 2>&1 || true
      rm -f "$MARK"
      log "removed libvirt network $NET"
    fi
    ;;
  status)
    if grep -q '^Active: *yes' <<<"$("${VIRSH[@]}" net-info "$NET" 2>/dev/null)"; then
      log "public network $NET up ($BRIDGE $ADDR/24)"
    else
      log "public network $NET not running"
    fi
    ;;
  *) die "usage: $0 start|stop|status" ;;
esac
