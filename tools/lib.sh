# tools/lib.sh — shared by the tools/*.sh scripts (sourced, not run): messages, process and port
# checks, waiting, apt packages. Defined once here; a script defines only its own helpers.

# The name messages start with: the script's ("stack" for tools/stack.sh); a script may set
# VC_TOOL after sourcing this to say another.
VC_TOOL=$(basename "$0" .sh)
log() { echo "$VC_TOOL: $*" >&2; }
die() { echo "$VC_TOOL: ERROR: $*" >&2; exit 1; }

# alive PID [COMM]: the process exists, is not a zombie and (if given) has that command name
alive() {
  local s c
  s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s:0:1}" != Z ] || return 1
  [ -z "${2:-}" ] && return 0
  c=$(cat "/proc/$1/comm" 2>/dev/null) && [ "$c" = "$2" ]
}
# pid_alive PIDFILE: the pid file is not empty and names a live process
pid_alive() { [ -s "$1" ] && alive "$(cat "$1")"; }
# wait_for SECONDS CMD...: run CMD (quietly) every 50 ms until it succeeds; the last try, after
# SECONDS, shows its output (why it still fails)
wait_for() {
  local n=$(( $1 * 20 )) i; shift
  for i in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  "$@" || return 1
}
# port_open PORT: something accepts connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# apt_ensure PKG... — install the packages that are missing (only those: naming an installed
# package would upgrade it). `apt-get update` runs only when there are no package lists yet, or
# once more when an install fails on stale lists. Services are not started by the packages here
# (no systemd; policy-rc.d refuses): VC runs its own daemons.
apt_ensure() {
  local missing="" p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  echo "$(basename "$0" .sh): apt-get install$missing" >&2
  if ! ls /var/lib/apt/lists/ 2>/dev/null | grep -q _Packages; then
    apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  fi
  # shellcheck disable=SC2086
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >&2 \
    || { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 &&
         apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >&2; }
}
