#!/bin/bash
# tools/host.sh up|down|status|kill|uri NAME — a second physical libvirt host on this machine.
#
#   up      a holder process in its own mount + network namespace (private /run,
#           /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /etc/libvirt with only
#           qemu.conf/libvirt.conf/libvirt-admin.conf copied, /sys remounted), a veth underlay
#           NAME-ul 10.230.N.1 (this side) <-> eth0 10.230.N.2 (inside), and inside it
#           virtlogd, libvirtd and an sshd on 10.230.N.2:22 (root by key only). The frontend key
#           ($VC_HOST_KEY, default $VC_VAR/state/ssh/id_ed25519, made if missing) is authorized;
#           the sshd's host key is added to root's ~/.ssh/known_hosts (the trust qemu+ssh:// and
#           VC's host executor use) and removed again by down. Re-running up on a living
#           holder starts whatever daemon is missing (a host "coming back" after kill).
#   kill    simulate a host crash: SIGKILL every process in its namespace except the holder
#           (libvirtd, virtlogd, sshd, QEMU); state on disk stays; `up` brings it back.
#   down    kill every process in its namespace by pid, remove the veth, the known_hosts entry
#           and var/hosts/NAME: nothing is left.
#   status  up/down, pids, addresses.   uri  the URI for [host:NAME] uri = ...
# Environment: VC_HOST_NET=N picks 10.230.N.0/24 (default from a hash of NAME, 20..219).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VC_TOOL=host
CMD=${1:-}; NAME=${2:-}
[ -n "$NAME" ] || { echo "usage: $0 up|down|status|kill|uri NAME" >&2; exit 2; }
[[ "$NAME" =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] || die "host name must be [a-z0-9-], at most 12 chars"
VAR=${VC_VAR:-$ROOT/var}
D=$VAR/hosts/$NAME
N=${VC_HOST_NET:-$(( $(printf %s "$NAME" | cksum | cut -d' ' -f1) % 200 + 20 ))}
UL=$NAME-ul; HOSTIP=10.230.$N.1; NSIP=10.230.$N.2
KEY=${VC_HOST_KEY:-$VAR/state/ssh/id_ed25519}
KNOWN=/root/.ssh/known_hosts
SOCK=$D/run/libvirt/libvirt-sock

holder() { cat "$D/holder.pid" 2>/dev/null; }
up_now() { local h; h=$(holder) && [ -n "$h" ] && alive "$h" sleep; }
inns() { nsenter -t "$(holder)" -m -n -- "$@"; }
# pids of every process in the namespace (not the holder)
ns_pids() {
  local ns p h; h=$(holder); ns=$(readlink "/proc/$h/ns/net" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do p=${p#/proc/}
    [ "$p" = "$h" ] && continue
    [ "$(readlink "/proc/$p/ns/net" 2>/dev/null)" = "$ns" ] && echo "$p"
  done
}
ns_running() { # ns_running COMM: a process of that name runs in the namespace
  local p; for p in $(ns_pids); do [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && return 0; done; return 1
}
uri() { echo "qemu+ssh://root@$NSIP/system?keyfile=$KEY&no_tty=1"; }

daemons() {
  ns_running virtlogd || inns virtlogd -d </dev/null >/dev/null 2>&1
  if ! ns_running libvirtd; then
    rm -f "$D/run/libvirtd.pid"
    inns libvirtd -d </dev/null >/dev/null 2>&1
  fi
  wait_for 10 test -S "$SOCK" || die "libvirtd in $NAME did not create $SOCK"
  if ! ns_running sshd; then
    rm -f "$D/run/sshd-vc.pid"
    inns /usr/sbin/sshd -f "$D/ssh/sshd_config" -E "$D/ssh/sshd.log" </dev/null >/dev/null 2>&1 \
      || die "sshd in $NAME did not start (see $D/ssh/sshd.log)"
  fi
  wait_for 10 bash -c "exec 3<>/dev/tcp/$NSIP/22" || die "sshd in $NAME does not answer on $NSIP:22"
}

up() {
  if up_now; then daemons; log "$NAME up (holder $(holder)), daemons checked"; uri; return 0; fi
  command -v libvirtd >/dev/null || die "libvirtd is not installed"
  ip link show "$UL" >/dev/null 2>&1 && die "$UL exists but $NAME is not up: run down first"
  rm -rf "$D"; mkdir -p "$D"/{run/lock,run/sshd,lib,log,cache,etc,ssh}
  chmod 700 "$D"; chmod 755 "$D/run/sshd"
  cp /etc/libvirt/qemu.conf /etc/libvirt/libvirt.conf /etc/libvirt/libvirt-admin.conf "$D/etc/" 2>/dev/null
  unshare --mount --net --propagation private --fork -- bash -c "
    set -e
    mount --bind '$D/run' /run
    mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    mount --bind '$D/lib' /var/lib/libvirt
    mount --bind '$D/log' /var/log/libvirt
    mount --bind '$D/cache' /var/cache/libvirt
    mount --bind '$D/etc' /etc/libvirt
    mount -t sysfs sysfs /sys
    exec sleep infinity" </dev/null >/dev/null 2>&1 &
  local u=$! hp=""
  for _ in $(seq 1 50); do hp=$(pgrep -P "$u" -x sleep || true); [ -n "$hp" ] && break; sleep 0.1; done
  [ -n "$hp" ] || die "the namespace holder did not start"
  echo "$hp" >"$D/holder.pid"; echo "$u" >"$D/unshare.pid"
  [ "$(readlink "/proc/$hp/ns/net")" != "$(readlink /proc/self/ns/net)" ] || die "no new netns"
  ip link add "$UL" type veth peer name eth0 netns "$hp" || die "cannot make the veth $UL"
  ip addr add "$HOSTIP/24" dev "$UL"; ip link set "$UL" up
  inns ip link set lo up; inns ip addr add "$NSIP/24" dev eth0; inns ip link set eth0 up
  inns ip route add default via "$HOSTIP"
  # ssh: its own host key; the frontend key authorized
  [ -f "$KEY" ] || { mkdir -p "$(dirname "$KEY")"; ssh-keygen -q -t ed25519 -N '' -C vc-frontend -f "$KEY"; }
  ssh-keygen -q -t ed25519 -N '' -f "$D/ssh/host_key"
  cp "$KEY.pub" "$D/ssh/authorized_keys"
  cat >"$D/ssh/sshd_config" <<EOF
ListenAddress $NSIP
Port 22
HostKey $D/ssh/host_key
PidFile /run/sshd-vc.pid
AuthorizedKeysFile $D/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
EOF
  mkdir -p -m 700 /root/.ssh
  ssh-keygen -q -R "$NSIP" -f "$KNOWN" >/dev/null 2>&1; rm -f "$KNOWN.old"
  echo "$NSIP $(cut -d' ' -f1,2 "$D/ssh/host_key.pub")" >>"$KNOWN"
  daemons
  log "$NAME up: holder $hp, underlay $UL $HOSTIP <-> $NSIP"
  uri
}

kill_all() {
  local p sig=$1 c
  for p in $(ns_pids); do
    c=$(tr '\0\n' '  ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-60)
    kill "-$sig" "$p" 2>/dev/null && log "kill -$sig $p $c"
  done
}

down() {
  if up_now; then
    kill_all TERM
    for _ in $(seq 1 30); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
    kill_all KILL
    kill "$(holder)" 2>/dev/null
    [ -s "$D/unshare.pid" ] && kill "$(cat "$D/unshare.pid")" 2>/dev/null
  fi
  ip link del "$UL" 2>/dev/null
  [ -f "$KNOWN" ] && { ssh-keygen -q -R "$NSIP" -f "$KNOWN" >/dev/null 2>&1; rm -f "$KNOWN.old"; }
  rm -rf "$D"
  log "$NAME down"
}

status() {
  if up_now; then
    echo "$NAME up: holder $(holder), underlay $UL $HOSTIP <-> $NSIP, processes: $(for p in $(ns_pids); do cat "/proc/$p/comm"; done | sort | tr '\n' ' ')"
    echo "uri = $(uri)"
  else
    echo "$NAME down"; return 3
  fi
}

case "$CMD" in
  up) up ;;
  down) down ;;
  status) status ;;
  kill) up_now || die "$NAME is not up"; kill_all KILL; log "$NAME crashed (holder $(holder) kept)" ;;
  uri) uri ;;
  *) echo "usage: $0 up|down|status|kill|uri NAME" >&2; exit 2 ;;
esac
