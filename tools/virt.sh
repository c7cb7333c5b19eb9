#!/bin/bash
# tools/virt.sh — the real libvirt + QEMU stack for VC (Debian 12, root, no systemd).
#
#   tools/virt.sh start    install missing apt packages; if no libvirtd answers on qemu:///system,
#                          configure libvirt and start virtlogd + libvirtd (recorded as started by VC
#                          in $VC_VAR/run/{libvirtd,virtlogd}.pid); warm QEMU's capability cache
#   tools/virt.sh stop     stop the daemons VC started (by those pid files only; never by name)
#   tools/virt.sh status   does libvirtd answer, and did VC start it?
#
# A libvirtd that VC did not start is used as it is: its configuration is never rewritten and it
# is never stopped. Guests must be <domain type='qemu'> (TCG) here: /dev/kvm on these machines is
# KVM-PVM, which only runs PVM-patched guest kernels.
# Everything VC keeps lives under $VC_VAR (default: <checkout>/var). Re-runnable.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
RUN=$VAR/run
URI=qemu:///system

T0=$(date +%s.%N)
el() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# ours NAME: VC's marker for daemon NAME exists and names a live NAME process
ours() { [ -s "$RUN/$1.pid" ] && alive "$(cat "$RUN/$1.pid")" "$1"; }
# sys_pid NAME: the live pid in /run/NAME.pid (the daemon's own pid file), or fail
sys_pid() { local p; p=$(cat "/run/$1.pid" 2>/dev/null) && [ -n "$p" ] && alive "$p" "$1" && echo "$p"; }
answers() { timeout 20 virsh -q -c "$URI" uri >/dev/null 2>&1; }
wait_answer() {  # wait_answer SECONDS
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do answers && return 0; sleep 0.2; done
  answers
}

# What libvirt-daemon-system would do (not installed: it pulls systemd, polkit, logrotate).
APT_PKGS="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          dnsmasq-base iptables busybox-static"
QCONF='# VC (tools/virt.sh): no AppArmor/SELinux in this kernel, no systemd/machined; QEMU runs as root
user = "root"
group = "root"
security_driver = "none"
# keep QEMU in the caller'"'"'s cgroup (cgroup v1 hybrid, no systemd to delegate to)
cgroup_controllers = [ ]
# no per-VM mount namespace: needed in chroots/containers ("Failed disable mount propagation")
namespaces = [ ]'

install_packages() { apt_ensure $APT_PKGS; }

configure() {
  getent group kvm >/dev/null || groupadd -r kvm
  # The QEMU driver resolves its compiled-in default user 'libvirt-qemu' BEFORE reading
  # qemu.conf: without it libvirtd fails "Failed to parse user 'libvirt-qemu'" even with user=root.
  getent passwd libvirt-qemu >/dev/null \
    || useradd -r -M -d /var/lib/libvirt -s /usr/sbin/nologin -U -G kvm libvirt-qemu
  # /var/log/libvirt/qemu missing -> "libvirtd -d" exits 1 (cannot open libvirtd.log)
  mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq \
           /var/cache/libvirt/qemu /run/libvirt
  if [ "$(cat /etc/libvirt/qemu.conf 2>/dev/null)" != "$QCONF" ]; then
    if [ -f /etc/libvirt/qemu.conf ] && [ ! -e /etc/libvirt/qemu.conf.orig ]; then
      cp -p /etc/libvirt/qemu.conf /etc/libvirt/qemu.conf.orig
      log "kept the previous /etc/libvirt/qemu.conf as qemu.conf.orig"
    fi
    mkdir -p /etc/libvirt
    printf '%s\n' "$QCONF" > /etc/libvirt/qemu.conf
    log "wrote /etc/libvirt/qemu.conf"
  fi
}

# start_daemon NAME: run "NAME -d" and copy its pid from /run/NAME.pid into VC's marker
start_daemon() {
  local name=$1 pid="" i
  "$name" -d || die "$name -d failed (log: /var/log/libvirt/)"
  # the parent returns once the child has taken its pid file; still, allow it a moment
  for i in $(seq 100); do pid=$(sys_pid "$name") && break; sleep 0.05; done
  [ -n "$pid" ] || die "$name did not write a live pid into /run/$name.pid"
  echo "$pid" > "$RUN/$name.pid"
  log "started $name (pid $pid), marker $RUN/$name.pid"
}

start() {
  install_packages
  log "packages ready after $(el)s"
  mkdir -p "$RUN"
  local p q
  for p in libvirtd virtlogd; do  # markers of daemons that are gone
    if [ -e "$RUN/$p.pid" ] && ! ours "$p"; then rm -f "$RUN/$p.pid"; log "removed stale marker $p.pid"; fi
  done

  if ! answers && p=$(sys_pid libvirtd); then
    # a libvirtd process exists but does not answer yet (starting up?): give it time, never touch it
    log "libvirtd pid $p exists but does not answer yet; waiting up to 60 s"
    wait_answer 60 || die "libvirtd pid $p does not answer on $URI (not touching it; see /var/log/libvirt/libvirtd.log)"
  fi

  if answers; then
    if ours libvirtd; then
      log "libvirtd already running, started by VC (pid $(cat "$RUN/libvirtd.pid"))"
      [ "$(cat /etc/libvirt/qemu.conf 2>/dev/null)" = "$QCONF" ] \
        || log "WARNING: /etc/libvirt/qemu.conf differs from VC's; 'tools/virt.sh stop; tools/virt.sh start' rewrites it"
    else
      log "using the libvirtd already answering on $URI, NOT started by VC: its configuration is left untouched"
    fi
  else
    configure
    if p=$(sys_pid virtlogd) && [ -S /run/libvirt/virtlogd-sock ]; then
      if ours virtlogd; then log "virtlogd already running, started by VC (pid $p)"
      else log "using the running virtlogd (pid $p), NOT started by VC"; fi
    else
      start_daemon virtlogd   # else domain start: "Failed to connect socket to '/run/libvirt/virtlogd-sock'"
    fi
    start_daemon libvirtd     # log: /var/log/libvirt/libvirtd.log
    wait_answer 60 || die "libvirtd does not answer on $URI after 60 s; see /var/log/libvirt/libvirtd.log"
  fi
  log "libvirtd answers after $(el)s"
  # the first qemu:///system use probes QEMU's capabilities (1-8 s once, cached afterwards)
  virsh -q -c "$URI" domcapabilities --virttype qemu >/dev/null \
    || die "virsh domcapabilities --virttype qemu failed"
  log "ready after $(el)s (capabilities cached)"
}

# stop_daemon NAME: only if VC's marker names a live NAME process
stop_daemon() {
  local name=$1 pf=$RUN/$1.pid pid i
  if ! [ -s "$pf" ]; then log "$name: not started by VC, left alone"; return 0; fi
  pid=$(cat "$pf")
  if ! alive "$pid" "$name"; then log "$name: marker pid $pid is not running; marker removed"; rm -f "$pf"; return 0; fi
  kill -TERM "$pid"
  for i in $(seq 400); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then log "$name pid $pid still alive after 20 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pf"
  log "stopped $name (pid $pid)"
}

stop() {
  if ours libvirtd; then
    local doms
    doms=$(timeout 20 virsh -q -c "$URI" list --name 2>/dev/null | grep . | tr '\n' ' ' || true)
    # running guests and libvirt's dnsmasq survive a libvirtd restart
    [ -z "$doms" ] || log "note: running domains keep running without libvirtd: $doms"
  fi
  stop_daemon libvirtd
  stop_daemon virtlogd
}

status() {
  local p q
  if answers; then echo "libvirtd: answering on $URI"; else echo "libvirtd: NOT answering on $URI"; fi
  for p in libvirtd virtlogd; do
    if ours "$p"; then echo "$p: started by VC (pid $(cat "$RUN/$p.pid"))"
    elif q=$(sys_pid "$p"); then echo "$p: running (pid $q), NOT started by VC"
    else echo "$p: not running"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
