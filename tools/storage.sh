#!/bin/bash
# tools/storage.sh — the demo's and the tests' iSCSI target host, on this machine, loopback only:
# a private sshd (the frontend reaches the target host over SSH, as it would a real one) and tgtd
# (the userspace iSCSI target the volumes are served from).
#
#   tools/storage.sh start [sshd|tgtd]   install missing apt packages; start sshd on
#                          127.0.0.1:$VC_SSH_PORT (its own host key, root by public key only, keys
#                          from $VC_VAR/storage/ssh/authorized_keys) and tgtd with its portal on
#                          127.0.0.1:$VC_ISCSI_PORT; print the host key fingerprint; write
#                          $VC_VAR/storage/storage.env
#   tools/storage.sh stop [sshd|tgtd]    stop what start started, by its pid files only (tgtd: its
#                          targets are deleted first, then 'tgtadm --op delete --mode system')
#   tools/storage.sh status
#   tools/storage.sh authorize PUBKEY_FILE   append that public key to the sshd's authorized_keys
#                          (once); e.g. the frontend's key, <state_dir>/ssh/id_ed25519.pub
#   tools/storage.sh install             only the apt packages
#
# Environment: VC_VAR (default <checkout>/var), VC_SSH_PORT (2222), VC_ISCSI_PORT (3260),
# VC_SSH_LEAN_SHELL (1: sshd sets SHLVL=1 so that bash skips root's ~/.bashrc; 0: it does not),
# VC_TGT_CONTROL (0): tgtd's control socket is /var/run/tgtd/socket.N, one per machine for N. If
# a tgtd that VC did not start already answers on it, it is used as it is (and never stopped);
# the tests pick a free N so that they always get a tgtd of their own.
# Re-runnable: what already runs is kept.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/lib.sh
. "$ROOT/tools/lib.sh"
VAR=${VC_VAR:-$ROOT/var}
D=$VAR/storage
S=$D/ssh
T=$D/tgt
SSH_PORT=${VC_SSH_PORT:-2222}
ISCSI_PORT=${VC_ISCSI_PORT:-3260}
# default: the control socket of the tgtd started here, else 0
CTL=${VC_TGT_CONTROL:-$(cat "$T/control" 2>/dev/null || echo 0)}
LEAN=${VC_SSH_LEAN_SHELL:-1}

APT_PKGS="openssh-server openssh-client tgt libiscsi-bin qemu-block-extra qemu-utils"

ours() { [ -s "$2" ] && alive "$(cat "$2")" "$1"; }   # ours COMM PIDFILE
tgtadm_() { tgtadm -C "$CTL" "$@"; }
tgt_answers() { tgtadm_ --mode sys --op show >/dev/null 2>&1; }
fingerprint() { ssh-keygen -l -E sha256 -f "$S/host_ed25519.pub" | awk '{print $2}'; }

install_packages() { apt_ensure $APT_PKGS; }

start_sshd() {
  mkdir -p "$S"
  chmod 700 "$S"
  [ -f "$S/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C vc-storage-host -f "$S/host_ed25519"
  touch "$S/authorized_keys"
  chmod 600 "$S/authorized_keys"
  cat >"$S/sshd_config" <<EOF
# VC's demo/test iSCSI target host (tools/storage.sh): loopback only, root by public key only,
# every file under $S. Not the system sshd.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $S/host_ed25519
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the key file may live under /tmp (mode 1777), which StrictModes would refuse
StrictModes no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTTY no
PrintMotd no
EOF
  if [ "$LEAN" = 1 ]; then
    # bash sources ~/.bashrc for every command sshd runs unless SHLVL is already >= 1 (it then
    # counts itself as a nested shell). root's ~/.bashrc here runs 'pyenv init': ~110 ms per
    # exec. A real target host should keep root's ~/.bashrc lean, or set this too.
    printf '%s\n' "# lean remote shells: bash skips ~/.bashrc (VC_SSH_LEAN_SHELL=0 to measure without)" \
      "SetEnv SHLVL=1" >>"$S/sshd_config"
  fi
  if ours sshd "$S/sshd.pid"; then
    log "sshd already running (pid $(cat "$S/sshd.pid")), 127.0.0.1:$SSH_PORT"
  else
    rm -f "$S/sshd.pid"
    port_open "$SSH_PORT" && die "127.0.0.1:$SSH_PORT is already taken by another program (set VC_SSH_PORT)"
    mkdir -p /run/sshd && chmod 755 /run/sshd   # privilege separation dir; no systemd-tmpfiles here
    /usr/sbin/sshd -t -f "$S/sshd_config" || die "sshd -t rejected $S/sshd_config"
    # an absolute path is required; it daemonizes and writes the pid file
    /usr/sbin/sshd -f "$S/sshd_config" -E "$S/sshd.log" || die "sshd did not start (see $S/sshd.log)"
    wait_for 10 test -s "$S/sshd.pid" || die "sshd wrote no pid file (see $S/sshd.log)"
    wait_for 10 port_open "$SSH_PORT" || die "sshd does not listen on 127.0.0.1:$SSH_PORT (see $S/sshd.log)"
    log "started sshd (pid $(cat "$S/sshd.pid")) on 127.0.0.1:$SSH_PORT"
  fi
}

start_tgtd() {
  mkdir -p "$T"
  if ours tgtd "$T/tgtd.pid"; then
    log "tgtd already running (pid $(cat "$T/tgtd.pid")), portal 127.0.0.1:$ISCSI_PORT, control socket $CTL"
    echo 1 >"$T/ours"
    return 0
  fi
  rm -f "$T/tgtd.pid"
  if tgt_answers; then
    log "using the tgtd already answering on /var/run/tgtd/socket.$CTL, NOT started by VC: it is never stopped by VC and its portal may not be 127.0.0.1:$ISCSI_PORT"
    echo 0 >"$T/ours"
    return 0
  fi
  port_open "$ISCSI_PORT" && die "127.0.0.1:$ISCSI_PORT is already taken by another program (set VC_ISCSI_PORT)"
  # daemonizes and writes the pid file (with -f it would write none). The warnings about
  # RDMA/iser, oom_score_adj and nr_open in the log are harmless.
  /usr/sbin/tgtd -C "$CTL" --iscsi portal=127.0.0.1:"$ISCSI_PORT" -p "$T/tgtd.pid" \
    </dev/null >>"$T/tgtd.log" 2>&1 || die "tgtd did not start (see $T/tgtd.log)"
  wait_for 10 tgt_answers || die "tgtd does not answer on control socket $CTL (see $T/tgtd.log)"
  wait_for 10 test -s "$T/tgtd.pid" || die "tgtd wrote no pid file $T/tgtd.pid"
  wait_for 10 port_open "$ISCSI_PORT" || die "tgtd does not listen on 127.0.0.1:$ISCSI_PORT (see $T/tgtd.log)"
  echo 1 >"$T/ours"
  echo "$CTL" >"$T/control"
  log "started tgtd (pid $(cat "$T/tgtd.pid")), portal 127.0.0.1:$ISCSI_PORT, control socket $CTL"
}

write_env() {
  mkdir -p "$D/backing"
  cat >"$D/storage.env" <<EOF
# written by tools/storage.sh start: where the demo/test iSCSI target host is
VC_STORAGE_ADDRESS=127.0.0.1
VC_STORAGE_SSH_PORT=$SSH_PORT
VC_STORAGE_SSH_USER=root
VC_STORAGE_ISCSI_PORT=$ISCSI_PORT
VC_STORAGE_TGT_CONTROL=$CTL
VC_STORAGE_TGTD_OURS=$(cat "$T/ours" 2>/dev/null || echo 0)
VC_STORAGE_FINGERPRINT=$(fingerprint)
VC_STORAGE_AUTHORIZED_KEYS=$S/authorized_keys
VC_STORAGE_BACKING_DIR=$D/backing
EOF
}

start() {
  local what=${1:-all}
  install_packages
  mkdir -p "$D"
  case $what in
    all) start_sshd; start_tgtd ;;
    sshd) start_sshd ;;
    tgtd) start_tgtd ;;
    *) die "start: unknown component $what (sshd or tgtd)" ;;
  esac
  write_env
  log "target host 127.0.0.1:$SSH_PORT host key $(fingerprint) (ED25519)"
  echo "$(fingerprint)"
}

# stop_pid NAME PIDFILE [COMMAND asking it to stop]: SIGTERM if that fails, SIGKILL after 20 s
stop_pid() {
  local name=$1 pf=$2 pid i; shift 2
  if [ ! -s "$pf" ]; then log "$name: not started by VC here (no $pf), left alone"; return 0; fi
  pid=$(cat "$pf")
  if ! alive "$pid" "$name"; then log "$name: pid $pid is not running; pid file removed"; rm -f "$pf"; return 0; fi
  if [ $# -gt 0 ]; then "$@" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  else kill -TERM "$pid" 2>/dev/null || true; fi
  for i in $(seq 400); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then log "$name pid $pid still alive after 20 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pf"
  log "stopped $name (pid $pid)"
}

tgtd_shutdown() {
  # tgtd leaves on 'delete --mode system' only once no target is left: delete them all first
  local tid
  for tid in $(tgtadm_ --lld iscsi --mode target --op show 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
    tgtadm_ --lld iscsi --mode target --op delete --force --tid "$tid" || true
  done
  tgtadm_ --op delete --mode system
}

tgtd_stop() {
  # the control socket tgtd was started with (recorded at start), whatever VC_TGT_CONTROL says now
  [ -s "$T/control" ] && CTL=$(cat "$T/control")
  stop_pid tgtd "$T/tgtd.pid" tgtd_shutdown
  # the tgtd VC started leaves its socket files behind; once nobody answers, they go too
  if [ -s "$T/control" ] && ! tgt_answers; then
    rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
  fi
  rm -f "$T/control"
}

stop() {
  case ${1:-all} in
    all) stop_pid sshd "$S/sshd.pid"; tgtd_stop ;;
    sshd) stop_pid sshd "$S/sshd.pid" ;;
    tgtd) tgtd_stop ;;
    *) die "stop: unknown component $1 (sshd or tgtd)" ;;
  esac
}

status() {
  if ours sshd "$S/sshd.pid"; then echo "sshd: running (pid $(cat "$S/sshd.pid")) on 127.0.0.1:$SSH_PORT, host key $(fingerprint)"
  else echo "sshd: not running"; fi
  if ours tgtd "$T/tgtd.pid"; then echo "tgtd: running (pid $(cat "$T/tgtd.pid")), portal 127.0.0.1:$ISCSI_PORT, control socket $CTL"
  elif tgt_answers; then echo "tgtd: a tgtd NOT started by VC answers on control socket $CTL"
  else echo "tgtd: not running"; fi
  if tgt_answers; then
    echo "targets: $(tgtadm_ --lld iscsi --mode target --op show | grep -c '^Target ' || true)"
  fi
}

authorize() {
  local f=${1:-}
  [ -n "$f" ] && [ -s "$f" ] || die "authorize: give a public key file (e.g. <state_dir>/ssh/id_ed25519.pub)"
  local key; key=$(head -n1 "$f")
  case $key in ssh-*|ecdsa-*) ;; *) die "authorize: $f does not hold an OpenSSH public key" ;; esac
  mkdir -p "$S"; touch "$S/authorized_keys"; chmod 600 "$S/authorized_keys"
  if grep -qxF "$key" "$S/authorized_keys"; then log "key already authorized ($f)"
  else echo "$key" >>"$S/authorized_keys"; log "authorized $f (root, $S/authorized_keys)"; fi
}

case "${1:-}" in
  start) start "${2:-all}" ;;
  stop) stop "${2:-all}" ;;
  status) status ;;
  authorize) authorize "${2:-}" ;;
  install) install_packages ;;
  *) echo "usage: $0 start [sshd|tgtd] | stop [sshd|tgtd] | status | authorize PUBKEY_FILE | install" >&2; exit 2 ;;
esac
