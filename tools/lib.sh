# tools/lib.sh — shared by the service scripts (sourced, not run).

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
